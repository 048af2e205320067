"""Web console accounts and sessions: users (admin | viewer), scrypt password hashes,
server-side sessions with a CSRF token, and a limit on failed logins.

Passwords are hashed with ``hashlib.scrypt`` (RFC 7914; n=2**14, r=8, p=1, 16-byte salt,
64-byte key; about 16 MiB and a few tens of ms per check) and stored as
``scrypt$n$r$p$<salt b64>$<key b64>`` so the cost can be raised later without breaking old
hashes. A session is a random secret in an HttpOnly cookie; the database keeps only its sha256,
the user, a per-session CSRF token and the expiry. Failed logins are counted per user name and
per client address in the database (``LoginLimiter``), so several server processes share one
limit.

Every change is an audit event whose actor is ``console:<username>``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import anyio
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.db.models import ConsoleLoginFailureRow, ConsoleSessionRow, ConsoleUserRow
from stockade.errors import AuthError, Conflict, InvalidRequest, NotFound, StockadeError
from stockade.services import repo
from stockade.services.audit import AuditLog

ROLES = ("admin", "viewer")
SESSION_TTL = 8 * 3600  # seconds; `console_session_ttl` in stockade.toml overrides
MIN_PASSWORD = 12
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,23}$")  # "console:" + 24 fits audit's actor
_N, _R, _P, _DKLEN = 2**14, 8, 1, 64
_MAXMEM = 64 * 1024**2


class TooManyAttempts(StockadeError):
    """Too many failed console logins from this address or for this user."""

    http_status = 429


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(
        password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_DKLEN, maxmem=_MAXMEM
    )
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(key).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        algo, n, r, p, salt, key = stored.split("$")
        if algo != "scrypt":
            return False
        want = base64.b64decode(key)
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(want),
            maxmem=_MAXMEM,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, want)


_DUMMY = hash_password(secrets.token_urlsafe(16))  # unknown users cost the same time


def check_username(name: str) -> str:
    if not _NAME_RE.match(name):
        raise InvalidRequest(
            f"invalid console user name {name!r}",
            "use 1-24 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


def check_new_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise InvalidRequest(
            f"the password is shorter than {MIN_PASSWORD} characters",
            "use a longer one (a passphrase from a password manager)",
        )
    return password


@dataclass(frozen=True, slots=True)
class ConsoleUser:
    id: int
    username: str
    role: str
    created_at: datetime
    disabled: bool

    @property
    def actor(self) -> str:
        return f"console:{self.username}"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def as_dict(self) -> dict[str, object]:
        return {
            "username": self.username,
            "role": self.role,
            "created_at": self.created_at.isoformat(),
            "disabled": self.disabled,
        }


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    user: ConsoleUser
    csrf: str
    expires_at: datetime
    key: str  # sha256 of the cookie secret


def _user(row: ConsoleUserRow) -> ConsoleUser:
    return ConsoleUser(
        row.id, row.username, row.role, repo.aware(row.created_at) or repo.utcnow(), row.disabled
    )


def _key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class LoginLimiter:
    """Failed logins in a sliding window, per user name and per client address, counted in
    the database (``console_login_failures``) so that every server process shares the limit;
    rows older than the window are deleted as new failures come."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        per_user: int = 5,
        per_client: int = 20,
        window: float = 900.0,
    ) -> None:
        self._sessions = sessions
        self.per_user, self.per_client, self.window = per_user, per_client, window

    @staticmethod
    def _keys(username: str, client: str | None) -> tuple[str, str]:
        return f"u:{username}"[:200], f"c:{client}"[:200]

    async def check(self, username: str, client: str | None) -> None:
        now = repo.utcnow()
        since = now - timedelta(seconds=self.window)
        user_key, client_key = self._keys(username, client)
        async with self._sessions() as s:
            for key, limit in ((user_key, self.per_user), (client_key, self.per_client)):
                q = (
                    select(ConsoleLoginFailureRow.at)
                    .where(ConsoleLoginFailureRow.key == key, ConsoleLoginFailureRow.at > since)
                    .order_by(ConsoleLoginFailureRow.at.desc())
                    .limit(limit)
                )
                recent = list((await s.execute(q)).scalars())
                if len(recent) >= limit:
                    oldest = repo.aware(recent[-1]) or now
                    wait = (oldest - since).total_seconds()
                    raise TooManyAttempts(
                        "too many failed logins",
                        f"wait {int(wait) // 60 + 1} minutes, or ask an admin to check the "
                        "audit log",
                    )

    async def failed(self, username: str, client: str | None) -> None:
        now = repo.utcnow()
        async with self._sessions() as s, s.begin():
            s.add_all(ConsoleLoginFailureRow(key=k, at=now) for k in self._keys(username, client))
            await s.execute(
                delete(ConsoleLoginFailureRow).where(
                    ConsoleLoginFailureRow.at <= now - timedelta(seconds=self.window)
                )
            )

    async def succeeded(self, username: str) -> None:
        async with self._sessions() as s, s.begin():
            await s.execute(
                delete(ConsoleLoginFailureRow).where(
                    ConsoleLoginFailureRow.key == self._keys(username, None)[0]
                )
            )


class ConsoleService:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], audit: AuditLog, ttl: int = SESSION_TTL
    ) -> None:
        self._sessions = sessions
        self._audit = audit
        self.ttl = ttl
        self.limiter = LoginLimiter(sessions)

    # -- accounts (CLI) --------------------------------------------------------------------

    async def add_user(self, username: str, password: str, role: str) -> ConsoleUser:
        check_username(username)
        if role not in ROLES:
            raise InvalidRequest(f"unknown role {role!r}", "use admin or viewer")
        check_new_password(password)
        hashed = await anyio.to_thread.run_sync(hash_password, password)
        try:
            async with self._sessions() as s, s.begin():
                row = ConsoleUserRow(
                    username=username,
                    password_hash=hashed,
                    role=role,
                    created_at=repo.utcnow(),
                    disabled=False,
                )
                s.add(row)
                await s.flush()
                made = _user(row)
        except DBIntegrityError as exc:
            raise Conflict(
                f"console user {username!r} already exists",
                "pick another name, or `stockade console user disable` the old account",
            ) from exc
        self._audit.record("console.user_add", user=username, role=role)
        return made

    async def list_users(self) -> list[ConsoleUser]:
        async with self._sessions() as s:
            q = select(ConsoleUserRow).order_by(ConsoleUserRow.username)
            return [_user(r) for r in (await s.execute(q)).scalars()]

    async def disable_user(self, username: str) -> ConsoleUser:
        async with self._sessions() as s, s.begin():
            row = (
                await s.execute(select(ConsoleUserRow).where(ConsoleUserRow.username == username))
            ).scalar_one_or_none()
            if row is None:
                raise NotFound(f"no console user {username!r}", "see `stockade console user list`")
            row.disabled = True
            await s.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.user_id == row.id))
            made = _user(row)
        self._audit.record("console.user_disable", user=username)
        return made

    # -- login and sessions ----------------------------------------------------------------

    async def login(
        self, username: str, password: str, client: str | None
    ) -> tuple[str, ConsoleSession]:
        """Check the password; on success a new session and its cookie secret."""
        username = username.strip().lower()[:64]
        await self.limiter.check(username, client)
        async with self._sessions() as s:
            row = (
                await s.execute(select(ConsoleUserRow).where(ConsoleUserRow.username == username))
            ).scalar_one_or_none()
        stored = row.password_hash if row is not None else _DUMMY
        ok = await anyio.to_thread.run_sync(check_password, password, stored)
        if row is None or not ok or row.disabled:
            await self.limiter.failed(username, client)
            self._audit.record(
                "console.login",
                actor=f"console:{username}"[:32],
                outcome="refused",
                client=client,
                reason="disabled account" if row is not None and ok else "wrong user or password",
            )
            raise AuthError("wrong user name or password", "check both, or ask an admin")
        await self.limiter.succeeded(username)
        user = _user(row)
        secret = secrets.token_urlsafe(32)
        now = repo.utcnow()
        sess = ConsoleSession(
            user, secrets.token_urlsafe(32), now + timedelta(seconds=self.ttl), _key(secret)
        )
        async with self._sessions() as s, s.begin():
            await s.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.expires_at < now))
            s.add(
                ConsoleSessionRow(
                    id=sess.key,
                    user_id=user.id,
                    csrf=sess.csrf,
                    created_at=now,
                    expires_at=sess.expires_at,
                )
            )
        self._audit.record("console.login", actor=user.actor, client=client, role=user.role)
        return secret, sess

    async def session(self, secret: str) -> ConsoleSession | None:
        """The live session a cookie names (None: unknown, expired or its user disabled)."""
        if not secret or len(secret) > 128:
            return None
        async with self._sessions() as s:
            q = (
                select(ConsoleSessionRow, ConsoleUserRow)
                .join(ConsoleUserRow, ConsoleUserRow.id == ConsoleSessionRow.user_id)
                .where(ConsoleSessionRow.id == _key(secret))
            )
            found = (await s.execute(q)).first()
        if found is None:
            return None
        srow, urow = found
        expires = repo.aware(srow.expires_at) or repo.utcnow()
        if urow.disabled or expires <= repo.utcnow():
            return None
        return ConsoleSession(_user(urow), srow.csrf, expires, srow.id)

    async def logout(self, sess: ConsoleSession, client: str | None) -> None:
        async with self._sessions() as s, s.begin():
            await s.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.id == sess.key))
        self._audit.record("console.logout", actor=sess.user.actor, client=client)

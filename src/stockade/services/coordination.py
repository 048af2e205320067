"""What several Stockade processes must agree on: cache invalidation and exclusive work.

Two shapes, picked from the database URL:

* **Local** (SQLite, one machine, ``serve --workers N``): an epoch file in ``run_dir`` that
  every process ``stat``s per request, and ``flock`` locks on striped files.
* **PostgreSQL** (several machines): the same epoch file for the processes of one machine,
  and ``NOTIFY stockade_changed`` after a change, a ``LISTEN``
  connection in every server that marks its caches stale within milliseconds, and session
  advisory locks held on one connection per process (a process that dies releases its locks
  with its connection).

PostgreSQL rather than Redis pub/sub because every scaled deployment already has it and it
is the source of truth for what changed: no second service to run, secure and monitor, and
a notification is sent only after the change it announces is committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any, Protocol

from stockade.services.invalidation import FileInvalidation

log = logging.getLogger("stockade.coordination")

CHANNEL = "stockade_changed"
# What a change touches: "all" drops every cache; "tokens" (a token revoked) only token lookups,
# so a revocation does not make every process rebuild every page.
SCOPES = ("all", "tokens")
NOTHING: frozenset[str] = frozenset()
ALL: frozenset[str] = frozenset({"all"})


class _Epochs:
    """The epoch file of a home (``run/epoch``): one ``stat`` per request tells whether a
    process of this home changed something; only then is the file read, whose per-scope
    counters (``all=N tokens=M``) say what. Writers take turns on ``run/epoch.lock``."""

    def __init__(self, run_dir: Path) -> None:
        self.file = FileInvalidation(run_dir)
        self.lock_path = run_dir / "epoch.lock"
        self._seen = self._read()

    def _read(self) -> dict[str, int]:
        try:
            text = self.file.path.read_text()
        except OSError:
            return {}
        counts = {}
        for part in text.split():
            scope, _, n = part.partition("=")
            if scope in SCOPES and n.isdigit():
                counts[scope] = int(n)
        return counts

    def bump(self, scope: str) -> None:
        scope = scope if scope in SCOPES else "all"
        with self.lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            counts = self._read()
            counts[scope] = counts.get(scope, 0) + 1
            self.file.bump(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))
        self.file.changed()  # our own change: the caller already dropped its caches
        self._seen = counts

    def changed(self) -> frozenset[str]:
        if not self.file.changed():
            return NOTHING
        counts = self._read()
        got = frozenset(s for s in SCOPES if counts.get(s, 0) != self._seen.get(s, 0))
        self._seen = counts
        return got or ALL  # rewritten without counters (an older release): assume everything


POLL = 0.05  # seconds between attempts to take a lock held by someone else
STRIPES = 4096  # lock files in the local shape (keys hash onto them)


class Lock(Protocol):
    """A held lock; ``release`` is idempotent."""

    async def release(self) -> None: ...


class Coordination(Protocol):
    def start(self) -> None:
        """Begin listening for other processes' changes (servers only)."""
        ...

    def bump(self, scope: str = "all") -> None:
        """Announce a change (of ``scope``, one of SCOPES) to every other process."""
        ...

    def changed(self) -> frozenset[str]:
        """The scopes other processes changed since the last call; empty almost always
        (cheap: called per request)."""
        ...

    async def try_lock(self, key: str) -> Lock | None:
        """The lock on ``key`` if no process (this one included) holds it, else None."""
        ...

    async def close(self) -> None: ...


@contextlib.asynccontextmanager
async def hold(coord: Coordination, key: str, patience: float | None = None) -> AsyncIterator[bool]:
    """Wait for the lock on ``key`` (up to ``patience`` seconds) and hold it for the block.
    Yields whether it is held: after running out of patience the block runs without it."""
    deadline = None if patience is None else time.monotonic() + patience
    lock = await coord.try_lock(key)
    while lock is None and (deadline is None or time.monotonic() < deadline):
        await asyncio.sleep(POLL)
        lock = await coord.try_lock(key)
    try:
        yield lock is not None
    finally:
        if lock is not None:
            await lock.release()


class _ProcessLocks:
    """Keys held by this process: a lock other processes cannot see must still exclude the
    other tasks of this one (advisory and flock locks are per session / open file)."""

    def __init__(self) -> None:
        self.held: set[str] = set()


# -- local shape -------------------------------------------------------------------------------


class _FileLock:
    def __init__(self, owner: LocalCoordination, key: str, f: IO[bytes]) -> None:
        self._owner, self._key, self._f = owner, key, f

    async def release(self) -> None:
        if self._f.closed:
            return
        with contextlib.suppress(OSError):
            fcntl.flock(self._f, fcntl.LOCK_UN)
        self._f.close()
        self._owner.mine.held.discard(self._key)


class LocalCoordination:
    """One machine: an epoch file for invalidation, striped ``flock`` files for locks."""

    def __init__(self, run_dir: Path) -> None:
        self.epochs = _Epochs(run_dir)
        self.lock_dir = run_dir / "locks"
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        self.mine = _ProcessLocks()

    def start(self) -> None:
        pass

    def bump(self, scope: str = "all") -> None:
        self.epochs.bump(scope)

    def changed(self) -> frozenset[str]:
        return self.epochs.changed()

    async def try_lock(self, key: str) -> Lock | None:
        if key in self.mine.held:
            return None
        stripe = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest()) % STRIPES
        f = (self.lock_dir / f"{stripe:04x}.lock").open("ab")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return None
        except BaseException:
            f.close()
            raise
        self.mine.held.add(key)
        return _FileLock(self, key, f)

    async def close(self) -> None:
        pass


# -- PostgreSQL shape --------------------------------------------------------------------------


def advisory_key(key: str) -> int:
    """A signed 64-bit advisory-lock key for ``key`` (stable across processes)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), signed=True)


def libpq_url(database_url: str) -> str:
    """The SQLAlchemy URL as a libpq connection string for psycopg."""
    from sqlalchemy.engine import make_url

    u = make_url(database_url).set(drivername="postgresql")
    return u.render_as_string(hide_password=False)


class _AdvisoryLock:
    def __init__(self, owner: PgCoordination, key: str, conn: Any) -> None:
        self._owner, self._key, self._conn = owner, key, conn
        self._released = False

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._owner.mine.held.discard(self._key)
        await self._owner._unlock(self._conn, advisory_key(self._key))


class PgCoordination:
    """LISTEN/NOTIFY invalidation and advisory locks on PostgreSQL."""

    def __init__(self, database_url: str, run_dir: Path, *, reconnect_max: float = 1.0) -> None:
        self.conninfo = libpq_url(database_url)
        # Processes sharing this home also see the epoch file on their next request (no
        # window between a CLI command finishing and the server noticing); NOTIFY reaches
        # the processes of other machines.
        self.local = _Epochs(run_dir)
        self.me = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.mine = _ProcessLocks()
        self._dirty: set[str] = set()
        self._reconnect_max = reconnect_max
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._pending: set[asyncio.Task[None]] = set()
        self._lock_conn: Any = None
        self._lock_mutex = asyncio.Lock()
        self._notify_conn: Any = None
        self._notify_mutex = asyncio.Lock()

    # invalidation
    def start(self) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="pg-listen")

    async def _listen(self) -> None:
        import psycopg

        delay = 0.2
        first = True
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.conninfo,
                    autocommit=True,
                    connect_timeout=5,
                    # a peer gone without a word (network cut) is noticed within ~10 s
                    keepalives=1,
                    keepalives_idle=5,
                    keepalives_interval=2,
                    keepalives_count=3,
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    if not first:  # changes made while we were deaf are unknown: drop all
                        self._dirty.add("all")
                        log.info("listening for changes again")
                    first, delay = False, 0.2
                    self._listening.set()
                    async for note in conn.notifies():
                        scope, _, sender = note.payload.partition(" ")
                        if sender != self.me:
                            self._dirty.add(scope if scope in SCOPES else "all")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # PostgreSQL restarted or unreachable: retry, stay up
                self._listening.clear()
                self._dirty.add("all")
                log.warning("change listener lost PostgreSQL (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._reconnect_max)

    def bump(self, scope: str = "all") -> None:
        self.local.bump(scope)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # called outside the event loop (a plain CLI step)
            self._notify_sync(scope)
            return
        task = loop.create_task(self._notify(scope))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _notify_sync(self, scope: str) -> None:
        import psycopg

        try:
            with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{scope} {self.me}"))
        except psycopg.Error as exc:
            log.warning("could not announce a change to other processes: %s", exc)

    async def _notify(self, scope: str) -> None:
        import psycopg

        async with self._notify_mutex:
            for attempt in (1, 2):  # a connection broken by a restart is replaced once
                try:
                    if self._notify_conn is None or self._notify_conn.closed:
                        self._notify_conn = await psycopg.AsyncConnection.connect(
                            self.conninfo, autocommit=True, connect_timeout=5
                        )
                    await self._notify_conn.execute(
                        "SELECT pg_notify(%s, %s)", (CHANNEL, f"{scope} {self.me}")
                    )
                    return
                except psycopg.Error as exc:
                    await self._drop("_notify_conn")
                    if attempt == 2:
                        log.warning("could not announce a change to other processes: %s", exc)

    def changed(self) -> frozenset[str]:
        local = self.local.changed()
        if self._listener is not None and not self._listening.is_set():
            return ALL  # deaf to other processes: trust no cache until listening again
        if self._dirty:
            got, self._dirty = frozenset(self._dirty), set()
            return got | local
        return local

    # locks
    async def try_lock(self, key: str) -> Lock | None:
        import psycopg

        if key in self.mine.held:
            return None
        self.mine.held.add(key)
        try:
            async with self._lock_mutex:
                if self._lock_conn is None or self._lock_conn.closed:
                    if self.mine.held - {key}:
                        # the old connection died with its locks: the holders no longer
                        # exclude anyone, but they will still release; start afresh
                        log.warning("lock connection was lost; its locks were released")
                    self._lock_conn = await psycopg.AsyncConnection.connect(
                        self.conninfo, autocommit=True, connect_timeout=5
                    )
                conn = self._lock_conn
                cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (advisory_key(key),))
                row = await cur.fetchone()
        except psycopg.Error:
            self.mine.held.discard(key)
            await self._drop("_lock_conn")
            raise
        if not row or not row[0]:
            self.mine.held.discard(key)
            return None
        return _AdvisoryLock(self, key, conn)

    async def _unlock(self, conn: Any, k: int) -> None:
        import psycopg

        async with self._lock_mutex:
            if conn is not self._lock_conn or conn.closed:
                return  # that connection is gone, and its locks with it
            try:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (k,))
            except psycopg.Error as exc:
                log.warning("advisory unlock failed (%s); dropping the lock connection", exc)
                await self._drop("_lock_conn")

    async def _drop(self, attr: str) -> None:
        conn = getattr(self, attr)
        setattr(self, attr, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        await self._drop("_notify_conn")
        await self._drop("_lock_conn")


def open_coordination(database_url: str, run_dir: Path) -> Coordination:
    if database_url.startswith(("postgresql", "postgres")):
        return PgCoordination(database_url, run_dir)
    return LocalCoordination(run_dir)

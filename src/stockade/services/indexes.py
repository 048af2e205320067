"""Index management: create, list, show, delete; a per-process cache of index definitions."""

from __future__ import annotations

import builtins
import re
from urllib.parse import urlparse

from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.errors import Conflict, InvalidRequest, NotFound
from stockade.services import repo
from stockade.services.repo import IndexInfo
from stockade.types import IndexKind

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
RESERVED = {"t", "api", "static", "health", "metrics", "simple", "files"}


def check_index_name(name: str) -> str:
    if not _NAME_RE.match(name) or name in RESERVED:
        raise InvalidRequest(
            f"invalid index name {name!r}",
            "use 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"
            + (f"; {sorted(RESERVED)} are reserved" if name in RESERVED else ""),
        )
    return name


class IndexService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._cache: dict[str, IndexInfo] | None = None
        self._generation = 0  # bumped by clear(): a load that straddles a clear is not kept

    def clear(self) -> None:
        self._generation += 1
        self._cache = None

    async def _load(self) -> dict[str, IndexInfo]:
        cache = self._cache
        if cache is None:
            generation = self._generation
            async with self._sessions() as s:
                cache = {i.name: i for i in await repo.list_indexes(s)}
            # clear() while we awaited (closing the session awaits too): a change this read may
            # have missed. Use what we read, keep it only if nothing changed meanwhile.
            if generation == self._generation:
                self._cache = cache
        return cache

    async def get(self, name: str) -> IndexInfo:
        found = (await self._load()).get(name)
        if found is None:
            raise NotFound(f"no index named {name!r}", "see `stockade index list`")
        return found

    def cached(self, name: str) -> IndexInfo | None:
        """The index if definitions are loaded in this process (no I/O)."""
        return self._cache.get(name) if self._cache is not None else None

    async def find(self, name: str) -> IndexInfo | None:
        return (await self._load()).get(name)

    async def list(self) -> list[IndexInfo]:
        return sorted((await self._load()).values(), key=lambda i: i.name)

    async def create(
        self,
        name: str,
        kind: IndexKind,
        *,
        upstream_url: str | None = None,
        members: builtins.list[str] | None = None,
        anonymous_read: bool = False,
        description: str | None = None,
    ) -> IndexInfo:
        check_index_name(name)
        members = members or []
        if kind.is_conda:
            raise InvalidRequest(
                f"conda channels are created with their subdirs: {kind.value} needs more than an "
                "index",
                "use `stockade conda channel create NAME --mirror URL --subdirs noarch,linux-64` "
                "(or --private), or POST /api/v1/conda/channels",
            )
        if kind is IndexKind.MIRROR:
            parsed = urlparse(upstream_url or "")
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise InvalidRequest(
                    f"mirror upstream {upstream_url!r} is not an http(s) URL",
                    "give the upstream simple index, e.g. https://pypi.org/simple/",
                )
            assert upstream_url is not None
            if not upstream_url.endswith("/"):
                upstream_url += "/"
        elif kind is IndexKind.VIRTUAL:
            if not members:
                raise InvalidRequest(
                    "a virtual index needs at least one member", "--virtual internal,pypi"
                )
            known = await self._load_fresh()
            for m in members:
                if m not in known:
                    raise NotFound(f"member index {m!r} does not exist", "create it first")
                if m == name:
                    raise InvalidRequest("a virtual index cannot contain itself")
                if known[m].kind.is_conda:
                    raise InvalidRequest(
                        f"member {m!r} is a conda channel; virtual indexes combine PyPI indexes",
                        "list only mirror, private or virtual PyPI indexes as members",
                    )
            if len(set(members)) != len(members):
                raise InvalidRequest("a member is listed twice", "list each member once")
        async with self._sessions() as s, s.begin():
            if await repo.get_index(s, name):
                raise Conflict(f"index {name!r} already exists", "pick another name")
            try:
                info = await repo.insert_index(
                    s,
                    name=name,
                    kind=kind,
                    upstream_url=upstream_url if kind is IndexKind.MIRROR else None,
                    members=members if kind is IndexKind.VIRTUAL else [],
                    anonymous_read=anonymous_read,
                    description=description,
                )
            except DBIntegrityError as exc:
                raise Conflict(f"index {name!r} already exists", "pick another name") from exc
        self.clear()
        return info

    async def _load_fresh(self) -> dict[str, IndexInfo]:
        self.clear()
        return await self._load()

    async def delete(self, name: str) -> None:
        known = await self._load_fresh()
        info = known.get(name)
        if info is None:
            raise NotFound(f"no index named {name!r}", "see `stockade index list`")
        users = [i.name for i in known.values() if name in i.members]
        if users:
            raise Conflict(
                f"index {name!r} is a member of {', '.join(users)}",
                "remove it from those virtual indexes (or delete them) first",
            )
        async with self._sessions() as s, s.begin():
            await repo.delete_index(s, info.id)
        self.clear()

    async def set_anonymous_read(self, name: str, value: bool) -> None:
        await self.get(name)
        async with self._sessions() as s, s.begin():
            await repo.update_index(s, name, anonymous_read=value)
        self.clear()

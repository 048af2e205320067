"""Several server processes: invalidation reaches every process, one upstream fetch per file.

The PostgreSQL shape is tried with two servers that share nothing but the database and the
blob store (separate homes, as on separate machines); the local shape with ``--workers 2``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stockade.services.coordination import LocalCoordination, PgCoordination, hold
from tests.cluster import start_servers
from tests.conftest import Server, UpstreamSet, make_server

PG_ONLY = pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)


def test_local_locks_exclude_tasks_and_processes(tmp_path: Path) -> None:
    async def go() -> None:
        a, b = LocalCoordination(tmp_path / "run"), LocalCoordination(tmp_path / "run")
        held = await a.try_lock("fetch:x")
        assert held is not None
        assert await a.try_lock("fetch:x") is None  # another task of the same process
        assert await b.try_lock("fetch:x") is None  # another process (own open file)
        await held.release()
        await held.release()  # idempotent
        again = await b.try_lock("fetch:x")
        assert again is not None
        await again.release()
        async with hold(a, "fetch:y") as mine:
            assert mine
            async with hold(b, "fetch:y", patience=0.2) as theirs:
                assert not theirs  # ran out of patience: runs without the lock

    asyncio.run(go())


def test_local_invalidation_is_seen_by_the_other_process(tmp_path: Path) -> None:
    a, b = LocalCoordination(tmp_path / "run"), LocalCoordination(tmp_path / "run")
    assert not b.changed()
    a.bump()
    assert not a.changed()  # its own change: the caller already dropped its caches
    assert b.changed() == {"all"}
    assert not b.changed()  # once
    a.bump("tokens")  # a revoked token: other processes drop token lookups only
    assert b.changed() == {"tokens"}
    a.bump("tokens")
    a.bump()
    assert b.changed() == {"all", "tokens"}  # nothing lost when both happen between looks


@PG_ONLY
def test_pg_locks_and_notifications(tmp_path: Path, db_url: str) -> None:
    async def go() -> None:
        a = PgCoordination(db_url, tmp_path / "a")
        b = PgCoordination(db_url, tmp_path / "b")  # another machine: no shared epoch file
        a.start()
        b.start()
        try:
            held = await a.try_lock("fetch:x")
            assert held is not None
            assert await a.try_lock("fetch:x") is None  # advisory locks re-enter: guarded
            assert await b.try_lock("fetch:x") is None
            await held.release()
            theirs = await b.try_lock("fetch:x")
            assert theirs is not None
            await theirs.release()

            await asyncio.sleep(0.5)  # both listening
            assert not a.changed() and not b.changed()
            for scope in ("all", "tokens"):
                a.bump(scope)
                deadline = time.monotonic() + 1.0
                while not (got := b.changed()):
                    assert time.monotonic() < deadline, "the change did not reach b within 1 s"
                    await asyncio.sleep(0.01)
                assert got == {scope}
            await asyncio.sleep(0.2)
            assert not a.changed()  # not told of its own change
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


@PG_ONLY
def test_pg_lock_dies_with_its_process(tmp_path: Path, db_url: str) -> None:
    """A process killed mid-fetch must not block the file forever: its connection closes and
    PostgreSQL releases its advisory locks."""

    async def go() -> None:
        a = PgCoordination(db_url, tmp_path / "a")
        b = PgCoordination(db_url, tmp_path / "b")
        assert await a.try_lock("fetch:x") is not None
        assert await b.try_lock("fetch:x") is None
        await a.close()  # what the kernel does to the socket of a killed process
        deadline = time.monotonic() + 5
        lock = None
        while lock is None:
            assert time.monotonic() < deadline
            lock = await b.try_lock("fetch:x")
            await asyncio.sleep(0.05)
        await lock.release()
        await b.close()

    asyncio.run(go())


# -- real servers ------------------------------------------------------------------------------


@pytest.fixture
def pair(tmp_path: Path, db_url: str, upstream: UpstreamSet) -> Iterator[tuple[Server, Server]]:
    """Two servers sharing only the database, blob folder and keys (two machines)."""
    a, b = start_servers(tmp_path, db_url, 2)
    try:
        a.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
        yield a, b
    finally:
        a.stop()
        b.stop()


@PG_ONLY
def test_revoked_token_is_refused_by_the_other_server_within_a_second(
    pair: tuple[Server, Server],
) -> None:
    a, b = pair
    with a.http(a.admin_token) as admin:
        made = admin.post("/api/v1/tokens", json={"index": "up", "scope": "read"}).json()
    with b.http(made["token"]) as c:
        assert c.get("/pypi/up/simple/alpha/").status_code == 200  # cached by b now
    with a.http(a.admin_token) as admin:
        assert admin.delete(f"/api/v1/tokens/{made['id']}").status_code == 200
    revoked = time.monotonic()
    with b.http(made["token"]) as c:
        while c.get("/pypi/up/simple/alpha/").status_code != 401:
            assert time.monotonic() - revoked < 1.0, "b still accepts the revoked token"
            time.sleep(0.02)


def _fetch_all(servers: list[Server], token: str, path: str, n: int) -> list[bytes]:
    def get(i: int) -> bytes:
        srv = servers[i % len(servers)]
        with httpx.Client(base_url=srv.url, auth=("__token__", token), timeout=30) as c:
            r = c.get(path)
            assert r.status_code == 200, r.text
            return r.content

    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(get, range(n)))


def _fetched_upstream_once(servers: list[Server], upstream: UpstreamSet, wheel: Path) -> None:
    """Eight concurrent first requests for a slow file, spread over ``servers``: all get it
    whole, and it was fetched from the upstream once."""
    token = servers[0].token("up")
    for srv in servers:
        with srv.http(token) as c:
            assert c.get("/pypi/up/simple/alpha/").status_code == 200
    upstream.upstream.slow(wheel.name, 1.0)
    bodies = _fetch_all(servers, token, f"/pypi/up/files/alpha/{wheel.name}", 8)
    assert all(body == wheel.read_bytes() for body in bodies)
    assert upstream.upstream.count("/files/" + wheel.name) == 1


@PG_ONLY
def test_two_servers_fetch_a_file_upstream_once(
    pair: tuple[Server, Server], upstream: UpstreamSet
) -> None:
    _fetched_upstream_once(list(pair), upstream, upstream.files["alpha-1.0"])


def test_processes_of_one_home_fetch_a_file_upstream_once(
    tmp_path: Path, upstream: UpstreamSet
) -> None:
    """The local shape (``serve --workers N``): processes sharing a home and its SQLite
    database; two servers on their own ports so that both surely take requests."""
    a = make_server(tmp_path / "h", f"sqlite:///{tmp_path / 'h' / 'db.sqlite'}")
    b = Server(home=a.home, db_url=a.db_url, env=a.env, admin_token=a.admin_token)
    try:
        a.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
        b.start()
        _fetched_upstream_once([a, b], upstream, upstream.files["alpha-1.1"])
    finally:
        a.stop()
        b.stop()

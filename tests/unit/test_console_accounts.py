"""Console passwords and the failed-login limiter (services/console.py; the limiter on
SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select

from stockade.db.engine import make_async_engine, make_sessionmaker, upgrade
from stockade.db.models import ConsoleLoginFailureRow
from stockade.errors import InvalidRequest
from stockade.services import repo
from stockade.services.console import (
    LoginLimiter,
    TooManyAttempts,
    check_new_password,
    check_password,
    check_username,
    hash_password,
)


def test_scrypt_hashes_are_salted_and_verify() -> None:
    a, b = hash_password("correct horse battery"), hash_password("correct horse battery")
    assert a != b and a.startswith("scrypt$16384$8$1$")
    assert check_password("correct horse battery", a)
    assert not check_password("correct horse batterz", a)
    assert not check_password("x", "not-a-hash")
    assert not check_password("x", "bcrypt$1$2$3$4$5")


def test_names_and_passwords_are_checked() -> None:
    assert check_username("alice.ops-1") == "alice.ops-1"
    for bad in ("Alice", "", "-x", "a" * 25, "a b", "<script>"):
        with pytest.raises(InvalidRequest):
            check_username(bad)
    with pytest.raises(InvalidRequest, match="shorter than 12"):
        check_new_password("short")


def test_limiter_counts_per_user_and_client_across_processes(
    monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    """Two limiters on one database (two server processes) share the counts."""
    upgrade(db_url)
    now = [repo.utcnow()]
    monkeypatch.setattr(repo, "utcnow", lambda: now[0])

    async def go() -> None:
        engines = [make_async_engine(db_url) for _ in range(2)]
        a, b = (
            LoginLimiter(make_sessionmaker(e), per_user=3, per_client=5, window=60) for e in engines
        )
        try:
            for lim in (a, b, a):  # the failures land in different processes
                await lim.check("alice", "10.0.0.1")
                await lim.failed("alice", "10.0.0.1")
            with pytest.raises(TooManyAttempts) as exc:
                await b.check("alice", "10.0.0.9")  # the user is locked whatever the address
            assert exc.value.http_status == 429
            await a.check("bob", "10.0.0.1")  # 3 failures from this client: under its limit
            await b.failed("bob", "10.0.0.1")
            await a.failed("carol", "10.0.0.1")
            with pytest.raises(TooManyAttempts):
                await b.check("dave", "10.0.0.1")  # 5 from one client
            now[0] += timedelta(seconds=61)  # the window passes
            await a.check("alice", "10.0.0.1")
            await a.failed("bob", "10.0.0.2")  # also deletes the rows older than the window
            await b.succeeded("bob")
            await a.check("bob", "10.0.0.2")
            async with make_sessionmaker(engines[0])() as s:
                keys = (await s.execute(select(ConsoleLoginFailureRow.key))).scalars()
                assert sorted(keys) == ["c:10.0.0.2"]
        finally:
            for e in engines:
                await e.dispose()

    asyncio.run(go())

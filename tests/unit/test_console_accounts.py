"""Console passwords and the failed-login limiter (services/console.py)."""

from __future__ import annotations

import pytest

from stockade.errors import InvalidRequest
from stockade.services import console
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


def test_limiter_counts_per_user_and_client(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(console.time, "monotonic", lambda: now[0])
    lim = LoginLimiter(per_user=3, per_client=5, window=60)
    for _ in range(3):
        lim.check("alice", "10.0.0.1")
        lim.failed("alice", "10.0.0.1")
    with pytest.raises(TooManyAttempts) as exc:
        lim.check("alice", "10.0.0.9")  # the user is locked whatever the address
    assert exc.value.http_status == 429
    lim.check("bob", "10.0.0.1")  # 3 failures from this client: under its limit
    lim.failed("bob", "10.0.0.1")
    lim.failed("carol", "10.0.0.1")
    with pytest.raises(TooManyAttempts):
        lim.check("dave", "10.0.0.1")  # 5 from one client
    now[0] += 61  # the window passes
    lim.check("alice", "10.0.0.1")
    lim.failed("bob", "10.0.0.2")
    lim.succeeded("bob")
    lim.check("bob", "10.0.0.2")

"""Shared fixtures: real Stockade servers (SQLite and PostgreSQL) and a local upstream index.

Every client a test runs is isolated from this machine's pip/uv configuration
(``PIP_CONFIG_FILE=/dev/null``, ``--isolated``, ``UV_NO_CONFIG=1``) so that a pass proves
Stockade served the bytes.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.builders import build_sdist, build_wheel, write_simple_tree
from tests.s3server import private_s3, s3  # noqa: F401 - fixtures (a real S3 server)
from tests.upstream import Upstream

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
STOCKADE = str(VENV_BIN / "stockade")
PG_ADMIN_URL = os.environ.get(
    "STOCKADE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def client_env(**extra: str) -> dict[str, str]:
    """Environment for pip/uv/twine subprocesses, isolated from the machine's config."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "UV_", "TWINE_", "STOCKADE_"))
    }
    env.update(
        PIP_CONFIG_FILE="/dev/null",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        UV_NO_CONFIG="1",
        UV_PYTHON_DOWNLOADS="never",
        NO_COLOR="1",
    )
    env.update(extra)
    return env


# -- databases ---------------------------------------------------------------------------------


def _pg_available() -> str | None:
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return str(exc).splitlines()[0]


@pytest.fixture(scope="session")
def pg_status() -> str | None:
    return _pg_available()


def _make_pg_db() -> tuple[str, str]:
    name = f"stockade_test_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    return name, f"{base.replace('postgresql://', 'postgresql+psycopg://')}/{name}"


def _drop_pg_db(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def pg_database(pg_status: str | None) -> Iterator[str]:
    """A fresh empty PostgreSQL database, dropped afterwards. PostgreSQL is a prerequisite of
    the suite (README; `.ci/run` starts it): unreachable, the test fails, it is never skipped."""
    if pg_status is not None:
        pytest.fail(
            f"PostgreSQL at {PG_ADMIN_URL} is not reachable: {pg_status} (start it: "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start)"
        )
    name, url = _make_pg_db()
    try:
        yield url
    finally:
        _drop_pg_db(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_status: str | None) -> Iterator[str]:
    """A fresh empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'stockade.db'}"
        return
    with pg_database(pg_status) as url:
        yield url


@pytest.fixture
def pg_url(pg_status: str | None) -> Iterator[str]:
    """A fresh empty PostgreSQL database (tests of the PostgreSQL shape only)."""
    with pg_database(pg_status) as url:
        yield url


# -- a real server -----------------------------------------------------------------------------


@dataclass
class Server:
    home: Path
    db_url: str
    env: dict[str, str]
    url: str = ""
    admin_token: str = ""
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path = field(default_factory=Path)
    workers: int = 1

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [STOCKADE, *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"stockade {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}"
            )
        return res

    def token(self, index: str, scope: str = "read", *extra: str) -> str:
        return (
            self.cli("token", "create", "--index", index, "--scope", scope, *extra)
            .stdout.strip()
            .splitlines()[-1]
        )

    def index_url(self, index: str, token: str | None = None) -> str:
        if token is None:
            return f"{self.url}/pypi/{index}/simple/"
        host = self.url.split("://", 1)[1]
        return f"http://__token__:{token}@{host}/pypi/{index}/simple/"

    def http(self, token: str | None = None) -> httpx.Client:
        auth = ("__token__", token) if token else None
        return httpx.Client(base_url=self.url, auth=auth, timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        ready = self.home / "ready"
        ready.unlink(missing_ok=True)
        env = dict(self.env, STOCKADE_READY_FILE=str(ready))
        self.log_path = self.home / "server.log"
        self.proc = subprocess.Popen(
            [
                STOCKADE,
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--workers",
                str(self.workers),
            ],
            env=env,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while not ready.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start:\n{self.log()}")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{ready.read_text().strip()}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def make_server(home: Path, db_url: str, workers: int = 1, **settings: Any) -> Server:
    home.mkdir(parents=True, exist_ok=True)
    env = client_env(
        STOCKADE_HOME=str(home),
        STOCKADE_DATABASE_URL=db_url,
        STOCKADE_PAGE_TTL=str(settings.pop("page_ttl", 600)),
        **{f"STOCKADE_{k.upper()}": str(v) for k, v in settings.items()},
    )
    srv = Server(home=home, db_url=db_url, env=env, workers=workers)
    out = srv.cli("init", "--no-default-indexes").stdout
    srv.admin_token = out.strip().splitlines()[-1]
    srv.start()
    return srv


@pytest.fixture
def server(tmp_path: Path, db_url: str) -> Iterator[Server]:
    srv = make_server(tmp_path / "home", db_url)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[Server]:
    srv = make_server(tmp_path / "home", f"sqlite:///{tmp_path / 'home' / 'stockade.db'}")
    try:
        yield srv
    finally:
        srv.stop()


# -- a local upstream --------------------------------------------------------------------------


@dataclass
class UpstreamSet:
    upstream: Upstream
    dist: Path
    files: dict[str, Path]


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[UpstreamSet]:
    """Tiny real projects: several versions, one yanked, metadata files, requires-python."""
    dist = tmp_path / "dist"
    dist.mkdir()
    f = {
        "alpha-1.0": build_wheel(dist, "alpha", "1.0"),
        "alpha-1.1": build_wheel(dist, "alpha", "1.1"),
        "alpha-2.0": build_wheel(dist, "alpha", "2.0"),  # yanked
        "alpha-1.1-sdist": build_sdist(dist, "alpha", "1.1"),
        "beta-1.0": build_wheel(dist, "beta", "1.0", requires_dist=["alpha>=1.0"]),
        "gamma-1.0": build_wheel(dist, "gamma", "1.0"),
        "gamma-9.0": build_wheel(dist, "gamma", "9.0", requires_python=">=3.99"),
        "internal-tool-5.0": build_wheel(dist, "internal-tool", "5.0"),  # the confusion trap
    }
    root = tmp_path / "upstream"
    write_simple_tree(
        root,
        list(f.values()),
        yanked={f["alpha-2.0"].name: "broken build"},
        with_metadata={f["beta-1.0"].name, f["alpha-1.1"].name, f["alpha-1.0"].name},
    )
    up = Upstream(root)
    try:
        yield UpstreamSet(up, dist, f)
    finally:
        up.close()

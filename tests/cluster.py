"""Scaled-out Stockade for tests and benchmarks: a private PostgreSQL cluster that a test may
restart, several server processes sharing it and one blob store, and nginx in front (the
configuration ``stockade deploy nginx`` prints)."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

from tests.conftest import STOCKADE, Server, make_server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bin() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not found:
        raise AssertionError("PostgreSQL server binaries not found (apt-get install postgresql)")
    return Path(found[-1]).parent


class PgCluster:
    """A PostgreSQL server of the test's own, on its own port: restarting it disturbs no one.
    Runs as the ``postgres`` user when the tests run as root (PostgreSQL refuses root)."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        # Not under pytest's tmp_path: its parents are private to root.
        self.root = Path(tempfile.mkdtemp(prefix="stockade-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE stockade")

    def _run(self, tool: str, *args: str) -> None:
        res = subprocess.run(
            [*self._as, str(self.bin / tool), *args], capture_output=True, text=True, timeout=120
        )
        if res.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/stockade"

    def new_database(self, name: str) -> str:
        """Create another database; its SQLAlchemy URL."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=300"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-o", opts, "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def close(self) -> None:
        with contextlib.suppress(AssertionError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class Nginx:
    """nginx from Debian's package, run from the configuration Stockade generates."""

    def __init__(
        self,
        root: Path,
        backends: list[str],
        *,
        accel: Server | None = None,
        tweak: dict[str, str] | None = None,
    ) -> None:
        if shutil.which("nginx") is None:
            raise AssertionError("nginx is not installed (apt-get install nginx-light)")
        self.root = root
        self.port = free_port()
        args = [
            "deploy",
            "nginx",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--prefix",
            str(root),
            "--foreground",
            "--write",
        ]
        for b in backends:
            args += ["--backend", b]
        env = accel.env if accel is not None else dict(os.environ)
        if accel is not None:
            args.append("--accel")
        if os.geteuid() == 0:  # workers would drop to nobody, who cannot read the blobs
            args += ["--user", "root"]
        res = subprocess.run([STOCKADE, *args], env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        conf = root / "nginx.conf"
        text = conf.read_text()
        for old, new in (tweak or {}).items():
            assert old in text, old
            text = text.replace(old, new)
        conf.write_text(text)
        self.proc = subprocess.Popen(
            ["nginx", "-c", str(conf), "-p", str(root)],
            stdout=subprocess.DEVNULL,
            stderr=(root / "stderr.log").open("ab"),
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        "nginx did not start:\n" + (root / "error.log").read_text(errors="replace")
                    ) from None
                time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def error_log(self) -> str:
        path = self.root / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def join_server(first: Server, home: Path, **settings: str) -> Server:
    """Another server on ``first``'s database and storage, as if on another machine: its own
    home, caches and run folder."""
    home.mkdir(parents=True, exist_ok=True)
    env = dict(first.env, STOCKADE_HOME=str(home))
    env.update({f"STOCKADE_{k.upper()}": v for k, v in settings.items()})
    srv = Server(home=home, db_url=first.db_url, env=env)
    srv.cli("init", "--no-default-indexes")  # its config file; the database is initialised
    srv.admin_token = first.admin_token
    srv.start()
    return srv


def start_servers(root: Path, db_url: str, count: int, **settings: str) -> list[Server]:
    """``count`` servers on one database and one blob folder under ``root``."""
    settings.setdefault("storage_url", f"file://{root / 'blobs'}")
    settings.setdefault("keys_dir", str(root / "keys"))  # one deployment, one set of keys
    first = make_server(root / "s0", db_url, **settings)
    servers = [first]
    try:
        for i in range(1, count):
            servers.append(join_server(first, root / f"s{i}", **settings))
    except BaseException:
        for s in servers:
            s.stop()
        raise
    return servers


def kill9(srv: Server) -> None:
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGKILL)
    srv.proc.wait()
    srv.proc = None


def wait_ok(url: str, path: str, token: str, within: float) -> float:
    """Seconds until GET ``path`` answers 200 (fails after ``within``)."""
    start = time.monotonic()
    with httpx.Client(base_url=url, auth=("__token__", token), timeout=5) as c:
        while True:
            try:
                if c.get(path).status_code == 200:
                    return time.monotonic() - start
            except httpx.HTTPError:
                pass
            if time.monotonic() - start > within:
                raise AssertionError(f"{path} did not recover within {within} s")
            time.sleep(0.1)

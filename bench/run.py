"""Stockade benchmark: hot Simple-API pages, warm pip installs and streaming memory vs peers.

Run ``.venv/bin/python bench/run.py`` (or ``make bench``). See ``bench/README.md``.

Everything runs on 127.0.0.1. The upstream every mirror points at is a static PEP 503/691 tree
built from real wheels already on this machine (``/opt/pypi``) and served by its own nginx; no
benchmark traffic goes to pypi.org (peers are only *installed* from PyPI, once, into
``bench/.peers/<name>``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import html
import json
import os
import re
import resource
import secrets
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from packaging.tags import sys_tags
from packaging.utils import canonicalize_name, parse_wheel_filename
from rich.console import Console
from rich.table import Table

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PEERS = BENCH / ".peers"
RESULTS = BENCH / "results"
LOGS = PEERS / "logs"
TREE = PEERS / "tree"
STOCKADE_BIN = REPO / ".venv" / "bin" / "stockade"

LOCAL_SIMPLE = Path("/opt/pypi/simple")
LOCAL_FILES = Path("/opt/pypi/files")
# Five real projects, closed under their (non-extra) dependencies for Python 3.11.
PROJECTS = ["requests", "urllib3", "idna", "certifi", "charset-normalizer"]
HOT_PROJECT = "requests"
BIG_PROJECT = "bigblob"
SERVERS = ["nginx", "stockade", "devpi", "pypiserver", "proxpi"]
PEER_PROXIES = ["devpi", "pypiserver", "proxpi"]
JSON_V1 = "application/vnd.pypi.simple.v1+json"
HTML_ACCEPT = "text/html"
PYPI = "https://pypi.org/simple/"  # only for installing the peers themselves
PEER_PACKAGES = {
    "devpi": ["devpi-server", "devpi-client"],
    "pypiserver": ["pypiserver[passlib,cache]", "waitress"],
    "proxpi": ["proxpi", "gunicorn"],
    "client": ["pip"],
}
CELLS = [("html", 2), ("html", 8), ("json", 2), ("json", 8)]
INSTALL_HINT = "apt-get update && apt-get install -y wrk nginx"

console = Console(width=None if sys.stdout.isatty() else 150)


class BudgetExceeded(Exception):
    """The whole run went over --budget seconds."""


class Unavailable(Exception):
    """A server cannot be installed or started here."""


# -- processes ---------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


_procs: list[Proc] = []


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for every child: no PIP_*/STOCKADE_*/proxy settings leak in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "STOCKADE_", "PROXPI_", "UV_"))
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env["PIP_CONFIG_FILE"] = "/dev/null"
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def spawn(name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> Proc:
    LOGS.mkdir(parents=True, exist_ok=True)
    log = LOGS / f"{name}.log"
    with log.open("wb") as fh:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,  # own process group: killed as a whole
        )
    proc = Proc(name, popen, log)
    _procs.append(proc)
    return proc


def stop(proc: Proc) -> None:
    """SIGINT the group (quick shutdown for nginx/gunicorn/uvicorn/waitress), then SIGKILL."""
    if proc in _procs:
        _procs.remove(proc)
    if proc.popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # stragglers in the group
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.popen.wait(timeout=5)


def stop_all() -> None:
    for proc in list(reversed(_procs)):
        stop(proc)


def run_cmd(
    argv: list[str], env: dict[str, str], timeout: float, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run to completion in its own group; the group is killed on timeout."""
    popen = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = popen.communicate(timeout=timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        popen.communicate()
        raise
    return subprocess.CompletedProcess(argv, popen.returncode, out, err)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- HTTP helpers ------------------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 30) -> Any:
    """(status, headers, body); HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def wait_http(url: str, proc: Proc, timeout: float = 60) -> None:
    """Until the server answers anything (401/404 count) or its process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise Unavailable(f"exited with {proc.popen.returncode}: {proc.log_tail(5)}")
        try:
            http_get(url, timeout=2)
            return
        except (OSError, urllib.error.URLError):
            time.sleep(0.1)
    raise Unavailable(f"not answering on {url} after {timeout:.0f}s: {proc.log_tail(5)}")


# -- the upstream tree -------------------------------------------------------------------------


@dataclass
class Dist:
    project: str
    filename: str
    sha256: str
    requires_python: str | None
    source: Path


def _requires_python(path: Path) -> str | None:
    with zipfile.ZipFile(path) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        for line in zf.read(meta).decode("utf-8", "replace").splitlines():
            if not line.strip():
                break
            if line.lower().startswith("requires-python:"):
                return line.split(":", 1)[1].strip()
    return None


def pick_local_wheels() -> list[Dist]:
    """For each project, the newest wheel in the local index that installs on this Python."""
    tags = list(sys_tags())
    rank = {t: i for i, t in enumerate(tags)}
    out = []
    for project in PROJECTS:
        page = LOCAL_SIMPLE / project / "index.html"
        if not page.exists():
            raise SystemExit(f"bench needs {page} (the local wheel index) but it is missing")
        best: tuple[Any, int, str, str] | None = None
        for href in re.findall(r'href="([^"]+)"', page.read_text("utf-8")):
            name = urllib.parse.unquote(href.split("#", 1)[0].rsplit("/", 1)[-1])
            if not name.endswith(".whl"):
                continue
            _, version, _, wtags = parse_wheel_filename(name)
            score = min((rank[t] for t in wtags if t in rank), default=None)
            if score is None:
                continue
            digest = href.split("#sha256=", 1)[1] if "#sha256=" in href else ""
            key = (version, -score, name, digest)
            if best is None or key[:2] > best[:2]:
                best = key
        if best is None:
            raise SystemExit(f"no wheel of {project} in {page} installs on this Python")
        _, _, name, digest = best
        src = LOCAL_FILES / name
        if not src.exists():
            raise SystemExit(f"{src} is listed in the local index but missing")
        actual = sha256_file(src)
        if digest and digest != actual:
            raise SystemExit(f"{src}: sha256 {actual} does not match the index ({digest})")
        out.append(Dist(project, name, actual, _requires_python(src), src))
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def build_big_wheel(target: Path, size_mb: int) -> Dist:
    """A real, installable wheel with one stored (uncompressed) member of random bytes.

    Written in 1 MiB chunks, never held in memory; reused across runs (sidecar JSON).
    """
    name = f"{BIG_PROJECT}-1.0.0-py3-none-any.whl"
    path = target / name
    sidecar = target / (name + ".json")
    want = size_mb * 1024 * 1024
    if path.exists() and sidecar.exists():
        info = json.loads(sidecar.read_text())
        if info.get("payload") == want and path.stat().st_size == info.get("size"):
            return Dist(BIG_PROJECT, name, info["sha256"], ">=3.8", path)
    console.print(f"[dim]building {name} ({size_mb} MiB of random bytes, streamed)…[/]")
    tmp = path.with_suffix(".tmp")
    record: list[str] = []

    def digest_line(arcname: str, h: Any, size: int) -> None:
        b64 = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
        record.append(f"{arcname},sha256={b64},{size}")

    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        small = {
            f"{BIG_PROJECT}/__init__.py": b'"""Benchmark payload."""\n',
            f"{BIG_PROJECT}-1.0.0.dist-info/METADATA": (
                f"Metadata-Version: 2.1\nName: {BIG_PROJECT}\nVersion: 1.0.0\n"
                "Requires-Python: >=3.8\nSummary: benchmark payload (random bytes)\n"
            ).encode(),
            f"{BIG_PROJECT}-1.0.0.dist-info/WHEEL": (
                b"Wheel-Version: 1.0\nGenerator: stockade-bench\nRoot-Is-Purelib: true\n"
                b"Tag: py3-none-any\n"
            ),
        }
        for arc, data in small.items():
            zf.writestr(arc, data)
            digest_line(arc, hashlib.sha256(data), len(data))
        arc = f"{BIG_PROJECT}/blob.bin"
        h = hashlib.sha256()
        with zf.open(zipfile.ZipInfo(arc, (2024, 1, 1, 0, 0, 0)), "w", force_zip64=True) as out:
            left = want
            while left:
                chunk = os.urandom(min(1 << 20, left))
                h.update(chunk)
                out.write(chunk)
                left -= len(chunk)
        digest_line(arc, h, want)
        rec = f"{BIG_PROJECT}-1.0.0.dist-info/RECORD"
        zf.writestr(rec, "\n".join([*record, f"{rec},,"]) + "\n")
    os.replace(tmp, path)
    digest = sha256_file(path)
    sidecar.write_text(json.dumps({"payload": want, "size": path.stat().st_size, "sha256": digest}))
    return Dist(BIG_PROJECT, name, digest, ">=3.8", path)


def _page_html(project: str, dists: list[Dist]) -> str:
    links = []
    for d in dists:
        rp = (
            f' data-requires-python="{html.escape(d.requires_python)}"' if d.requires_python else ""
        )
        href = f"../../files/{d.filename}#sha256={d.sha256}"
        links.append(f'    <a href="{href}"{rp}>{d.filename}</a><br/>')
    body = "\n".join(links)
    return (
        '<!DOCTYPE html>\n<html>\n  <head>\n    <meta name="pypi:repository-version" '
        f'content="1.1">\n    <title>Links for {project}</title>\n  </head>\n  <body>\n'
        f"    <h1>Links for {project}</h1>\n{body}\n  </body>\n</html>\n"
    )


def _page_json(project: str, dists: list[Dist]) -> str:
    files = [
        {
            "filename": d.filename,
            "url": f"../../files/{d.filename}",
            "hashes": {"sha256": d.sha256},
            "requires-python": d.requires_python,
            "size": d.source.stat().st_size,
        }
        for d in dists
    ]
    versions = sorted({parse_wheel_filename(d.filename)[1].public for d in dists})
    doc = {"meta": {"api-version": "1.1"}, "name": project, "files": files, "versions": versions}
    return json.dumps(doc, indent=None, separators=(",", ":"))


def build_tree(dists: list[Dist]) -> None:
    """``TREE/simple/<p>/index.{html,json}``, ``TREE/files/*.whl``, ``TREE/packages/`` (flat)."""
    files = TREE / "files"
    packages = TREE / "packages"
    for d in (files, packages):
        d.mkdir(parents=True, exist_ok=True)
    for d in dists:
        for target in (files / d.filename, packages / d.filename):
            if d.project == BIG_PROJECT and target.parent == packages:
                continue
            if target.resolve() == d.source.resolve():
                continue
            if not target.exists() or target.stat().st_size != d.source.stat().st_size:
                target.unlink(missing_ok=True)
                try:
                    os.link(d.source, target)
                except OSError:
                    shutil.copyfile(d.source, target)
    by_project: dict[str, list[Dist]] = {}
    for d in dists:
        by_project.setdefault(canonicalize_name(d.project), []).append(d)
    simple = TREE / "simple"
    if simple.exists():
        shutil.rmtree(simple)
    for project, ds in by_project.items():
        page = simple / project
        page.mkdir(parents=True)
        (page / "index.html").write_text(_page_html(project, ds))
        (page / "index.json").write_text(_page_json(project, ds))
    names = sorted(by_project)
    (simple / "index.html").write_text(
        "<!DOCTYPE html>\n<html><head>"
        '<meta name="pypi:repository-version" content="1.1"><title>Simple index</title></head>'
        "<body>\n" + "\n".join(f'<a href="{n}/">{n}</a><br/>' for n in names) + "\n</body></html>\n"
    )
    (simple / "index.json").write_text(
        json.dumps({"meta": {"api-version": "1.1"}, "projects": [{"name": n} for n in names]})
    )


# -- nginx -------------------------------------------------------------------------------------

NGINX_CONF = """\
# Written by bench/run.py. A minimal static PEP 503/691 server.
worker_processes auto;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    types {{
        text/html html;
        application/vnd.pypi.simple.v1+json json;
        application/octet-stream whl;
    }}
    default_type application/octet-stream;
    # PEP 691 content negotiation: JSON when the client asks for it, else HTML.
    map $http_accept $simple_index {{
        default index.html;
        "~application/vnd\\.pypi\\.simple\\.v1\\+json" index.json;
    }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        autoindex off;
{auth}
        location /simple/ {{
            index $simple_index;
            add_header Vary Accept;
        }}
        location /files/ {{ }}
        location / {{ return 404; }}
    }}
}}
"""


def start_nginx(name: str, prefix: Path, htpasswd: Path | None) -> tuple[Proc, int]:
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "tmp").mkdir(exist_ok=True)
    port = free_port()
    auth = ""
    if htpasswd is not None:
        auth = f'        auth_basic "bench";\n        auth_basic_user_file {htpasswd};'
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, root=TREE, auth=auth))
    argv = [tool("nginx"), "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    argv += ["-g", "daemon off;"]
    proc = spawn(name, argv, clean_env())
    wait_http(f"http://127.0.0.1:{port}/", proc, timeout=15)
    return proc, port


# -- peers -------------------------------------------------------------------------------------


def ensure_venv(name: str, deadline: float) -> Path:
    """``bench/.peers/<name>``: a python3.11 venv with the peer installed from PyPI."""
    venv = PEERS / name
    wanted = PEER_PACKAGES[name]
    marker = venv / ".bench-installed"
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return venv
    py = shutil.which("python3.11")
    if py is None:
        raise Unavailable("python3.11 not found on PATH (needed to create the peer venv)")
    console.print(f"[dim]installing {' '.join(wanted)} into {venv} from PyPI…[/]")
    env = clean_env()
    if "PIP_CERT" in os.environ:
        env["PIP_CERT"] = os.environ["PIP_CERT"]
    timeout = max(30.0, min(300.0, deadline - time.monotonic()))
    if not (venv / "bin" / "python").exists():
        r = run_cmd([py, "-m", "venv", str(venv)], env, timeout=120)
        if r.returncode:
            raise Unavailable(f"venv creation failed: {r.stderr.strip()[-300:]}")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    r = run_cmd([*pip, "-q", "--index-url", PYPI, "-U", *wanted], env, timeout=timeout)
    if r.returncode:
        raise Unavailable(f"pip install {' '.join(wanted)} failed: {r.stderr.strip()[-300:]}")
    marker.write_text(json.dumps(wanted))
    return venv


def pkg_version(venv: Path, dist: str) -> str:
    r = run_cmd(
        [
            str(venv / "bin" / "python"),
            "-c",
            f"import importlib.metadata as m;print(m.version({dist!r}))",
        ],
        clean_env(),
        timeout=30,
    )
    return r.stdout.strip() or "?"


@dataclass
class Server:
    """A running server under test."""

    name: str
    page_url: str  # the hot project page
    index_url: str  # for pip, credentials embedded when needed
    headers: dict[str, str]  # auth headers for wrk/urllib
    auth: str
    version: str
    setup: str
    proc: Proc | None = None
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        if self.proc is not None:
            stop(self.proc)
        for fn in self.cleanup:
            with contextlib.suppress(Exception):
                fn()


@dataclass
class Ctx:
    args: argparse.Namespace
    tmp: Path
    upstream: str  # http://127.0.0.1:P/simple/
    user: str
    password: str
    htpasswd: Path
    deadline: float


def setup_nginx(ctx: Ctx) -> Server:
    proc, port = start_nginx("nginx", PEERS / "nginx", ctx.htpasswd)
    version = run_cmd([tool("nginx"), "-v"], clean_env(), 10).stderr.strip().split("/")[-1]
    return Server(
        "nginx",
        f"http://127.0.0.1:{port}/simple/{HOT_PROJECT}/",
        f"http://{ctx.user}:{ctx.password}@127.0.0.1:{port}/simple/",
        {"Authorization": basic(ctx.user, ctx.password)},
        "basic ({SHA} htpasswd)",
        version,
        "static tree, worker_processes auto, sendfile, autoindex off, access_log off, "
        "auth_basic; Accept-negotiated index.json/index.html",
        proc,
    )


def setup_stockade(ctx: Ctx) -> Server:
    if not STOCKADE_BIN.exists():
        raise Unavailable(f"{STOCKADE_BIN} missing (run `make venv`)")
    home = ctx.tmp / "stockade-home"
    env = clean_env(STOCKADE_HOME=str(home))
    steps = [
        [str(STOCKADE_BIN), "init", "--no-default-indexes"],
        [str(STOCKADE_BIN), "index", "create", "up", "--mirror", ctx.upstream],
        [str(STOCKADE_BIN), "token", "create", "--index", "up", "--scope", "read"],
    ]
    out = ""
    for argv in steps:
        r = run_cmd(argv, env, timeout=60)
        if r.returncode:
            raise Unavailable(f"`{' '.join(argv[1:4])}` failed: {(r.stderr or r.stdout)[-400:]}")
        out = r.stdout
    token = out.strip().splitlines()[-1].strip()
    ready = ctx.tmp / "stockade.port"
    proc = spawn(
        "stockade",
        [
            str(STOCKADE_BIN),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--workers",
            str(ctx.args.stockade_workers),
        ],
        {**env, "STOCKADE_READY_FILE": str(ready)},
    )
    t0 = time.monotonic()
    while not ready.exists():
        if not proc.alive():
            raise Unavailable(f"serve exited {proc.popen.returncode}: {proc.log_tail(8)}")
        if time.monotonic() - t0 > 30:
            raise Unavailable(f"no ready file after 30s: {proc.log_tail(8)}")
        time.sleep(0.05)
    port = int(ready.read_text())
    wait_http(f"http://127.0.0.1:{port}/health", proc)
    version = run_cmd([str(STOCKADE_BIN), "version"], env, 30).stdout.strip().splitlines()[-1]
    return Server(
        "stockade",
        f"http://127.0.0.1:{port}/pypi/up/simple/{HOT_PROJECT}/",
        f"http://__token__:{token}@127.0.0.1:{port}/pypi/up/simple/",
        {"Authorization": basic("__token__", token)},
        "basic (__token__, read token)",
        version,
        "`stockade init --no-default-indexes`; mirror index `up` -> local upstream; "
        f"read token; `stockade serve --workers {ctx.args.stockade_workers}` (embedded SQLite + "
        "local files; nginx likewise runs one worker per core)",
        proc,
    )


def setup_devpi(ctx: Ctx) -> Server:
    venv = ensure_venv("devpi", ctx.deadline)
    bin_ = venv / "bin"
    serverdir = ctx.tmp / "devpi-server"
    clientdir = ctx.tmp / "devpi-client"
    env = clean_env()
    root_pw = secrets.token_urlsafe(12)
    # --no-root-pypi: no root/pypi mirror of pypi.org is created, so nothing reaches pypi.org.
    r = run_cmd(
        [
            str(bin_ / "devpi-init"),
            "--serverdir",
            str(serverdir),
            "--no-root-pypi",
            "--root-passwd",
            root_pw,
        ],
        env,
        timeout=120,
    )
    if r.returncode:
        raise Unavailable(f"devpi-init failed: {(r.stderr or r.stdout)[-300:]}")
    port = free_port()
    proc = spawn(
        "devpi",
        [
            str(bin_ / "devpi-server"),
            "--serverdir",
            str(serverdir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env,
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/+api", proc, timeout=60)
    devpi = [str(bin_ / "devpi"), "--clientdir", str(clientdir)]
    for argv in (
        [*devpi, "use", base],
        [*devpi, "login", "root", "--password", root_pw],
        [*devpi, "index", "-c", "root/up", "type=mirror", f"mirror_url={ctx.upstream}"],
    ):
        r = run_cmd(argv, env, timeout=60)
        if r.returncode:
            stop(proc)
            raise Unavailable(f"`devpi {argv[3]}` failed: {(r.stderr or r.stdout)[-300:]}")
    return Server(
        "devpi",
        f"{base}/root/up/+simple/{HOT_PROJECT}/",
        f"{base}/root/up/+simple/",
        {},
        "none (no read auth in core devpi)",
        pkg_version(venv, "devpi-server"),
        "`devpi-init --no-root-pypi`; `devpi-server` (waitress, 50 threads default); "
        "`devpi index -c root/up type=mirror mirror_url=<local upstream>`",
        proc,
    )


def setup_pypiserver(ctx: Ctx) -> Server:
    venv = ensure_venv("pypiserver", ctx.deadline)
    port = free_port()
    proc = spawn(
        "pypiserver",
        [
            str(venv / "bin" / "pypi-server"),
            "run",
            "-p",
            str(port),
            "-i",
            "127.0.0.1",
            "-a",
            "download,list,update",
            "-P",
            str(ctx.htpasswd),
            "--disable-fallback",  # never redirect misses to pypi.org
            str(TREE / "packages"),
        ],
        clean_env(),
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/health", proc, timeout=60)
    return Server(
        "pypiserver",
        f"{base}/simple/{HOT_PROJECT}/",
        f"http://{ctx.user}:{ctx.password}@127.0.0.1:{port}/simple/",
        {"Authorization": basic(ctx.user, ctx.password)},
        "basic ({SHA} htpasswd, -a download,list,update)",
        pkg_version(venv, "pypiserver"),
        "`pypi-server run -p P -a download,list,update -P htpasswd --disable-fallback DIR`; "
        "pypiserver[passlib,cache] + waitress (server 'auto' -> waitress, backend cached-dir)",
        proc,
    )


def setup_proxpi(ctx: Ctx) -> Server:
    venv = ensure_venv("proxpi", ctx.deadline)
    port = free_port()
    cache = ctx.tmp / "proxpi-cache"
    cache.mkdir()
    env = clean_env(
        PROXPI_INDEX_URL=ctx.upstream,
        PROXPI_CACHE_DIR=str(cache),
        PROXPI_EXTRA_INDEX_URLS="",
    )
    proc = spawn(
        "proxpi",
        [
            str(venv / "bin" / "gunicorn"),
            "--preload",
            "--bind",
            f"127.0.0.1:{port}",
            "--threads",
            "2",
            *(["--no-control-socket"] if _gunicorn_has(venv, "--no-control-socket") else []),
            "--logger-class",
            "proxpi.server._GunicornLogger",
            "proxpi.server:app",
        ],
        env,
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/", proc, timeout=60)
    return Server(
        "proxpi",
        f"{base}/index/{HOT_PROJECT}/",
        f"{base}/index/",
        {},
        "none (proxpi has no auth)",
        pkg_version(venv, "proxpi"),
        "gunicorn --preload --threads 2 proxpi.server:app (its Docker entrypoint, minus the "
        "access log); PROXPI_INDEX_URL=<local upstream>",
        proc,
    )


def _gunicorn_has(venv: Path, flag: str) -> bool:
    """gunicorn ≥ 27 opens a control socket under ~/.gunicorn unless told not to."""
    r = run_cmd([str(venv / "bin" / "gunicorn"), "--help"], clean_env(), timeout=30)
    return flag in r.stdout


SETUP: dict[str, Callable[[Ctx], Server]] = {
    "nginx": setup_nginx,
    "stockade": setup_stockade,
    "devpi": setup_devpi,
    "pypiserver": setup_pypiserver,
    "proxpi": setup_proxpi,
}


# -- measurements ------------------------------------------------------------------------------

WRK_LUA = """\
wrk.method = "GET"
{headers}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_JSON {{\\"requests\\":%d,\\"duration_us\\":%d,\\"bytes\\":%d,\\"connect\\":%d," ..
    "\\"read\\":%d,\\"write\\":%d,\\"status\\":%d,\\"timeout\\":%d,\\"p50_us\\":%d," ..
    "\\"p90_us\\":%d,\\"p99_us\\":%d,\\"mean_us\\":%.1f,\\"max_us\\":%d}}\\n",
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
end
"""


def lua_script(path: Path, headers: dict[str, str]) -> Path:
    lines = [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    path.write_text(WRK_LUA.format(headers="\n".join(lines)))
    return path


def wrk(url: str, script: Path, conns: int, seconds: float) -> dict[str, Any]:
    threads = min(2, conns)
    argv = [tool("wrk"), f"-t{threads}", f"-c{conns}", f"-d{seconds:g}s", "--timeout", "5s"]
    argv += ["-s", str(script), url]
    r = run_cmd(argv, clean_env(), timeout=seconds + 30)
    m = re.search(r"^BENCH_JSON (\{.*\})$", r.stdout, re.MULTILINE)
    if r.returncode or not m:
        raise RuntimeError(f"wrk failed ({r.returncode}): {(r.stderr or r.stdout)[-300:]}")
    raw: dict[str, Any] = json.loads(m.group(1))
    secs = raw["duration_us"] / 1e6
    errors = raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return {
        "rps": raw["requests"] / secs if secs else 0.0,
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "mean_ms": raw["mean_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "requests": raw["requests"],
        "non_2xx_3xx": raw["status"],
        "socket_errors": errors,
        "threads": threads,
        "connections": conns,
        "seconds": secs,
    }


def probe(srv: Server, kind: str) -> dict[str, Any]:
    """One GET of the hot page (also warms proxies): status, content type, size."""
    accept = JSON_V1 if kind == "json" else HTML_ACCEPT
    status, headers, body = http_get(srv.page_url, {**srv.headers, "Accept": accept})
    ctype = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    return {"status": status, "content_type": ctype, "bytes": len(body), "body": body}


def prepare_pages(srv: Server, ctx: Ctx, res: dict[str, Any], wheel: str) -> dict[str, Path]:
    """Fetch the hot page as HTML and JSON (twice: the first warms a proxy's cache) and check it.

    Returns the wrk scripts of the kinds this server can be measured on; the others get an
    error cell saying why (HTTP status, or the content type served instead of JSON).
    """
    scripts = {}
    for kind in ("html", "json"):
        first = probe(srv, kind)  # fetch-through for proxies
        p = probe(srv, kind)  # now from cache
        ok_type = JSON_V1 if kind == "json" else "text/html"
        res["probe"][kind] = {k: v for k, v in p.items() if k != "body"}
        res["probe"][kind]["first_status"] = first["status"]
        if p["status"] != 200:
            snippet = p["body"][:200].decode("utf-8", "replace")
            reason = f"HTTP {p['status']}: {snippet.strip()}"
            for conns in (2, 8):
                res["cells"][f"{kind}@{conns}"] = {"error": reason}
            continue
        if not p["content_type"].startswith(ok_type):
            for conns in (2, 8):
                served = p["content_type"].split(";")[0] or "?"
                res["cells"][f"{kind}@{conns}"] = {"error": f"no {kind.upper()} (serves {served})"}
            continue
        if wheel.encode() not in p["body"]:
            res["notes"].append(f"{kind} page lacks {wheel}")
        headers = {**srv.headers, "Accept": ok_type}
        scripts[kind] = lua_script(ctx.tmp / f"{srv.name}-{kind}.lua", headers)
    return scripts


def run_cell(srv: Server, script: Path, conns: int, ctx: Ctx) -> dict[str, Any]:
    """Warm-up, then one measured wrk run; also CPU used by the server, wrk and everyone else."""
    if ctx.args.warmup > 0:
        wrk(srv.page_url, script, conns, ctx.args.warmup)
    pids = _descendants(srv.proc.pid) if srv.proc else []
    cpu0, busy0, kids0 = cpu_seconds(pids), busy_seconds(), children_cpu()
    cell = wrk(srv.page_url, script, conns, ctx.args.duration)
    cpu, busy = cpu_seconds(pids) - cpu0, busy_seconds() - busy0
    wrk_cpu = children_cpu() - kids0
    capacity = (os.cpu_count() or 1) * cell["seconds"]
    cell["server_cpu_s"] = cpu
    cell["server_cpu_us_per_req"] = 1e6 * cpu / max(cell["requests"], 1)
    cell["wrk_cpu_s"] = wrk_cpu
    # CPU used by everything else on the machine while this cell ran (noise).
    cell["foreign_cpu_share"] = max(0.0, busy - cpu - wrk_cpu) / capacity
    cell["loadavg_after"] = loadavg()
    return cell


def print_cell(name: str, key: str, cell: dict[str, Any], rep: str) -> None:
    flag = ""
    if cell["foreign_cpu_share"] > 0.10:
        flag += f"  [yellow](other processes used {cell['foreign_cpu_share']:.0%} CPU)[/]"
    if cell["non_2xx_3xx"] or cell["socket_errors"]:
        flag += f"  [red]{cell['non_2xx_3xx']} non-2xx, {cell['socket_errors']} socket errors[/]"
    console.print(
        f"  {name:<10} {key:<7}{rep} {cell['rps']:>9,.0f} req/s  "
        f"p50 {cell['p50_ms']:6.2f} ms  p99 {cell['p99_ms']:6.2f} ms{flag}"
    )


def _has_errors(cell: dict[str, Any]) -> bool:
    return bool(cell.get("non_2xx_3xx") or cell.get("socket_errors"))


def measure_pages(
    servers: dict[str, Server],
    scripts: dict[str, dict[str, Path]],
    ctx: Ctx,
    results: dict[str, Any],
) -> None:
    """Interleaved: each cell runs on every server back to back, so drifting background load
    on the machine hits all servers alike. With --repeat N the best run of each cell is kept."""
    args = ctx.args
    for rep in range(args.repeat):
        tag = f" #{rep + 1}" if args.repeat > 1 else ""
        for kind, conns in CELLS:
            key = f"{kind}@{conns}"
            for name, srv in servers.items():
                script = scripts[name].get(kind)
                if script is None:
                    continue
                res = results["servers"][name]
                check_budget(ctx, args.duration + args.warmup + 10)
                try:
                    cell = run_cell(srv, script, conns, ctx)
                except RuntimeError as exc:
                    res["cells"].setdefault(key, {"error": str(exc)})
                    continue
                print_cell(name, key, cell, tag)
                runs = res.setdefault("cell_runs", {}).setdefault(key, [])
                runs.append(cell)
                res["cells"][key] = max(runs, key=lambda c: (not _has_errors(c), c["rps"]))


def pip_argv(ctx: Ctx, index_url: str, target: Path) -> list[str]:
    py = PEERS / "client" / "bin" / "python"
    return [
        str(py),
        "-m",
        "pip",
        "install",
        "--isolated",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--no-input",
        "-q",
        "--index-url",
        index_url,
        "--target",
        str(target),
        *PROJECTS,
    ]


def measure_pip(srv: Server, ctx: Ctx, res: dict[str, Any]) -> None:
    runs = ctx.args.pip_runs
    check_budget(ctx, 20 * (runs + 1))
    target = ctx.tmp / f"pip-{srv.name}"
    argv = pip_argv(ctx, srv.index_url, target)
    env = clean_env()
    hyperfine = tool("hyperfine")
    # First run warms the proxy's caches (pages and files); its time is recorded but not scored.
    shutil.rmtree(target, ignore_errors=True)
    t0 = time.perf_counter()
    r = run_cmd(argv, env, timeout=180)
    cold = time.perf_counter() - t0
    if r.returncode:
        res["pip"] = {"error": f"pip exited {r.returncode}: {redact(r.stderr.strip()[-400:])}"}
        return
    installed = sorted(p.name for p in target.glob("*.dist-info"))
    times: list[float]
    if hyperfine:
        out_json = ctx.tmp / f"hyperfine-{srv.name}.json"
        cmd = shlex.join(argv)
        hf = [
            hyperfine,
            "--runs",
            str(runs),
            "--prepare",
            f"rm -rf {shlex.quote(str(target))}",
            "--style",
            "none",
            "--export-json",
            str(out_json),
            cmd,
        ]
        r = run_cmd(hf, env, timeout=60 * runs + 30)
        if r.returncode:
            res["pip"] = {"error": f"hyperfine: {redact(r.stderr.strip()[-400:])}"}
            return
        times = json.loads(out_json.read_text())["results"][0]["times"]
        timer = f"hyperfine {runs} runs"
    else:
        times = []
        for _ in range(runs):
            shutil.rmtree(target, ignore_errors=True)
            t0 = time.perf_counter()
            r = run_cmd(argv, env, timeout=180)
            times.append(time.perf_counter() - t0)
            if r.returncode:
                res["pip"] = {"error": f"pip exited {r.returncode}: {redact(r.stderr[-400:])}"}
                return
        timer = f"perf_counter {runs} runs"
    shutil.rmtree(target, ignore_errors=True)
    res["pip"] = {
        "median_s": statistics.median(times),
        "times_s": times,
        "first_run_s": cold,
        "tool": timer,
        "installed": installed,
    }
    console.print(
        f"  {srv.name:<10} pip     median {statistics.median(times):.3f} s "
        f"(runs {', '.join(f'{t:.2f}' for t in times)}; first {cold:.2f} s)"
    )


def redact(text: str) -> str:
    return re.sub(r"(//[^:/@\s]+:)[^@\s]+@", r"\1***@", text)


# -- memory while streaming --------------------------------------------------------------------


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        ppid = int(text.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(stat.parent.name))
    out, todo = [pid], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime of these processes (their threads included), in seconds."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / ticks


def busy_seconds() -> float:
    """Non-idle CPU time of the whole machine (all cpus), from /proc/stat."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            continue
    return total


class Sampler(threading.Thread):
    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pids = _descendants(pid)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.monotonic(), rss_kib(self.pids)))
            self._halt.wait(self.interval)

    def halt(self) -> None:
        self._halt.set()
        self.join()

    def window(self, start: float, end: float) -> list[int]:
        return [kib for t, kib in self.samples if start <= t <= end]


def stream_download(url: str, headers: dict[str, str], expect_sha: str) -> dict[str, Any]:
    req = urllib.request.Request(url, headers=headers)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    h = hashlib.sha256()
    n = 0
    t0 = time.perf_counter()
    try:
        with opener.open(req, timeout=120) as resp:
            status = resp.status
            while chunk := resp.read(1 << 20):
                h.update(chunk)
                n += len(chunk)
    except urllib.error.HTTPError as exc:
        return {"status": exc.code, "error": exc.read()[:300].decode("utf-8", "replace")}
    secs = time.perf_counter() - t0
    return {
        "status": status,
        "bytes": n,
        "seconds": secs,
        "mib_per_s": n / (1 << 20) / secs if secs else 0.0,
        "sha256_ok": h.hexdigest() == expect_sha,
    }


def measure_memory(srv: Server, big: Dist, ctx: Ctx) -> dict[str, Any]:
    assert srv.proc is not None
    check_budget(ctx, 60)
    page = srv.page_url.replace(f"/simple/{HOT_PROJECT}/", f"/simple/{BIG_PROJECT}/")
    status, _, body = http_get(page, {**srv.headers, "Accept": JSON_V1})
    if status != 200:
        return {"error": f"page {page}: HTTP {status} {body[:200]!r}"}
    files = json.loads(body)["files"]
    url = urllib.parse.urljoin(page, files[0]["url"])
    sampler = Sampler(srv.proc.pid)
    sampler.start()
    out: dict[str, Any] = {"file_bytes": big.source.stat().st_size, "interval_ms": 50}
    try:
        for phase in ("uncached", "cached"):
            time.sleep(1.0)
            t_dl = time.monotonic()
            before = sampler.window(t_dl - 1.0, t_dl)
            dl = stream_download(url, srv.headers, big.sha256)
            t_end = time.monotonic()
            time.sleep(0.3)
            during = sampler.window(t_dl, t_end + 0.3)
            base = statistics.median(before) if before else rss_kib(sampler.pids)
            peak = max(during, default=base)
            dl.update(
                baseline_mib=base / 1024,
                peak_mib=peak / 1024,
                delta_mib=(peak - base) / 1024,
                samples=len(during),
            )
            out[phase] = dl
            if "error" in dl:
                console.print(f"  stockade   memory  {phase}: HTTP {dl['status']} {dl['error']}")
                continue
            console.print(
                f"  stockade   memory  {phase:<8} {dl['bytes'] / (1 << 20):.0f} MiB in "
                f"{dl['seconds']:.2f} s ({dl['mib_per_s']:.0f} MiB/s), RSS base "
                f"{base / 1024:.1f} MiB, peak {peak / 1024:.1f} MiB, "
                f"delta {(peak - base) / 1024:+.1f} MiB, sha256 ok={dl['sha256_ok']}"
            )
    finally:
        sampler.halt()
    return out


# -- budget ------------------------------------------------------------------------------------


def check_budget(ctx: Ctx, needed: float) -> None:
    if time.monotonic() + needed > ctx.deadline:
        raise BudgetExceeded(f"not enough of the {ctx.args.budget:.0f}s budget left")


def _on_alarm(signum: int, frame: Any) -> None:
    raise BudgetExceeded("hard time limit reached")


def _on_term(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


# -- report ------------------------------------------------------------------------------------


def fmt_cell(cell: dict[str, Any] | None, key: str, spec: str, short: bool = False) -> str:
    if not cell:
        return "—"
    if "error" in cell:
        return "n/a" if short else f"[yellow]{cell['error'][:40]}[/]"
    text = format(cell[key], spec)
    if cell.get("non_2xx_3xx") or cell.get("socket_errors"):
        text += " [red](errors)[/]"
    return text


def evaluate(results: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    servers = results["servers"]

    def cell(name: str, key: str) -> dict[str, Any] | None:
        c = servers.get(name, {}).get("cells", {}).get(key)
        if not c or "error" in c or c.get("non_2xx_3xx") or c.get("socket_errors"):
            return None
        return c

    targets: list[dict[str, Any]] = []

    def noise(*cells: dict[str, Any] | None) -> str:
        share = max((c.get("foreign_cpu_share", 0.0) for c in cells if c), default=0.0)
        return f"noisy: other processes used {share:.0%} CPU" if share > 0.10 else ""

    def add(name: str, measured: str, goal: str, ok: bool | None, why: str = "") -> None:
        verdict = "N/A" if ok is None else ("PASS" if ok else "MISS")
        targets.append(
            {"target": name, "measured": measured, "goal": goal, "verdict": verdict, "why": why}
        )

    for kind in ("html", "json"):
        key = f"{kind}@8"
        s = cell("stockade", key)
        peers = {p: cell(p, key) for p in PEER_PROXIES if p in servers}
        live = {p: c["rps"] for p, c in peers.items() if c}
        label = f"{kind.upper()} rps @8 vs best of devpi/pypiserver/proxpi"
        if s and live:
            best = max(live, key=lambda p: live[p])
            ratio = s["rps"] / live[best]
            why = noise(s, peers[best])
            add(label, f"{ratio:.2f}x ({best} {live[best]:,.0f})", "≥ 3x", ratio >= 3, why)
        else:
            add(label, "—", "≥ 3x", None, "no stockade or no peer number")
        n = cell("nginx", key)
        label = f"{kind.upper()} rps @8 vs nginx"
        if s and n:
            ratio = s["rps"] / n["rps"]
            add(label, f"{ratio:.0%} ({n['rps']:,.0f})", "≥ 30%", ratio >= 0.30, noise(s, n))
        else:
            add(label, "—", "≥ 30%", None, "missing stockade or nginx number")
        label = f"Stockade {kind.upper()} p99 @8"
        if s:
            add(label, f"{s['p99_ms']:.2f} ms", "< 10 ms", s["p99_ms"] < 10, noise(s))
        else:
            add(label, "—", "< 10 ms", None, "no stockade number")
    sp = servers.get("stockade", {}).get("pip", {})
    np_ = servers.get("nginx", {}).get("pip", {})
    label = "warm pip install vs nginx"
    if "median_s" in sp and "median_s" in np_:
        ratio = sp["median_s"] / np_["median_s"]
        add(
            label,
            f"{sp['median_s']:.2f} s vs {np_['median_s']:.2f} s ({ratio - 1:+.0%})",
            "≤ +15%",
            ratio <= 1.15,
        )
    else:
        add(label, "—", "≤ +15%", None, "missing stockade or nginx pip time")
    mem = results.get("memory") or {}
    goal = f"delta < {args.mem_target_mb} MiB"
    for phase in ("uncached", "cached"):
        label = f"RSS delta, {args.big_mb} MB stream ({phase})"
        m = mem.get(phase)
        if m and "delta_mib" in m:
            ok = m["delta_mib"] < args.mem_target_mb and m["status"] == 200 and m["sha256_ok"]
            add(label, f"{m['delta_mib']:+.1f} MiB (peak {m['peak_mib']:.0f})", goal, ok)
        else:
            why = (m or {}).get("error") or mem.get("error") or mem.get("skipped") or "not run"
            add(label, "—", goal, None, str(why)[:80])
    return targets


def report(results: dict[str, Any], args: argparse.Namespace) -> None:
    table = Table(
        title=f"Hot page `{HOT_PROJECT}` and warm pip install — {results['meta']['host']}"
    )
    for col, justify in [
        ("server", "left"),
        ("auth", "left"),
        ("HTML rps @2", "right"),
        ("HTML rps @8", "right"),
        ("JSON rps @8", "right"),
        ("p99 ms @8 (HTML/JSON)", "right"),
        ("CPU µs/req @8", "right"),
        ("warm pip install s", "right"),
    ]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for name, srv in results["servers"].items():
        if srv.get("status") != "ok":
            table.add_row(name, "", f"[yellow]{srv.get('status')}[/]", "", "", "", "", "")
            continue
        cells = srv["cells"]
        pip = srv.get("pip", {})
        pip_s = (
            f"{pip['median_s']:.2f}"
            if "median_s" in pip
            else f"[yellow]{pip.get('error', '—')[:40]}[/]"
        )
        p99 = " / ".join(
            fmt_cell(cells.get(k), "p99_ms", ".2f", short=True) for k in ("html@8", "json@8")
        )
        table.add_row(
            f"{name} {srv.get('version', '')}",
            srv.get("auth", "").split(" ")[0],
            fmt_cell(cells.get("html@2"), "rps", ",.0f"),
            fmt_cell(cells.get("html@8"), "rps", ",.0f"),
            fmt_cell(cells.get("json@8"), "rps", ",.0f"),
            p99,
            fmt_cell(cells.get("html@8"), "server_cpu_us_per_req", ",.0f", short=True),
            pip_s,
        )
    console.print()
    console.print(table)
    mem = results.get("memory")
    if mem and any(k in mem for k in ("uncached", "cached")):
        mt = Table(title=f"Stockade RSS while a {args.big_mb} MB wheel streams through its mirror")
        for col in ("download", "status", "MiB/s", "baseline MiB", "peak MiB", "delta MiB"):
            mt.add_column(col, justify="left" if col == "download" else "right")
        for phase in ("uncached", "cached"):
            m = mem.get(phase, {})
            if "delta_mib" not in m:
                mt.add_row(phase, str(m.get("status", "—")), m.get("error", "")[:40], "", "", "")
                continue
            mt.add_row(
                phase + ("" if m["sha256_ok"] else " [red](sha256 mismatch)[/]"),
                str(m["status"]),
                f"{m['mib_per_s']:.0f}",
                f"{m['baseline_mib']:.1f}",
                f"{m['peak_mib']:.1f}",
                f"{m['delta_mib']:+.1f}",
            )
        console.print(mt)
    tt = Table(title="Targets")
    for col in ("target", "measured", "goal", "verdict"):
        tt.add_column(col)
    colors = {"PASS": "green", "MISS": "red", "N/A": "yellow"}
    for t in results["targets"]:
        verdict = f"[{colors[t['verdict']]}]{t['verdict']}[/]"
        if t["why"]:
            verdict += f" ({t['why']})"
        tt.add_row(t["target"], t["measured"], t["goal"], verdict)
    console.print(tt)


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(SERVERS), help=f"comma list of {SERVERS}")
    ap.add_argument("--skip-memory", action="store_true", help="skip the 300 MB stream test")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk cell")
    ap.add_argument("--warmup", type=float, default=1.0, help="wrk warm-up seconds per cell")
    ap.add_argument("--repeat", type=int, default=2, help="runs per wrk cell (best kept)")
    ap.add_argument("--pip-runs", type=int, default=3, help="timed warm pip installs")
    ap.add_argument("--big-mb", type=int, default=300, help="size of the streamed wheel (MiB)")
    ap.add_argument("--mem-target-mb", type=float, default=64.0, help="RSS delta target (MiB)")
    ap.add_argument("--budget", type=float, default=570.0, help="hard limit for the run (s)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (homes, caches)")
    ap.add_argument(
        "--stockade-workers",
        type=int,
        default=os.cpu_count() or 1,
        help="stockade serve --workers (default: one per core, as nginx's auto)",
    )
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SERVERS))
    if unknown:
        ap.error(f"unknown server(s) {unknown}; choose from {SERVERS}")
    args.only = [s for s in SERVERS if s in only]
    return args


def tool(name: str) -> Any:
    """A program on PATH or in the sbin directories (nginx lives in /usr/sbin)."""
    extra = os.pathsep.join(["/usr/local/sbin", "/usr/sbin", "/sbin"])
    return shutil.which(name) or shutil.which(name, path=extra)


def preflight() -> None:
    missing = [name for name in ("wrk", "nginx") if tool(name) is None]
    if missing:
        console.print(
            f"[red]missing {' and '.join(missing)}[/]: the benchmark drives load with wrk and "
            f"uses nginx as the local upstream and static baseline.\nInstall them with:\n\n"
            f"    {INSTALL_HINT}\n"
        )
        raise SystemExit(2)
    if tool("hyperfine") is None:
        console.print("[dim]hyperfine not found: timing pip with time.perf_counter instead[/]")


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    old = signal.signal(signal.SIGALRM, _on_alarm)
    old_term = signal.signal(signal.SIGTERM, _on_term)
    signal.alarm(int(seconds) + 1)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        signal.signal(signal.SIGTERM, old_term)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preflight()
    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results: dict[str, Any] = {
        "meta": {
            "started": stamp,
            "host": f"{socket.gethostname()}, {os.cpu_count()} cpus",
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "args": dict(vars(args)),
            "projects": PROJECTS,
            "hot_project": HOT_PROJECT,
            "loadavg_start": loadavg(),
        },
        "servers": {},
        "memory": None,
        "targets": [],
    }
    load = loadavg()
    if load and load[0] > 0.5 * (os.cpu_count() or 1):
        console.print(
            f"[yellow]load average {load[0]:.2f} on {os.cpu_count()} cpus before starting: other "
            "processes compete for the CPU, so numbers will be noisy (recorded in the JSON)[/]"
        )
    tmp = Path(tempfile.mkdtemp(prefix="stockade-bench-"))
    upstream_proc: Proc | None = None
    try:
        with time_limit(args.budget):
            deadline = started + args.budget - 15  # leave time to report
            dists = pick_local_wheels()
            results["meta"]["wheels"] = [d.filename for d in dists]
            big = None
            if not args.skip_memory and "stockade" in args.only:
                big = build_big_wheel(TREE / "files", args.big_mb)
            build_tree(dists + ([big] if big else []))
            user, password = "bench", secrets.token_urlsafe(16)
            htpasswd = PEERS / "htpasswd"
            digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
            htpasswd.write_text(f"{user}:{{SHA}}{digest}\n")
            htpasswd.chmod(0o644)  # nginx workers run as nobody when started as root
            upstream_proc, up_port = start_nginx("upstream", PEERS / "nginx-upstream", None)
            upstream = f"http://127.0.0.1:{up_port}/simple/"
            results["meta"]["upstream"] = upstream
            ctx = Ctx(args, tmp, upstream, user, password, htpasswd, deadline)
            ensure_venv("client", deadline)
            servers: dict[str, Server] = {}
            scripts: dict[str, dict[str, Path]] = {}
            wheel = next(d for d in dists if d.project == HOT_PROJECT).filename
            try:
                for name in args.only:
                    res: dict[str, Any] = {"cells": {}, "probe": {}, "notes": []}
                    results["servers"][name] = res
                    try:
                        check_budget(ctx, 30)
                        srv = SETUP[name](ctx)
                        servers[name] = srv
                        res.update(status="ok", version=srv.version, auth=srv.auth)
                        res.update(setup=srv.setup, page_url=srv.page_url)
                        scripts[name] = prepare_pages(srv, ctx, res, wheel)
                    except Unavailable as exc:
                        res["status"] = f"unavailable: {exc}"
                        console.print(f"  [yellow]{name}: unavailable: {exc}[/]")
                        continue
                    except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
                        res["status"] = f"failed: {type(exc).__name__}: {exc}"
                        console.print(f"  [red]{name}: failed to start: {exc}[/]")
                        if name in servers:
                            servers.pop(name).close()
                        continue
                console.print(
                    f"[bold]Stockade bench[/]: {', '.join(servers)}; {args.duration:g}s/cell after "
                    f"{args.warmup:g}s warm-up, interleaved; upstream {upstream}"
                )
                measure_pages(servers, scripts, ctx, results)
                for name, srv in servers.items():
                    measure_pip(srv, ctx, results["servers"][name])
                stockade = servers.get("stockade")
                if stockade is not None and big is not None:
                    try:
                        results["memory"] = measure_memory(stockade, big, ctx)
                    except (OSError, RuntimeError, ValueError, KeyError) as exc:
                        results["memory"] = {"error": f"{type(exc).__name__}: {exc}"}
                elif stockade is not None:
                    results["memory"] = {"skipped": "--skip-memory"}
            except BudgetExceeded as exc:
                console.print(f"  [yellow]stopped early: {exc}[/]")
                results["meta"]["aborted"] = str(exc)
            finally:
                for name, srv in servers.items():
                    if srv.proc is not None and name == "stockade":
                        results["servers"][name]["log_tail"] = srv.proc.log_tail(30)
                    srv.close()
            for name in args.only:
                results["servers"].setdefault(name, {"status": "skipped: time budget"})
    except (BudgetExceeded, KeyboardInterrupt) as exc:
        why = str(exc) or type(exc).__name__
        console.print(f"[red]aborted: {why}[/]")
        results["meta"]["aborted"] = why
    finally:
        stop_all()
        if upstream_proc is not None:
            stop(upstream_proc)
        if args.keep:
            console.print(f"[dim]kept {tmp}[/]")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
    results["meta"]["loadavg_end"] = loadavg()
    results["targets"] = evaluate(results, args)
    report(results, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    console.print(
        f"raw results: {out.relative_to(REPO)}  (run took {results['meta']['elapsed_s']}s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``stockade init``, ``serve``, ``db upgrade`` and ``audit list``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from stockade.cli.common import JsonOpt, err, print_json, run
from stockade.core.auth import ALL_INDEXES
from stockade.db.engine import upgrade
from stockade.errors import StockadeError
from stockade.services import repo
from stockade.services.runtime import Runtime
from stockade.settings import CONFIG_NAME, DEFAULT_TOML, Settings
from stockade.types import IndexKind, Scope

DEFAULT_UPSTREAM = "https://pypi.org/simple/"
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


def paste_lines(base: str, token: str) -> list[str]:
    host = base.split("://", 1)[1]
    scheme = base.split("://", 1)[0]
    return [
        f"pip install requests --index-url {scheme}://__token__:{token}@{host}/pypi/main/simple/",
        f"uv pip install requests --index-url {scheme}://__token__:{token}@{host}/pypi/main/simple/",
        f"twine upload --repository-url {base}/pypi/internal/ -u __token__ -p {token} dist/*",
    ]


def init(
    upstream: str = typer.Option(
        DEFAULT_UPSTREAM, "--upstream", help="Upstream simple index of the default 'pypi' mirror."
    ),
    no_default_indexes: bool = typer.Option(
        False,
        "--no-default-indexes",
        help="Create no indexes (default: pypi mirror, internal private, main virtual).",
    ),
    json: bool = JsonOpt,
) -> None:
    """Create STOCKADE_HOME, its config and database; print the first admin token (last line)."""
    s = Settings.load()
    s.home.mkdir(parents=True, exist_ok=True)
    cfg = s.home / CONFIG_NAME
    if not cfg.exists():
        cfg.write_text(DEFAULT_TOML)
    upgrade(s.database_url)

    async def go(r: Runtime) -> tuple[str | None, list[str]]:
        async with r.sessions() as sess:
            existing = await repo.list_tokens(sess)
        created: list[str] = []
        if not no_default_indexes and not await r.indexes.list():
            await r.indexes.create(
                "pypi",
                IndexKind.MIRROR,
                upstream_url=upstream,
                description="mirror of the public index",
            )
            await r.indexes.create(
                "internal",
                IndexKind.PRIVATE,
                description="company packages (upload with twine)",
            )
            await r.indexes.create(
                "main",
                IndexKind.VIRTUAL,
                members=["internal", "pypi"],
                description="internal first, then the mirror",
            )
            created = ["pypi", "internal", "main"]
        if existing:
            return None, created
        secret, _ = await r.tokens.create(
            index=ALL_INDEXES, scope=Scope.ADMIN, note="first admin token (stockade init)"
        )
        await r.audit.flush()
        r.changed()
        return secret, created

    token, created = run(go, s)
    base = f"http://{s.host}:{s.port}"
    if json:
        print_json(
            {
                "home": str(s.home),
                "database_url": _safe(s.database_url),
                "indexes_created": created,
                "token": token,
            }
        )
        return
    typer.echo(f"Stockade home: {s.home}")
    if created:
        typer.echo(f"created indexes: {', '.join(created)} (main = internal + pypi)")
    if token is None:
        typer.echo(
            "already initialized: no new admin token (create one with "
            "`stockade token create --index '*' --scope admin`)"
        )
        return
    typer.echo("\nready-to-paste lines (after `stockade serve`):")
    for line in paste_lines(base, token):
        typer.echo(f"  {line}")
    typer.echo("\nfirst admin token (valid on every index; store it now, it is not shown again):")
    typer.echo(token)


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def serve(
    host: str = typer.Option(None, "--host", help="Address to bind (default from settings)."),
    port: int = typer.Option(None, "--port", help="Port (default 8080; 0 picks a free one)."),
    workers: int = typer.Option(
        1, "--workers", min=1, help="Server processes (e.g. one per core); caches are per process."
    ),
    no_worker: bool = typer.Option(
        False,
        "--no-worker",
        help="Run no job worker in the server processes (procrastinate queue): run "
        "`stockade worker` elsewhere.",
    ),
) -> None:
    """Run the server (embedded default: SQLite and a local folder under STOCKADE_HOME)."""
    import uvicorn

    s = Settings.load(host=host, port=port)
    if not s.config_path.exists():
        raise StockadeError(
            f"{s.home} is not initialized", "run `stockade init` (or `make run`) first"
        )
    if s.database_url.startswith("sqlite"):
        upgrade(s.database_url)
    from stockade.adapters.storage import open_store

    open_store(s.storage_url, s).prepare()  # a missing bucket fails here, with a hint
    bound_port = s.port or _free_port(s.host)
    logging.basicConfig(level=s.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    base = f"http://{s.host}:{bound_port}"
    err.print(f"Stockade serving on {base}  (home {s.home}, {workers} worker(s))", highlight=False)
    err.print(
        f"  pip install requests --index-url "
        f"http://__token__:$STOCKADE_TOKEN@{s.host}:{bound_port}/pypi/main/simple/",
        highlight=False,
        markup=False,
    )
    ready_file = os.environ.get("STOCKADE_READY_FILE")
    if ready_file:
        _announce_when_ready(base, bound_port, Path(ready_file))
    # The app is built by a factory in each worker from the same environment (STOCKADE_HOME…).
    os.environ["STOCKADE_HOME"] = str(s.home)
    if no_worker:
        os.environ["STOCKADE_JOB_WORKER"] = "false"
    uvicorn.run(
        "stockade.web.app:app_from_env",
        factory=True,
        host=s.host,
        port=bound_port,
        workers=workers,
        log_level=s.log_level,
        access_log=s.access_log,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        timeout_keep_alive=30,
        proxy_headers=True,
        forwarded_allow_ips=s.forwarded_allow_ips,
        server_header=False,
    )


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _announce_when_ready(base: str, port: int, path: Path) -> None:
    """Write the port to ``path`` once /health answers (tests and benchmarks wait on it)."""
    import threading
    import time

    import httpx

    def poll() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    tmp = path.with_name(path.name + ".tmp")
                    tmp.write_text(str(port))
                    os.replace(tmp, path)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)

    threading.Thread(target=poll, daemon=True, name="ready-file").start()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply database migrations (run once per deployment, before starting new servers)."""
    s = Settings.load()
    upgrade(s.database_url)
    typer.echo("database is at the latest schema")

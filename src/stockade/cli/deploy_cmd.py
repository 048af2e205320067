"""``stockade deploy nginx``: the nginx front of several Stockade processes."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import typer

from stockade.deploy import ACCEL_PREFIX, NginxConfig
from stockade.errors import InvalidRequest
from stockade.settings import Settings

app = typer.Typer(help="Configuration for a scaled deployment.", no_args_is_help=True)


@app.command("nginx")
def nginx(
    backend: list[str] = typer.Option(
        ..., "--backend", help="HOST:PORT of a `stockade serve` process (repeat for each)."
    ),
    listen: str = typer.Option("127.0.0.1:8080", "--listen", help="Address nginx listens on."),
    prefix: Path = typer.Option(
        Path("/var/lib/stockade-nginx"),
        "--prefix",
        help="Folder for nginx's pid, log and temp files (and nginx.conf with --write).",
    ),
    accel: bool = typer.Option(
        False,
        "--accel",
        help="nginx sends stored files itself from this home's blob folder (local storage "
        'only); set accel_redirect = "' + ACCEL_PREFIX + '" for every Stockade process.',
    ),
    user: str = typer.Option(
        None,
        "--user",
        help="User nginx's workers run as; with --accel the one Stockade runs as (blobs are "
        "readable by their owner only).",
    ),
    foreground: bool = typer.Option(False, "--foreground", help="daemon off (for supervisors)."),
    write: bool = typer.Option(
        False, "--write", help="Write PREFIX/nginx.conf and its folders instead of printing."
    ),
) -> None:
    """Print (or write) an nginx configuration that spreads requests over Stockade processes,
    retries idempotent requests on another process when one is down, and streams downloads."""
    blobs = None
    if accel:
        url = Settings.load().storage_url
        parsed = urlparse(url)
        if parsed.scheme not in ("file", ""):
            raise InvalidRequest(
                f"--accel needs local storage, and storage_url is {url}",
                "with S3, turn on storage_presign_downloads instead",
            )
        blobs = Path(parsed.path if parsed.scheme else url).resolve()
    cfg = NginxConfig(
        backends=backend,
        listen=listen,
        prefix=prefix.resolve(),
        blobs=blobs,
        foreground=foreground,
        user=user,
    )
    try:
        text = cfg.render()
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from exc
    if not write:
        typer.echo(text, nl=False)
        return
    path = cfg.write()
    typer.echo(f"wrote {path}")
    typer.echo(f"start it:  nginx -c {path} -p {cfg.prefix}")
    if accel:
        typer.echo(f'and set in every process: accel_redirect = "{ACCEL_PREFIX}"')

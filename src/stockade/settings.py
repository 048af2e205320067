"""Settings: one frozen object, from ``$STOCKADE_HOME/stockade.toml`` overlaid with ``STOCKADE_*``.

Loaded once at start (``Settings.load()``), never at import time. Precedence, highest first:
explicit overrides (CLI flags) > environment ``STOCKADE_<KEY>`` > ``stockade.toml`` > defaults.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stockade.errors import ConfigError

CONFIG_NAME = "stockade.toml"


def _parse_size(value: str | int) -> int:
    """``"300MB"``/``"2GiB"``/``123`` → bytes."""
    if isinstance(value, int):
        return value
    text = value.strip().upper().replace("IB", "B")
    units = {"KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4, "B": 1}
    for suffix, mult in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)].strip()) * mult)
    return int(text)


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting Stockade reads; see ``docs/configuration.md`` for each one."""

    home: Path
    database_url: str
    storage_url: str
    host: str = "127.0.0.1"
    port: int = 8080
    # Seconds a mirrored project page is fresh before it is revalidated upstream.
    page_ttl: int = 600
    upstream_timeout: float = 30.0
    # Caps on bytes from outside.
    max_upload_size: int = 1024**3
    max_file_size: int = 8 * 1024**3
    max_page_size: int = 64 * 1024**2
    # Files up to this size are fetched whole before the first byte is sent, so a digest
    # mismatch is a clean 502; larger ones stream while written (mismatch aborts the stream).
    buffer_below: int = 16 * 1024**2
    # Seconds a request waits for another server process that is fetching the same file from
    # upstream before fetching it itself (clients time out if no byte comes for ~15 s).
    fetch_wait: float = 10.0
    # Behind nginx (`stockade deploy nginx --blobs DIR`): answer downloads of stored files with
    # X-Accel-Redirect to this internal location and let nginx send the bytes ("" = off).
    accel_redirect: str = ""
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (the audit log records
    # the real client): comma-separated addresses, or "*".
    forwarded_allow_ips: str = "127.0.0.1"
    # Extra CA certificates (PEM) to trust for upstreams, on top of the system store.
    ca_bundle: str | None = None
    # Vulnerability feed: OSV export to download, and how often the server syncs it (seconds;
    # 0 = never: run `stockade vulndb sync` from cron instead).
    vulndb_url: str = "https://osv-vulnerabilities.storage.googleapis.com/PyPI/all.zip"
    vulndb_sync_interval: int = 0
    # Vulnerability response: after a feed sync or import brings a new or changed advisory
    # affecting versions already downloaded, an alert (JSON POST) goes to the webhook of each
    # downloading team ([alert_team_webhooks] team = "https://…") or else to alert_webhook.
    alert_webhook: str | None = None
    alert_team_webhooks: dict[str, str] = field(default_factory=dict)
    # Signed indexes (TUF): seconds a timestamp is valid (re-signed when half is gone) and how
    # often each process checks for expiring metadata (0 = never: `stockade tuf refresh`).
    tuf_timestamp_expiry: int = 86400
    tuf_refresh_interval: int = 60
    # Signing keys (audit checkpoints, TUF online roles): every process of a deployment must
    # use the same ones ("" = STOCKADE_HOME/keys). Mount a shared secret folder when scaled.
    keys_dir: str = ""
    # Object storage, when storage_url = "s3://BUCKET[/PREFIX]" (docs/configuration.md, "S3
    # storage"). Unset keys and region fall back to boto3's chain (AWS_ACCESS_KEY_ID…).
    storage_endpoint_url: str | None = None
    storage_region: str | None = None
    storage_access_key: str | None = None
    storage_secret_key: str | None = field(default=None, repr=False)  # never in logs
    storage_addressing_style: str | None = None  # path|virtual|auto; unset: path if endpoint
    storage_presign_downloads: bool = False  # downloads answer 302 to a presigned S3 URL
    storage_presign_expiry: int = 300  # seconds a presigned URL is valid
    storage_create_bucket: bool = False  # create a missing bucket at start instead of failing
    storage_multipart_threshold: int = 16 * 1024**2  # uploads above this size use multipart
    # Background jobs (scans, vulnerability syncs, environment re-evaluation, TUF): "auto" runs
    # them on procrastinate when database_url is PostgreSQL, in-process otherwise; or force
    # "procrastinate" or "inprocess". A job that raises is retried job_retries times, waiting
    # job_retry_wait seconds, doubled each time, then marked failed (`stockade jobs list`).
    job_queue: str = "auto"
    # Whether `stockade serve` runs a worker for the procrastinate queue in each process
    # (`serve --no-worker` sets it false; then run `stockade worker` somewhere).
    job_worker: bool = True
    job_concurrency: int = 4
    job_retries: int = 3
    job_retry_wait: float = 10.0
    job_keep_days: int = 7
    # Audit retention: events older than this many days are archived daily to storage as
    # signed segments (`stockade audit segments`); 0 keeps every event in the database.
    audit_retention_days: int = 0
    log_level: str = "info"
    access_log: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def config_path(self) -> Path:
        return self.home / CONFIG_NAME

    @property
    def key_dir(self) -> Path:
        return Path(self.keys_dir) if self.keys_dir else self.home / "keys"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def job_engine(self) -> str:
        """The job queue in use: ``procrastinate`` or ``inprocess`` (``job_queue = "auto"``
        picks procrastinate exactly when the database is PostgreSQL)."""
        if self.job_queue != "auto":
            return self.job_queue
        return "procrastinate" if self.database_url.startswith("postgres") else "inprocess"

    @classmethod
    def load(cls, home: str | Path | None = None, **overrides: Any) -> Settings:
        """Load from STOCKADE_HOME (or ``home``), its stockade.toml and STOCKADE_* env vars."""
        home_path = Path(home or os.environ.get("STOCKADE_HOME") or "./var").resolve()
        values: dict[str, Any] = {}
        cfg = home_path / CONFIG_NAME
        if cfg.exists():
            try:
                values.update(tomllib.loads(cfg.read_text("utf-8")))
            except (tomllib.TOMLDecodeError, OSError) as exc:
                raise ConfigError(
                    f"cannot read {cfg}: {exc}", "fix the file or delete it to use defaults"
                ) from exc
        names = {f.name: f for f in dataclasses.fields(cls)}
        for name in names:
            env = os.environ.get(f"STOCKADE_{name.upper()}")
            if env is not None and name not in ("home", "extra"):
                values[name] = env
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(values) - set(names))
        extra = {k: values.pop(k) for k in unknown}
        values.pop("home", None)
        values.setdefault("database_url", f"sqlite:///{home_path / 'stockade.db'}")
        values.setdefault("storage_url", f"file://{home_path / 'files'}")
        try:
            return cls(home=home_path, extra=extra, **_coerce(values))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid setting: {exc}", f"check {cfg} and STOCKADE_*") from exc


_TRUE = ("1", "true", "yes", "on")


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in (
            "port",
            "page_ttl",
            "vulndb_sync_interval",
            "tuf_timestamp_expiry",
            "tuf_refresh_interval",
            "storage_presign_expiry",
            "job_concurrency",
            "job_retries",
            "job_keep_days",
            "audit_retention_days",
        ):
            out[key] = int(value)
        elif key in ("upstream_timeout", "fetch_wait", "job_retry_wait"):
            out[key] = float(value)
        elif key == "job_queue":
            if value not in ("auto", "procrastinate", "inprocess"):
                raise ValueError("job_queue must be auto, procrastinate or inprocess")
            out[key] = value
        elif key in (
            "max_upload_size",
            "max_file_size",
            "max_page_size",
            "buffer_below",
            "storage_multipart_threshold",
        ):
            out[key] = _parse_size(value)
        elif key == "alert_team_webhooks":
            parsed = json.loads(value) if isinstance(value, str) else value
            if not isinstance(parsed, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
            ):
                raise ValueError("alert_team_webhooks maps team names to webhook URLs")
            out[key] = dict(parsed)
        elif key in (
            "access_log",
            "storage_presign_downloads",
            "storage_create_bucket",
            "job_worker",
        ):
            out[key] = value if isinstance(value, bool) else str(value).lower() in _TRUE
        else:
            out[key] = value
    return out


DEFAULT_TOML = """\
# Stockade configuration. Every key can also be set as STOCKADE_<KEY> in the environment.
# database_url = "postgresql+psycopg://postgres@127.0.0.1:5432/stockade"
# storage_url = "file:///var/lib/stockade/files"   # or "s3://BUCKET/PREFIX" + storage_* keys
host = "127.0.0.1"
port = 8080
page_ttl = 600            # seconds a mirrored project page stays fresh
upstream_timeout = 30.0   # seconds
max_upload_size = "1GB"
max_file_size = "8GB"
"""

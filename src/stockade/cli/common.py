"""Shared CLI plumbing: settings, running services, printing tables or JSON, errors."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import orjson
import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from stockade.errors import ConfigError, StockadeError
from stockade.services.runtime import Runtime
from stockade.settings import Settings

T = TypeVar("T")
out = Console(soft_wrap=True)
if not out.is_terminal:  # piped or captured: do not squeeze tables into 80 columns
    out.width = 240
err = Console(stderr=True, soft_wrap=True)

JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")


def settings() -> Settings:
    return Settings.load()


def run(
    fn: Callable[[Runtime], Awaitable[T]], s: Settings | None = None, *, exit_code: int = 1
) -> T:
    """Run ``fn`` with a Runtime. A StockadeError is printed as a diagnostic on stderr and the
    command exits with ``exit_code``."""
    try:
        return _run(fn, s)
    except StockadeError as exc:
        err.print(exc.diagnostics(), markup=False, highlight=False)
        raise typer.Exit(exit_code) from None


def _run(fn: Callable[[Runtime], Awaitable[T]], s: Settings | None) -> T:
    s = s or settings()
    if s.database_url.startswith("sqlite"):
        db_file = make_url(s.database_url).database
        if db_file and not Path(db_file).exists():
            raise ConfigError(
                f"{s.home} is not initialized (no database at {db_file})",
                "run `stockade init` (or `make run`) first, or set STOCKADE_HOME",
            )

    async def go() -> T:
        runtime = Runtime(s)
        try:
            return await fn(runtime)
        except (OperationalError, ProgrammingError) as exc:
            raise ConfigError(
                f"the database is not usable: {str(exc.orig).splitlines()[0]}",
                "run `stockade init` or `stockade db upgrade` first",
            ) from exc
        finally:
            try:
                await _drain(runtime)
            finally:
                await runtime.close()

    return asyncio.run(go())


async def _drain(runtime: Runtime) -> None:
    """The jobs this command deferred (environment re-evaluation after an import…) are seen
    through before it exits; failures are reported (the command's own work stands)."""
    import logging

    if not logging.getLogger().handlers:  # no tracebacks of failed attempts: the line below
        for name in ("procrastinate", "stockade.jobs"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        failed = await runtime.jobs.drain()
    except Exception as exc:
        err.print(f"warning: could not follow the queued jobs: {exc}", markup=False)
        return
    for job in failed:
        err.print(
            f"warning: job {job.id} ({job.task}) failed after {job.attempts} attempt(s): "
            f"{job.error}; see `stockade jobs list --status failed`",
            markup=False,
            highlight=False,
        )


def print_json(data: Any) -> None:
    sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*["" if v is None else str(v) for v in r])
    out.print(table)


def fail(exc: StockadeError) -> None:
    err.print(exc.diagnostics(), markup=False, highlight=False)
    raise typer.Exit(1)

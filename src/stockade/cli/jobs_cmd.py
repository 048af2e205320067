"""``stockade jobs list|retry`` and ``stockade worker``: the background job queue."""

from __future__ import annotations

import asyncio
import logging
import signal

import typer

from stockade.cli.common import JsonOpt, err, print_json, print_table, run, settings
from stockade.errors import ConfigError
from stockade.services.jobs import STATUSES, JobInfo
from stockade.services.runtime import Runtime

app = typer.Typer(help="Background jobs: scans, syncs, re-evaluations.", no_args_is_help=True)


def _row(j: JobInfo) -> list[object]:
    args = ", ".join(f"{k}={v}" for k, v in j.args.items())
    when = j.updated_at.strftime("%Y-%m-%d %H:%M:%S") if j.updated_at else ""
    error = (j.error or "").splitlines()[0][:100] if j.error else ""
    return [j.id, j.task, j.status, j.attempts, when, args[:80], error]


@app.command("list")
def list_(
    status: str = typer.Option(
        None, "--status", help="Only jobs with this status: " + ", ".join(STATUSES) + "."
    ),
    task: str = typer.Option(None, "--task", help="Only jobs of this task (e.g. scan)."),
    limit: int = typer.Option(100, "--limit", min=1, help="At most this many, newest first."),
    json: bool = JsonOpt,
) -> None:
    """Jobs, newest first: status, attempts and the last error of a failed attempt."""
    found = run(lambda r: r.jobs.find(status=status, task=task, limit=limit))
    if json:
        print_json([j.as_dict() for j in found])
        return
    print_table(
        f"jobs ({settings().job_engine} queue)",
        ["id", "task", "status", "attempts", "updated", "args", "error"],
        [_row(j) for j in found],
    )


@app.command("retry")
def retry(
    job_id: int = typer.Argument(..., help="Id of a failed job (see `stockade jobs list`)."),
    json: bool = JsonOpt,
) -> None:
    """Queue a failed job again for one more attempt, and wait for its outcome."""

    async def go(r: Runtime) -> JobInfo:
        await r.jobs.retry(job_id)
        await r.jobs.drain()
        return await r.jobs.get(job_id)

    job = run(go)
    if json:
        print_json(job.as_dict())
    else:
        tail = f": {job.error}" if job.status == "failed" and job.error else ""
        typer.echo(f"job {job.id} ({job.task}) is {job.status}{tail}")
    if job.status == "failed":
        raise typer.Exit(1)


def worker(
    concurrency: int = typer.Option(
        None, "--concurrency", min=1, help="Jobs run at once (default: job_concurrency)."
    ),
) -> None:
    """Run a job worker (procrastinate queue) until interrupted: scans, syncs, re-evaluations
    and the periodic work, alongside or instead of the servers' own workers."""
    s = settings()
    if s.job_engine != "procrastinate":
        raise ConfigError(
            "the in-process job queue has no separate workers: its jobs run in the process "
            "that queues them",
            "use PostgreSQL (database_url) so that job_queue = auto picks procrastinate",
        )
    if concurrency is not None:
        from stockade.settings import Settings

        s = Settings.load(job_concurrency=concurrency)
    logging.basicConfig(level=s.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")

    async def go(r: Runtime) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        r.start(worker=True)
        err.print(f"Stockade job worker running (home {s.home}); Ctrl-C stops it", highlight=False)
        await stop.wait()

    run(go, s)

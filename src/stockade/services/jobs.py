"""Background jobs: one port (:class:`JobQueue`), two adapters chosen by ``job_queue``.

**procrastinate** (default when the database is PostgreSQL): jobs are rows in procrastinate's
tables in Stockade's own database, fetched by workers with ``SELECT … FOR UPDATE SKIP LOCKED``
and woken by ``LISTEN/NOTIFY``; every ``stockade serve`` process runs a worker unless started
with ``--no-worker``, and ``stockade worker`` runs one on its own. Periodic work (vulnerability
sync, TUF refresh, queue upkeep) is a procrastinate periodic task: one job per tick, whichever
worker defers it first. A job that raises is retried ``job_retries`` times with exponential
backoff, then marked failed; its error (procrastinate keeps none) is written to ``job_errors``.
A job left ``doing`` by a worker that died is retried by the upkeep task.

**inprocess** (the embedded default, SQLite, one process, no extra service): a job runs as an
asyncio task of the process that deferred it, with the same retries and backoff; each job and
each failed attempt is recorded (``jobs``, ``job_errors``) so ``stockade jobs list`` in another
process shows them. A job still running when its process stops is recorded as cancelled.

A short-lived process (a CLI command) that deferred jobs calls :meth:`JobQueue.drain` before it
exits: in-process jobs finish there; procrastinate jobs are left to the running workers, and
run by the command itself when no worker is alive, so a command's follow-up work is done when
it returns either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import bindparam, delete, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.db.engine import sync_url
from stockade.db.models import JobErrorRow, JobRow
from stockade.errors import Conflict, InvalidRequest, NotFound
from stockade.services.repo import aware, utcnow

log = logging.getLogger("stockade.jobs")

STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINAL = frozenset({"done", "failed", "cancelled"})
WORKER = f"{socket.gethostname()}:{os.getpid()}"
MAX_WAIT = 3600.0  # the longest backoff between two attempts (seconds)
Handler = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Task:
    """A kind of job: its handler (keyword arguments, JSON values) and queue. ``lock`` maps the
    arguments to a key of which at most one job waits at a time (e.g. one scan per file)."""

    name: str
    handler: Handler
    queue: str = "default"
    lock: Callable[[dict[str, Any]], str] | None = None


@dataclass(frozen=True, slots=True)
class Periodic:
    task: str
    every: int  # seconds


@dataclass(frozen=True, slots=True)
class JobInfo:
    id: int
    task: str
    queue: str
    args: dict[str, Any]
    status: str  # queued | running | done | failed | cancelled
    attempts: int  # attempts started
    error: str | None  # the last failed attempt's error
    created_at: datetime | None
    updated_at: datetime | None
    scheduled_at: datetime | None  # when a queued job (a retry) may start
    engine: str

    def as_dict(self) -> dict[str, Any]:
        def iso(d: datetime | None) -> str | None:
            return d.isoformat() if d else None

        return {
            "id": self.id,
            "task": self.task,
            "queue": self.queue,
            "args": self.args,
            "status": self.status,
            "attempts": self.attempts,
            "error": self.error,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "scheduled_at": iso(self.scheduled_at),
            "engine": self.engine,
        }


class JobQueue(Protocol):
    engine: str

    async def defer(self, task: str, *, background: bool = False, **args: Any) -> int | None:
        """Queue a job; its id, or None when an equal one (same lock) is already waiting.
        ``background``: a short-lived process does not wait for it in :meth:`drain`."""
        ...

    async def wait(self, ids: Iterable[int], within: float | None = None) -> dict[int, str]:
        """Wait until these jobs are done, failed or cancelled (or ``within`` seconds pass):
        their statuses."""
        ...

    async def find(
        self, status: str | None = None, task: str | None = None, limit: int = 100
    ) -> list[JobInfo]: ...

    async def get(self, job_id: int) -> JobInfo: ...

    async def retry(self, job_id: int) -> JobInfo:
        """Queue a failed (or cancelled) job again for one more attempt."""
        ...

    def start_worker(self) -> None:
        """Run this queue's jobs in this process (a server or ``stockade worker``)."""
        ...

    async def drain(self, within: float = 900.0) -> list[JobInfo]:
        """Before a short-lived process exits: see the jobs it deferred through; the failed
        ones."""
        ...

    async def close(self) -> None: ...


def describe(exc: BaseException) -> str:
    text_ = f"{type(exc).__name__}: {exc}".strip()
    return text_[:4000]


def backoff(base: float, failures: int) -> float:
    """Seconds before the next attempt after ``failures`` failed ones: base, 2 x base, 4 x base…"""
    return float(min(MAX_WAIT, base * 2 ** max(0, failures - 1)))


def _check_status(status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"unknown job status {status!r}", "use " + ", ".join(STATUSES))


async def _last_errors(
    sessions: async_sessionmaker[AsyncSession], engine: str, ids: Sequence[int]
) -> dict[int, str]:
    if not ids:
        return {}
    out: dict[int, str] = {}
    async with sessions() as s:
        q = (
            select(JobErrorRow.job_id, JobErrorRow.error)
            .where(JobErrorRow.engine == engine, JobErrorRow.job_id.in_(list(ids)))
            .order_by(JobErrorRow.id)
        )
        for job_id, error in await s.execute(q):
            out[int(job_id)] = str(error)
    return out


async def _record_error(
    sessions: async_sessionmaker[AsyncSession], engine: str, job_id: int, attempt: int, error: str
) -> None:
    try:
        async with sessions() as s, s.begin():
            s.add(
                JobErrorRow(
                    engine=engine,
                    job_id=job_id,
                    attempt=attempt,
                    error=error,
                    worker=WORKER,
                    at=utcnow(),
                )
            )
    except Exception:  # the database is down: the log still says it
        log.exception("job %s: cannot record the error of attempt %d", job_id, attempt)


# -- in-process --------------------------------------------------------------------------------


class InProcessQueue:
    """Jobs as asyncio tasks of this process, recorded in ``jobs``/``job_errors``."""

    engine = "inprocess"

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        tasks: dict[str, Task],
        *,
        retries: int,
        retry_wait: float,
        concurrency: int,
        keep_days: int,
    ) -> None:
        self._sessions = sessions
        self._defs = tasks
        self._retries = max(0, retries)
        self._retry_wait = max(0.0, retry_wait)
        self._keep = timedelta(days=max(1, keep_days))
        self._sem = asyncio.Semaphore(max(1, concurrency))
        self._running: dict[int, asyncio.Task[None]] = {}
        self._locks: dict[str, int] = {}
        self._mine: set[int] = set()

    def _spec(self, task: str) -> Task:
        spec = self._defs.get(task)
        if spec is None:
            raise InvalidRequest(f"unknown job task {task!r}", "one of " + ", ".join(self._defs))
        return spec

    async def defer(self, task: str, *, background: bool = False, **args: Any) -> int | None:
        spec = self._spec(task)
        key = spec.lock(args) if spec.lock else None
        if key is not None and key in self._locks:
            return None
        now = utcnow()
        async with self._sessions() as s, s.begin():
            row = JobRow(
                task=task,
                queue=spec.queue,
                args=args,
                status="queued",
                attempts=0,
                worker=WORKER,
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            await s.flush()
            job_id = int(row.id)
        self._mine.add(job_id)
        self._launch(job_id, spec, args, key, first=1, last=self._retries + 1)
        return job_id

    def _launch(
        self, job_id: int, spec: Task, args: dict[str, Any], key: str | None, first: int, last: int
    ) -> None:
        if key is not None:
            self._locks[key] = job_id
        task = asyncio.create_task(
            self._run(job_id, spec, args, first, last), name=f"job-{job_id}-{spec.name}"
        )
        self._running[job_id] = task

        def done(_t: asyncio.Task[None]) -> None:
            self._running.pop(job_id, None)
            if key is not None and self._locks.get(key) == job_id:
                del self._locks[key]

        task.add_done_callback(done)

    async def _run(
        self, job_id: int, spec: Task, args: dict[str, Any], first: int, last: int
    ) -> None:
        attempt = first
        while True:
            async with self._sem:
                await self._set(job_id, status="running", attempts=attempt, scheduled_at=None)
                try:
                    await spec.handler(**args)
                except Exception as exc:
                    error = describe(exc)
                    log.warning(
                        "job %d (%s) attempt %d/%d failed: %s",
                        job_id,
                        spec.name,
                        attempt,
                        last,
                        error,
                        exc_info=True,
                    )
                    await _record_error(self._sessions, self.engine, job_id, attempt, error)
                    if attempt >= last:
                        await self._set(job_id, status="failed")
                        return
                else:
                    await self._set(job_id, status="done")
                    return
            wait = backoff(self._retry_wait, attempt)
            await self._set(
                job_id, status="queued", scheduled_at=utcnow() + timedelta(seconds=wait)
            )
            await asyncio.sleep(wait)
            attempt += 1

    async def _set(self, job_id: int, **values: Any) -> None:
        try:
            async with self._sessions() as s, s.begin():
                await s.execute(
                    update(JobRow)
                    .where(JobRow.id == job_id)
                    .values(updated_at=utcnow(), worker=WORKER, **values)
                )
        except Exception:  # bookkeeping must not kill the job
            log.exception("job %d: cannot record %s", job_id, values)

    async def wait(self, ids: Iterable[int], within: float | None = None) -> dict[int, str]:
        wanted = list(ids)
        tasks = [self._running[i] for i in wanted if i in self._running]
        if tasks:
            await asyncio.wait(tasks, timeout=within)
        return {j.id: j.status for j in await self._infos(wanted)}

    async def _infos(self, ids: Sequence[int] | None, **filters: Any) -> list[JobInfo]:
        q = select(JobRow)
        if ids is not None:
            q = q.where(JobRow.id.in_(list(ids)))
        if filters.get("status"):
            q = q.where(JobRow.status == filters["status"])
        if filters.get("task"):
            q = q.where(JobRow.task == filters["task"])
        q = q.order_by(JobRow.id.desc()).limit(filters.get("limit") or 100_000)
        async with self._sessions() as s:
            rows = list((await s.execute(q)).scalars())
        errors = await _last_errors(self._sessions, self.engine, [r.id for r in rows])
        return [
            JobInfo(
                id=r.id,
                task=r.task,
                queue=r.queue,
                args=dict(r.args or {}),
                status=r.status,
                attempts=r.attempts,
                error=errors.get(r.id),
                created_at=aware(r.created_at),
                updated_at=aware(r.updated_at),
                scheduled_at=aware(r.scheduled_at),
                engine=self.engine,
            )
            for r in rows
        ]

    async def find(
        self, status: str | None = None, task: str | None = None, limit: int = 100
    ) -> list[JobInfo]:
        _check_status(status)
        return await self._infos(None, status=status, task=task, limit=limit)

    async def get(self, job_id: int) -> JobInfo:
        found = await self._infos([job_id])
        if not found:
            raise NotFound(f"no job {job_id}", "see `stockade jobs list`")
        return found[0]

    async def retry(self, job_id: int) -> JobInfo:
        job = await self.get(job_id)
        if job.status not in ("failed", "cancelled"):
            raise Conflict(
                f"job {job_id} is {job.status}; only failed or cancelled jobs are retried"
            )
        spec = self._spec(job.task)
        await self._set(job_id, status="queued")
        self._mine.add(job_id)
        key = spec.lock(job.args) if spec.lock else None
        self._launch(job_id, spec, job.args, key, first=job.attempts + 1, last=job.attempts + 1)
        return await self.get(job_id)

    def start_worker(self) -> None:
        """Nothing to start: in-process jobs run where they are deferred."""

    async def prune(self) -> None:
        """Forget jobs done more than ``job_keep_days`` ago (failed ones stay until retried)."""
        cutoff = utcnow() - self._keep
        try:
            async with self._sessions() as s, s.begin():
                old = select(JobRow.id).where(JobRow.status == "done", JobRow.updated_at < cutoff)
                await s.execute(
                    delete(JobErrorRow).where(
                        JobErrorRow.engine == self.engine, JobErrorRow.job_id.in_(old)
                    )
                )
                await s.execute(
                    delete(JobRow).where(JobRow.status == "done", JobRow.updated_at < cutoff)
                )
        except Exception:
            log.exception("pruning old jobs failed")

    async def drain(self, within: float = 900.0) -> list[JobInfo]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self._running and loop.time() < deadline:  # a job may defer more jobs
            await asyncio.wait(list(self._running.values()), timeout=deadline - loop.time())
        if not self._mine:
            return []
        return [j for j in await self._infos(sorted(self._mine)) if j.status == "failed"]

    async def close(self) -> None:
        stopped = list(self._running)
        for task in list(self._running.values()):
            task.cancel()
        for task in list(self._running.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if stopped:
            with contextlib.suppress(Exception):
                async with self._sessions() as s, s.begin():
                    await s.execute(
                        update(JobRow)
                        .where(JobRow.id.in_(stopped), JobRow.status.in_(("queued", "running")))
                        .values(status="cancelled", updated_at=utcnow())
                    )
                for job_id in stopped:
                    await _record_error(
                        self._sessions,
                        self.engine,
                        job_id,
                        0,
                        "Cancelled: the process stopped before the job finished "
                        "(`stockade jobs retry` runs it again)",
                    )


# -- procrastinate -----------------------------------------------------------------------------

_FROM_PROCRASTINATE = {
    "todo": "queued",
    "doing": "running",
    "succeeded": "done",
    "failed": "failed",
    "cancelled": "cancelled",
    "aborting": "cancelled",
    "aborted": "cancelled",
}
_TO_PROCRASTINATE: dict[str, list[str]] = {}
for _theirs, _ours in _FROM_PROCRASTINATE.items():
    _TO_PROCRASTINATE.setdefault(_ours, []).append(_theirs)

_LIST_SQL = """
SELECT j.id, j.task_name, j.queue_name, j.args, j.status::text AS status, j.attempts,
       j.scheduled_at,
       (SELECT min(e.at) FROM procrastinate_events e WHERE e.job_id = j.id) AS created_at,
       (SELECT max(e.at) FROM procrastinate_events e WHERE e.job_id = j.id) AS updated_at
  FROM procrastinate_jobs j
 WHERE {where}
 ORDER BY j.id DESC
 LIMIT :limit
"""


def cron_every(seconds: int) -> str:
    """A cron expression (croniter, seconds as an optional sixth field) firing every
    ``seconds``, rounded down to an interval that divides a minute, an hour or a day."""
    s = max(1, seconds)
    if s < 60:
        step = max(d for d in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30) if d <= s)
        return f"* * * * * */{step}"
    m = s // 60
    if m < 60:
        step = max(d for d in (1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30) if d <= m)
        return f"*/{step} * * * *"
    h = m // 60
    if h < 24:
        step = max(d for d in (1, 2, 3, 4, 6, 8, 12) if d <= h)
        return f"0 */{step} * * *"
    return f"0 0 */{min(h // 24, 31)} * *"


class ProcrastinateQueue:
    """Jobs in PostgreSQL through procrastinate; see the module docstring."""

    engine = "procrastinate"

    def __init__(
        self,
        database_url: str,
        sessions: async_sessionmaker[AsyncSession],
        tasks: dict[str, Task],
        periodic: Sequence[Periodic] = (),
        *,
        retries: int,
        retry_wait: float,
        concurrency: int,
        keep_days: int,
    ) -> None:
        import procrastinate

        self._sessions = sessions
        self._defs = dict(tasks)
        self._concurrency = max(1, concurrency)
        self._keep_hours = max(1, keep_days) * 24
        conninfo = make_url(sync_url(database_url)).set(drivername="postgresql")
        self.app = procrastinate.App(
            connector=procrastinate.PsycopgConnector(
                conninfo=conninfo.render_as_string(hide_password=False),
                min_size=1,
                max_size=self._concurrency + 3,
            )
        )
        self._retry = _Backoff(max(0, retries), max(0.0, retry_wait))
        self._defs["jobs.upkeep"] = Task("jobs.upkeep", self.upkeep)
        self._tasks: dict[str, Any] = {
            name: self._register(spec) for name, spec in self._defs.items()
        }
        for p in (*periodic, Periodic("jobs.upkeep", 300)):
            self.app.periodic(cron=cron_every(p.every), periodic_id=p.task)(self._tasks[p.task])
        self._opened = False
        self._open_lock = asyncio.Lock()
        self._worker: asyncio.Task[None] | None = None
        self._mine: set[int] = set()

    def _register(self, spec: Task) -> Any:
        from procrastinate import JobContext

        async def run(context: JobContext, /, **kwargs: Any) -> None:
            kwargs.pop("timestamp", None)  # the tick of a periodic job
            job = context.job
            try:
                await spec.handler(**kwargs)
            except Exception as exc:
                assert job.id is not None
                await _record_error(
                    self._sessions, self.engine, job.id, job.attempts + 1, describe(exc)
                )
                raise

        run.__name__ = run.__qualname__ = spec.name.replace(".", "_")
        return self.app.task(
            name=spec.name, queue=spec.queue, retry=self._retry, pass_context=True
        )(run)

    async def _open(self) -> None:
        if self._opened:
            return
        async with self._open_lock:
            if not self._opened:
                await self.app.open_async()
                self._opened = True

    async def defer(self, task: str, *, background: bool = False, **args: Any) -> int | None:
        from procrastinate.exceptions import AlreadyEnqueued

        t = self._tasks.get(task)
        if t is None or task == "jobs.upkeep":
            raise InvalidRequest(f"unknown job task {task!r}", "one of " + ", ".join(self._defs))
        spec = self._defs[task]
        await self._open()
        key = spec.lock(args) if spec.lock else None
        try:
            job_id = int(await t.configure(queueing_lock=key).defer_async(**args))
        except AlreadyEnqueued:
            return None
        if not background:
            self._mine.add(job_id)
        return job_id

    async def _statuses(self, ids: Iterable[int]) -> dict[int, str]:
        wanted = list(ids)
        if not wanted:
            return {}
        q = text("SELECT id, status::text FROM procrastinate_jobs WHERE id IN :ids").bindparams(
            bindparam("ids", expanding=True)
        )
        async with self._sessions() as s:
            rows = await s.execute(q, {"ids": wanted})
            return {int(i): _FROM_PROCRASTINATE.get(st, st) for i, st in rows}

    async def wait(self, ids: Iterable[int], within: float | None = None) -> dict[int, str]:
        wanted = list(ids)
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        while True:
            got = await self._statuses(wanted)
            if all(st in FINAL for st in got.values()):
                return got
            if deadline is not None and loop.time() >= deadline:
                return got
            await asyncio.sleep(0.2)

    async def _infos(
        self, ids: Sequence[int] | None, status: str | None, task: str | None, limit: int
    ) -> list[JobInfo]:
        where = ["TRUE"]
        params: dict[str, Any] = {"limit": limit}
        binds: list[Any] = []
        if ids is not None:
            where.append("j.id IN :ids")
            params["ids"] = list(ids) or [-1]
            binds.append(bindparam("ids", expanding=True))
        if status is not None:
            where.append("j.status::text IN :statuses")
            params["statuses"] = _TO_PROCRASTINATE[status]
            binds.append(bindparam("statuses", expanding=True))
        if task is not None:
            where.append("j.task_name = :task")
            params["task"] = task
        q = text(_LIST_SQL.format(where=" AND ".join(where))).bindparams(*binds)
        async with self._sessions() as s:
            rows = list(await s.execute(q, params))
        errors = await _last_errors(self._sessions, self.engine, [int(r.id) for r in rows])
        out = []
        for r in rows:
            ours = _FROM_PROCRASTINATE.get(r.status, r.status)
            # procrastinate counts finished attempts; here: attempts started
            started = r.attempts + (1 if r.status == "doing" else 0)
            args = dict(r.args or {})
            args.pop("timestamp", None)
            out.append(
                JobInfo(
                    id=int(r.id),
                    task=r.task_name,
                    queue=r.queue_name,
                    args=args,
                    status=ours,
                    attempts=started,
                    error=errors.get(int(r.id)),
                    created_at=r.created_at,
                    updated_at=r.updated_at,
                    scheduled_at=r.scheduled_at if ours == "queued" else None,
                    engine=self.engine,
                )
            )
        return out

    async def find(
        self, status: str | None = None, task: str | None = None, limit: int = 100
    ) -> list[JobInfo]:
        _check_status(status)
        return await self._infos(None, status, task, limit)

    async def get(self, job_id: int) -> JobInfo:
        found = await self._infos([job_id], None, None, 1)
        if not found:
            raise NotFound(f"no job {job_id}", "see `stockade jobs list`")
        return found[0]

    async def retry(self, job_id: int) -> JobInfo:
        job = await self.get(job_id)
        if job.status != "failed":
            raise Conflict(f"job {job_id} is {job.status}; only failed jobs are retried")
        await self._open()
        await self.app.job_manager.retry_job_by_id_async(job_id, retry_at=utcnow())
        self._mine.add(job_id)
        return await self.get(job_id)

    def start_worker(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._work(), name="jobs-worker")

    async def _work(self) -> None:
        while True:
            try:
                await self._open()
                await self.app.run_worker_async(
                    name=WORKER,
                    concurrency=self._concurrency,
                    install_signal_handlers=False,
                    shutdown_graceful_timeout=5,
                    fetch_job_polling_interval=2,  # a retry is due (no NOTIFY)
                )
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # e.g. the database restarted: keep serving, try again
                log.exception("the job worker stopped; restarting it in 5 s")
                await asyncio.sleep(5)

    async def _live_workers(self) -> int:
        q = text(
            "SELECT count(*) FROM procrastinate_workers "
            "WHERE last_heartbeat > now() - interval '30 seconds'"
        )
        async with self._sessions() as s:
            return int((await s.execute(q)).scalar() or 0)

    async def drain(self, within: float = 900.0) -> list[JobInfo]:
        if not self._mine:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            got = await self._statuses(self._mine)
            pending = [i for i, st in got.items() if st not in FINAL]
            if not pending:
                break
            if any(got[i] == "queued" for i in pending) and not await self._live_workers():
                # nobody else will run them: this command does, through the queue
                queues = sorted(
                    {
                        self._defs[j.task].queue
                        for j in await self._infos(pending, None, None, len(pending))
                        if j.task in self._defs
                    }
                )
                await self.app.run_worker_async(
                    name=f"{WORKER}-cli",
                    queues=queues,
                    wait=False,
                    install_signal_handlers=False,
                    listen_notify=False,
                    concurrency=self._concurrency,
                )
            await asyncio.sleep(0.2)
        found = await self._infos(sorted(self._mine), None, None, len(self._mine))
        return [j for j in found if j.status == "failed"]

    async def upkeep(self) -> None:
        """Periodic: retry jobs left running by a worker that died; forget old finished jobs."""
        manager = self.app.job_manager
        for job in await manager.get_stalled_jobs():
            log.warning(
                "job %s (%s) was left running by a dead worker: retrying", job.id, job.task_name
            )
            with contextlib.suppress(Exception):  # another worker retried it first
                await manager.retry_job(job)
        await manager.delete_old_jobs(nb_hours=self._keep_hours)
        async with self._sessions() as s, s.begin():
            await s.execute(
                text(
                    "DELETE FROM job_errors WHERE engine = 'procrastinate' AND NOT EXISTS "
                    "(SELECT 1 FROM procrastinate_jobs j WHERE j.id = job_errors.job_id)"
                )
            )

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._worker
            self._worker = None
        if self._opened:
            self._opened = False
            with contextlib.suppress(Exception):
                await self.app.close_async()


def _backoff_class() -> type:
    from procrastinate import BaseRetryStrategy, RetryDecision
    from procrastinate.jobs import Job

    class Backoff(BaseRetryStrategy):
        """``retries`` more attempts after the first, waiting base, 2 x base, 4 x base…"""

        def __init__(self, retries: int, base: float) -> None:
            self.retries = retries
            self.base = base

        def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
            if job.attempts >= self.retries:
                return None
            wait = backoff(self.base, job.attempts + 1)
            return RetryDecision(retry_at=utcnow() + timedelta(seconds=wait))

    return Backoff


def _Backoff(retries: int, base: float) -> Any:  # procrastinate imported lazily
    return _backoff_class()(retries, base)


def make_queue(
    settings: Any,
    sessions: async_sessionmaker[AsyncSession],
    tasks: dict[str, Task],
    periodic: Sequence[Periodic],
) -> JobQueue:
    """The queue ``settings.job_engine`` names (``periodic`` only matters to procrastinate)."""
    from stockade.errors import ConfigError

    opts = {
        "retries": settings.job_retries,
        "retry_wait": settings.job_retry_wait,
        "concurrency": settings.job_concurrency,
        "keep_days": settings.job_keep_days,
    }
    if settings.job_engine == "procrastinate":
        if not settings.database_url.startswith("postgres"):
            raise ConfigError(
                "job_queue = procrastinate needs a PostgreSQL database_url",
                'use job_queue = "inprocess" (or "auto") with SQLite',
            )
        return ProcrastinateQueue(settings.database_url, sessions, tasks, periodic, **opts)
    return InProcessQueue(sessions, tasks, **opts)

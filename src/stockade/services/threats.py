"""Malware scan reports per file (by sha256): scanning in a separate process, stored verdicts.

Every stored distribution is scanned once per engine version: uploads and mirror fetches are
queued in the background; an index whose policy has an enforcing ``threats`` rule waits for the
verdict before it serves a file for the first time (:meth:`ThreatService.ensure`). The scanner
(:mod:`stockade.core.threats.scanner`) only reads bytes, and runs in a worker process so that
hostile input can at worst kill that process, never the server.

A verdict other than ``clean`` changes policy decisions: the service calls ``on_change`` (the
runtime's cross-process invalidation) so every page is decided again with the finding.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import multiprocessing
import os
import sys
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError as DBIntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.core.ports import BlobStore
from stockade.db.models import ScanReportRow
from stockade.errors import BlobMissing
from stockade.services.audit import AuditLog
from stockade.services.jobs import JobQueue
from stockade.services.repo import aware, utcnow

log = logging.getLogger(__name__)


def _engine() -> str:
    """Names the rules that decided: a changed rules file makes stored verdicts stale."""
    rules = resources.files("stockade.data").joinpath("threat_rules.toml").read_bytes()
    return "scanner-" + hashlib.sha256(rules).hexdigest()[:12]


ENGINE = _engine()
SCAN_MAX_BYTES = 512 * 1024**2  # larger files are reported unscanned ("error")
SCAN_TIMEOUT = 120.0  # seconds one file may take before it is reported as an error
CACHE_MAX = 200_000


@dataclass(frozen=True, slots=True)
class ScanReport:
    sha256: str
    filename: str
    verdict: str  # malicious | suspicious | clean | error
    score: float
    findings: tuple[dict[str, Any], ...]
    engine: str
    scanned_at: datetime
    elapsed: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.filename,
            "sha256": self.sha256,
            "verdict": self.verdict,
            "score": self.score,
            "findings": list(self.findings),
            "engine": self.engine,
            "scanned_at": self.scanned_at.isoformat(),
            "elapsed": self.elapsed,
        }

    def summary(self, limit: int = 3) -> str:
        """One line for a policy reason: the strongest findings, with where they are."""
        parts = []
        for f in self.findings[:limit]:
            where = f.get("path") or ""
            if f.get("line"):
                where += f":{f['line']}"
            parts.append(f"{f.get('rule')} ({where})" if where else str(f.get("rule")))
        more = len(self.findings) - limit
        tail = f" and {more} more" if more > 0 else ""
        return f"scanner score {self.score:.2f}: " + ", ".join(parts) + tail


def _report(row: ScanReportRow) -> ScanReport:
    return ScanReport(
        row.sha256,
        row.filename,
        row.verdict,
        row.score,
        tuple(row.findings or ()),
        row.engine,
        aware(row.scanned_at) or utcnow(),
        row.elapsed,
    )


def _scan_file(path: str, filename: str) -> dict[str, Any]:
    """Runs in the worker process: the scanner's verdict as plain data."""
    from stockade.core.threats.scanner import scan_bytes

    size = Path(path).stat().st_size
    if size > SCAN_MAX_BYTES:
        return {
            "verdict": "error",
            "score": 0.0,
            "findings": [
                {
                    "rule": "too-large-to-scan",
                    "severity": "low",
                    "message": f"{size} bytes is over the scanner's limit of {SCAN_MAX_BYTES}",
                    "path": "",
                    "line": None,
                    "snippet": "",
                }
            ],
            "elapsed": 0.0,
        }
    report = scan_bytes(Path(path).read_bytes(), filename)
    return {
        "verdict": report.verdict,
        "score": float(report.score),
        "findings": report.as_dict()["findings"],
        "elapsed": float(report.elapsed),
    }


class ThreatService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        store: BlobStore,
        audit: AuditLog,
        on_change: Callable[[], None] | None = None,
        workers: int = 1,
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._audit = audit
        self.on_change = on_change
        self._workers = max(1, workers)
        self._pool: ProcessPoolExecutor | None = None
        self._cache: dict[str, ScanReport] = {}
        self._inflight: dict[str, asyncio.Task[ScanReport | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # The job queue (the runtime sets it): background scans are ``scan`` jobs, retried
        # and visible in `stockade jobs list`, run by whichever worker takes them.
        self.queue: JobQueue | None = None
        # Called after a file is judged malicious or suspicious (the runtime re-evaluates the
        # environments that pin its package); errors are logged, the verdict stands.
        self.on_finding: Callable[[ScanReport], Awaitable[None]] | None = None

    def clear(self) -> None:
        self._cache.clear()

    async def reports_many(self, shas: Iterable[str]) -> dict[str, ScanReport]:
        wanted = {s.lower() for s in shas if s}
        out = {s: self._cache[s] for s in wanted if s in self._cache}
        missing = sorted(wanted - out.keys())
        if missing:
            async with self._sessions() as s:
                for i in range(0, len(missing), 500):
                    q = select(ScanReportRow).where(ScanReportRow.sha256.in_(missing[i : i + 500]))
                    for row in (await s.execute(q)).scalars():
                        out[row.sha256] = self._remember(_report(row))
        return out

    async def flagged_marker(self) -> str:
        """Changes whenever a file gets a malicious or suspicious verdict (documents filtered
        by a ``threats`` rule are derived again when it does)."""
        async with self._sessions() as s:
            q = select(func.count(), func.max(ScanReportRow.scanned_at)).where(
                ScanReportRow.verdict.in_(("malicious", "suspicious"))
            )
            count, last = (await s.execute(q)).one()
        return f"t{count}:{last.isoformat() if last else ''}"

    async def report(self, sha256: str) -> ScanReport | None:
        return (await self.reports_many([sha256])).get(sha256.lower())

    def _remember(self, report: ScanReport) -> ScanReport:
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[report.sha256] = report
        return report

    async def recent(self, *, limit: int = 100, flagged_only: bool = True) -> list[ScanReport]:
        async with self._sessions() as s:
            q = select(ScanReportRow)
            if flagged_only:
                q = q.where(ScanReportRow.verdict.in_(("malicious", "suspicious", "error")))
            q = q.order_by(ScanReportRow.scanned_at.desc()).limit(limit)
            found = [_report(r) for r in (await s.execute(q)).scalars()]
        order = {"malicious": 0, "suspicious": 1, "error": 2, "clean": 3}
        return sorted(found, key=lambda r: order.get(r.verdict, 4))

    def known(self, sha256: str) -> bool:
        """Whether this process already holds a current verdict (no I/O)."""
        got = self._cache.get(sha256.lower())
        return got is not None and got.engine == ENGINE

    def enqueue(self, sha256: str, filename: str) -> None:
        """Scan a stored file in the background (once per engine version): a ``scan`` job
        unless the database already holds a current verdict."""
        task = asyncio.create_task(self._guarded(sha256, filename))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _guarded(self, sha256: str, filename: str) -> None:
        try:
            if self.queue is None:
                await self.ensure(sha256, filename)
                return
            known = await self.report(sha256)
            if known is None or known.engine != ENGINE:
                await self.queue.defer(
                    "scan", background=True, sha256=sha256.lower(), filename=filename
                )
        except Exception:
            log.exception("scanning %s failed", filename)

    async def ensure(self, sha256: str, filename: str) -> ScanReport | None:
        """The verdict on a stored file, scanning it first if needed (one scan per sha at a
        time in this process). None when the bytes are not stored."""
        sha = sha256.lower()
        known = await self.report(sha)
        if known is not None and known.engine == ENGINE:
            return known
        task = self._inflight.get(sha)
        if task is None:
            task = asyncio.create_task(self._scan(sha, filename))
            self._inflight[sha] = task
            task.add_done_callback(lambda _t: self._inflight.pop(sha, None))
        return await asyncio.shield(task)

    async def _scan(self, sha: str, filename: str) -> ScanReport | None:
        started = utcnow()
        try:
            async with self._store.open_local(sha) as path:
                got = await asyncio.wait_for(
                    asyncio.get_running_loop().run_in_executor(
                        self._executor(), _scan_file, str(path), filename
                    ),
                    SCAN_TIMEOUT,
                )
        except BlobMissing:
            return None
        except (TimeoutError, BrokenProcessPool, OSError) as exc:
            self._reset_pool()
            got = {
                "verdict": "error",
                "score": 0.0,
                "findings": [
                    {
                        "rule": "scan-failed",
                        "severity": "medium",
                        "message": f"the scanner did not finish: {type(exc).__name__}",
                        "path": "",
                        "line": None,
                        "snippet": "",
                    }
                ],
                "elapsed": (utcnow() - started).total_seconds(),
            }
        report = ScanReport(
            sha,
            filename,
            str(got["verdict"]),
            float(got["score"]),
            tuple(got["findings"]),
            ENGINE,
            utcnow(),
            float(got["elapsed"]),
        )
        await self._save(report)
        if report.verdict in ("malicious", "suspicious"):
            self._audit.record(
                "threat.finding",
                filename=filename,
                outcome=report.verdict,
                sha256=sha,
                score=report.score,
                rules=sorted({str(f.get("rule")) for f in report.findings}),
            )
            if self.on_change is not None:
                self.on_change()  # decisions change: every page is decided again
            if self.on_finding is not None:
                try:
                    await self.on_finding(report)
                except Exception:
                    log.exception("after the finding on %s", filename)
        return report

    async def _save(self, report: ScanReport) -> None:
        values = {
            "filename": report.filename[:255],
            "verdict": report.verdict,
            "score": report.score,
            "findings": list(report.findings),
            "engine": report.engine,
            "scanned_at": report.scanned_at,
            "elapsed": report.elapsed,
        }
        try:
            async with self._sessions() as s, s.begin():
                row = await s.get(ScanReportRow, report.sha256)
                if row is None:
                    s.add(ScanReportRow(sha256=report.sha256, **values))
                else:
                    for key, value in values.items():
                        setattr(row, key, value)
        except DBIntegrityError:
            pass  # another process stored its verdict on the same bytes first
        self._remember(report)

    def _executor(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_die_with_parent,
            )
        return self._pool

    def _reset_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            _stop_pool(pool)

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(_stop_pool, pool)


def _die_with_parent() -> None:
    """In a scanner worker: end when the server process ends, even by SIGKILL (an orphaned
    worker would otherwise live on). Linux only; elsewhere a no-op."""
    if sys.platform != "linux":
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() == 1:  # the parent died before the call: nobody will signal us
        os._exit(0)


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Shut the scanner workers down for good: ``shutdown(wait=False)`` alone leaves the
    spawned workers running after this process exits (orphans, one per server start); a scan
    in progress is abandoned (its file is scanned again when next needed)."""
    workers = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in workers:
        if proc.is_alive():
            proc.terminate()
    for proc in workers:
        proc.join(timeout=5)

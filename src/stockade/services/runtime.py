"""Runtime: builds the services from Settings and owns their lifecycle (start/close).

Both doors use it: the web app for the life of the server, the CLI for one command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from stockade.adapters.http import make_client
from stockade.adapters.pypi import UpstreamIndex
from stockade.adapters.storage import open_store
from stockade.core.threats.typosquat import SHIPPED_CONDA
from stockade.db.engine import make_async_engine, make_sessionmaker
from stockade.services.alerts import AlertService
from stockade.services.audit import AuditLog
from stockade.services.audit_archive import AuditArchive
from stockade.services.conda import CondaService
from stockade.services.conda_policy import CondaPolicy
from stockade.services.conda_trust import CondaTrust
from stockade.services.console import SESSION_TTL, ConsoleService
from stockade.services.coordination import open_coordination
from stockade.services.environments import EnvironmentService
from stockade.services.files import FileService
from stockade.services.identity import IdentityService
from stockade.services.indexes import IndexService
from stockade.services.jobs import JobQueue, Periodic, Task, make_queue
from stockade.services.metadata import MetadataService
from stockade.services.pages import PageService
from stockade.services.policies import PolicyService
from stockade.services.provenance import ProvenanceService
from stockade.services.repo import utcnow
from stockade.services.teams import TeamService
from stockade.services.threats import ScanReport, ThreatService
from stockade.services.tokens import TokenService
from stockade.services.tuf import TufService
from stockade.services.uploads import UploadService
from stockade.services.vulndb import Curation, VulnDB
from stockade.settings import Settings

log = logging.getLogger("stockade.runtime")
AUDIT_ARCHIVE_EVERY = 86400  # seconds between retention runs (audit_retention_days > 0)


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: AsyncEngine = make_async_engine(settings.database_url)
        self.sessions = make_sessionmaker(self.engine)
        self.store = open_store(settings.storage_url, settings)
        self.coord = open_coordination(settings.database_url, settings.run_dir)
        self.http: httpx.AsyncClient = make_client(settings.upstream_timeout, settings.ca_bundle)
        self.audit = AuditLog(self.sessions, key_path=settings.key_dir / "audit-ed25519.pem")
        self.audit.archive = AuditArchive(self.audit, self.sessions, self.store)
        self.indexes = IndexService(self.sessions)
        self.tokens = TokenService(self.sessions, self.indexes, self.audit)
        self.teams = TeamService(self.sessions, self.indexes, self.audit, self.changed)
        self.vulns = VulnDB(self.sessions)
        self.metadata = MetadataService(self.sessions, self.store, self.http)
        self.threats = ThreatService(self.sessions, self.store, self.audit, self.changed)
        self.policies = PolicyService(
            self.sessions,
            self.vulns,
            self.metadata,
            self.threats,
            popular_path=settings.home / "popular_pypi.txt",
        )
        self.identity = IdentityService(
            self.sessions, self.http, self.audit, self.changed, self.policies.popular
        )
        self.policies.identity = self.identity
        self.pages = PageService(
            settings,
            self.sessions,
            self.indexes,
            {},
            self._upstream,
            self.audit,
            self.policies,
        )
        self.pages.on_mirror_page = self.identity.observe_later
        self.metadata.on_new = self.pages.clear_project
        self.files = FileService(
            settings,
            self.sessions,
            self.store,
            self.indexes,
            self.pages,
            self.audit,
            self.http,
            self.metadata,
            self.threats,
            self.coord,
        )
        self.uploads = UploadService(
            self.sessions, self.store, self.pages, self.audit, self.metadata, self.threats
        )
        self.provenance = ProvenanceService(
            self.sessions, self.audit, self.indexes.get, self.pages.upstream
        )
        self.pages.provenance = self.files.provenance = self.provenance
        self.policies.provenance = self.uploads.provenance = self.provenance
        self.identity.provenance = self.provenance
        self.uploads.identity = self.identity
        self.conda = CondaService(
            settings, self.sessions, self.store, self.indexes, self.audit, self.http, self.changed
        )
        self.conda.policy = CondaPolicy(self.policies, self.vulns)
        self.conda.policy.threats = self.threats
        self.conda.policy.popular_path = settings.home / SHIPPED_CONDA
        self.conda.threats = self.threats
        self.conda.coord = self.coord
        self.conda_trust = CondaTrust(settings, self.sessions, self.audit)
        self.conda.trust = self.conda_trust
        self.console = ConsoleService(
            self.sessions,
            self.audit,
            ttl=int(settings.extra.get("console_session_ttl", SESSION_TTL)),
        )
        self.alerts = AlertService(
            settings, self.sessions, self.vulns, self.tokens, self.audit, self.http
        )
        self.envs = EnvironmentService(self.sessions, self.store, self.vulns, self.audit)
        self.envs.pages, self.envs.indexes, self.envs.alerts = self.pages, self.indexes, self.alerts
        self.envs.conda = self.conda
        self.tuf = TufService(
            settings, self.sessions, self.store, self.indexes, self.pages, self.audit
        )
        self.pages.on_page = self.tuf.page_built
        self.uploads.on_change = self.files.on_stored = self.tuf.project_changed
        self.jobs: JobQueue = make_queue(
            settings, self.sessions, self._job_tasks(), self._periodic()
        )
        self.threats.queue = self.jobs
        self.threats.on_finding = self.threat_found
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False

    def _upstream(self, url: str) -> UpstreamIndex:
        return UpstreamIndex(self.http, url, self.settings.max_page_size)

    # -- background jobs (services/jobs.py) -----------------------------------------------------

    def _job_tasks(self) -> dict[str, Task]:
        def job(handler: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
            async def run(**kwargs: Any) -> None:
                self.check_invalidation()  # the job may follow a change made in another process
                await handler(**kwargs)

            return run

        tasks = [
            Task("scan", job(self._scan_job), "scans", lambda a: f"scan:{a['sha256']}"),
            Task("vulndb.sync", job(self.sync_vulndb), lock=lambda a: "vulndb.sync"),
            Task("envs.reevaluate", job(self._reevaluate_job)),
            Task("audit.archive", job(self.archive_audit), lock=lambda a: "audit.archive"),
            Task(
                "tuf.refresh",
                job(self._tuf_job),
                lock=lambda a: f"tuf.refresh:{a.get('index') or '*'}",
            ),
        ]
        return {t.name: t for t in tasks}

    def _periodic(self) -> list[Periodic]:
        """procrastinate's periodic tasks (one job per tick, cluster-wide); the in-process
        queue has loops instead (``start``)."""
        out = []
        if self.settings.vulndb_sync_interval > 0:
            out.append(Periodic("vulndb.sync", self.settings.vulndb_sync_interval))
        if self.settings.tuf_refresh_interval > 0:
            out.append(Periodic("tuf.refresh", self.settings.tuf_refresh_interval))
        if self.settings.audit_retention_days > 0:
            out.append(Periodic("audit.archive", AUDIT_ARCHIVE_EVERY))
        return out

    async def archive_audit(self) -> None:
        """Retention (``audit_retention_days``): move audit events older than that from the
        database to storage, as signed segments (services/audit_archive.py)."""
        days = self.settings.audit_retention_days
        if days > 0 and self.audit.archive is not None:
            before = utcnow() - timedelta(days=days)
            made = await self.audit.archive.archive(before)
            if made:
                log.info("audit retention: archived %d segment(s)", len(made))

    async def _scan_job(self, sha256: str, filename: str) -> None:
        await self.threats.ensure(sha256, filename)

    async def _reevaluate_job(
        self, cause: str, packages: list[list[str]] | None = None, index: str | None = None
    ) -> None:
        if index is not None:
            await self.envs.reevaluate_index(index, cause=cause)
        if packages:
            await self.envs.reevaluate_packages([(e, n) for e, n in packages], cause=cause)
        await self.audit.flush()

    async def _tuf_job(self, index: str | None = None) -> None:
        """One index's pages signed afresh (after a policy change), or, with no index, the
        metadata close to expiry re-signed (the periodic refresh)."""
        if index is not None:
            await self.indexes.get(index)
            self.tuf.index_changed(index)
            await self.tuf.flush()
        else:
            self.tuf.clear()  # `tuf init` in another process
            await self.tuf.refresh_expiring()

    def start(self, *, worker: bool | None = None) -> None:
        """Background work of a long-running process (a server, ``stockade worker``):
        ``worker`` (default: the ``job_worker`` setting) runs procrastinate jobs here."""
        self._started = True
        self.coord.start()
        self.audit.start()
        inprocess = self.jobs.engine == "inprocess"
        self.tuf.start(refresh=inprocess)  # procrastinate: the periodic tuf.refresh job
        if inprocess:
            self._tasks.append(asyncio.create_task(self._prune_jobs(), name="jobs-prune"))
            if self.settings.vulndb_sync_interval > 0:
                self._tasks.append(asyncio.create_task(self._sync_loop(), name="vulndb-sync"))
            if self.settings.audit_retention_days > 0:
                self._tasks.append(asyncio.create_task(self._archive_loop(), name="audit-archive"))
        elif self.settings.job_worker if worker is None else worker:
            self.jobs.start_worker()

    async def _prune_jobs(self) -> None:
        from stockade.services.jobs import InProcessQueue

        assert isinstance(self.jobs, InProcessQueue)
        while True:
            await self.jobs.prune()
            await asyncio.sleep(86400)

    async def _archive_loop(self) -> None:
        """In-process queue: audit retention once at start and then daily, as a job; the
        ``audit.archive`` lock keeps processes from archiving at once (a race is harmless
        anyway: segments are unique by their first seq)."""
        while True:
            try:
                await self.jobs.defer("audit.archive", background=True)
            except Exception:
                log.exception("audit retention: cannot queue the archive job")
            await asyncio.sleep(AUDIT_ARCHIVE_EVERY)

    async def _sync_loop(self) -> None:
        """In-process queue: sync the vulnerability feed every ``vulndb_sync_interval`` seconds
        as a ``vulndb.sync`` job. Several processes may run this loop; a file lock lets one of
        them sync at a time. (procrastinate: a periodic job instead.)"""
        import fcntl

        lock_path = self.settings.run_dir / "vulndb-sync.lock"
        while True:
            with lock_path.open("a") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    mine = True
                except BlockingIOError:  # another process is syncing
                    mine = False
                if mine:
                    try:
                        job = await self.jobs.defer("vulndb.sync", background=True)
                        if job is not None:
                            await self.jobs.wait([job])
                    except Exception:  # e.g. the database is busy: the next tick tries again
                        log.exception("vulndb sync job could not be run")
            await asyncio.sleep(self.settings.vulndb_sync_interval)

    def check_invalidation(self) -> None:
        """Drop caches when another process changed configuration (one stat per call)."""
        self._drop(self.coord.changed())

    def clear_caches(self) -> None:
        self.indexes.clear()
        self.tokens.clear()
        self.pages.clear()
        self.vulns.clear()
        self.policies.clear()
        self.threats.clear()
        self.identity.clear()
        self.conda.clear()
        self.conda_trust.clear()
        self.tuf.clear()

    def changed(self, scope: str = "all") -> None:
        """Tell every process (this one included) that configuration changed: ``"all"``, or
        ``"tokens"`` when only a token was revoked (pages and policies stay cached)."""
        self.coord.bump(scope)
        self._drop(frozenset({scope}))

    def _drop(self, scopes: frozenset[str]) -> None:
        """Drop the caches a change of ``scopes`` touches (see coordination.SCOPES)."""
        if "tokens" in scopes and len(scopes) == 1:
            self.tokens.clear()
        elif scopes:
            self.clear_caches()

    async def sync_vulndb(self, url: str | None = None) -> None:
        """The ``vulndb.sync`` job: download the feed and import it; a failure raises (the
        queue retries it and shows the error)."""
        url = url or self.settings.vulndb_url
        try:
            report = await self.vulns.sync(url, self.http)
        except Exception as exc:
            self.audit.record("vulndb.sync", outcome="error", url=url, reason=str(exc))
            await self.audit.flush()
            raise
        log.info("vulndb sync: %d added, %d updated", report.added, report.updated)
        self.audit.record("vulndb.sync", url=url, added=report.added, updated=report.updated)
        if report.added or report.updated:
            self.changed()
            try:
                await self.advisories_changed(report.changed)
            except Exception as exc:  # the import stands; a retry would find nothing new
                log.warning("alerts after the sync failed: %s", exc)
        await self.audit.flush()

    async def advisories_changed(self, ids: list[str]) -> list[dict[str, Any]]:
        """After an import or sync: alerts for affected downloads (returned), and an
        ``envs.reevaluate`` job for the environments that contain a package of a changed
        advisory. Callers announce the change first (``changed()``), which drops the caches."""
        alerts = await self.alerts.after_import(ids)
        if ids:
            shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            packages = sorted(await self.vulns.packages_of(ids))
            if packages:
                await self.jobs.defer(
                    "envs.reevaluate",
                    packages=[list(p) for p in packages],
                    cause=f"advisories changed: {shown}",
                )
        await self.audit.flush()
        return alerts

    async def curated(self, c: Curation, actor: str | None, client: str | None = None) -> None:
        """After a curation, wherever it was made (CLI, API, console): audited, announced to
        every process, and the environments containing the package re-evaluated (a job)."""
        self.audit.record(
            "vuln.curate",
            actor=actor,
            project=c.package,
            advisory=c.advisory_id,
            status=c.status,
            versions=c.versions,
            justification=c.justification,
            reason=c.reason,
            client=client,
        )
        self.changed()
        await self.audit.flush()
        await self.jobs.defer(
            "envs.reevaluate",
            packages=[[c.ecosystem, c.package]],
            cause=f"curation of {c.advisory_id} for {c.package}",
        )

    async def threat_found(self, report: ScanReport) -> None:
        """After the scanner flags a file: re-evaluate the environments that pin its package
        (a job; only those versions, only those pins)."""
        from stockade.services.environments import package_of_file

        found = package_of_file(report.filename)
        if found is None:
            return
        eco, name, version = found
        await self.jobs.defer(
            "envs.reevaluate",
            packages=[[eco, name]],
            cause=f"threat finding: {report.filename} ({name} {version}) is {report.verdict}",
        )

    async def policy_changed(self, index: str, version: int) -> None:
        """After a policy change (announced with ``changed()``): jobs re-sign the index (when
        it is signed) and re-evaluate the environments bound to it."""
        await self.audit.flush()
        if (await self.tuf.enabled()).get(index) is not None:
            await self.jobs.defer("tuf.refresh", index=index)
        await self.jobs.defer("envs.reevaluate", index=index, cause=f"policy of {index} v{version}")

    async def close(self) -> None:
        await self.jobs.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.tuf.close()
        await self.files.close()
        await self.conda.close()
        await self.threats.close()
        await self.identity.close()
        await self.audit.close()
        await self.coord.close()
        await self.http.aclose()
        await self.engine.dispose()

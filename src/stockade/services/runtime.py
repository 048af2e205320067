"""Runtime: builds the services from Settings and owns their lifecycle (start/close).

Both doors use it: the web app for the life of the server, the CLI for one command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from stockade.adapters.http import make_client
from stockade.adapters.pypi import UpstreamIndex
from stockade.adapters.storage import open_store
from stockade.db.engine import make_async_engine, make_sessionmaker
from stockade.services.alerts import AlertService
from stockade.services.audit import AuditLog
from stockade.services.conda import CondaService
from stockade.services.conda_policy import CondaPolicy
from stockade.services.console import SESSION_TTL, ConsoleService
from stockade.services.coordination import open_coordination
from stockade.services.environments import EnvironmentService
from stockade.services.files import FileService
from stockade.services.identity import IdentityService
from stockade.services.indexes import IndexService
from stockade.services.metadata import MetadataService
from stockade.services.pages import PageService
from stockade.services.policies import PolicyService
from stockade.services.teams import TeamService
from stockade.services.threats import ThreatService
from stockade.services.tokens import TokenService
from stockade.services.tuf import TufService
from stockade.services.uploads import UploadService
from stockade.services.vulndb import Curation, VulnDB
from stockade.settings import Settings

log = logging.getLogger("stockade.runtime")


class Runtime:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: AsyncEngine = make_async_engine(settings.database_url)
        self.sessions = make_sessionmaker(self.engine)
        self.store = open_store(settings.storage_url, settings)
        self.coord = open_coordination(settings.database_url, settings.run_dir)
        self.http: httpx.AsyncClient = make_client(settings.upstream_timeout, settings.ca_bundle)
        self.audit = AuditLog(self.sessions, key_path=settings.key_dir / "audit-ed25519.pem")
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
        self.conda = CondaService(
            settings, self.sessions, self.store, self.indexes, self.audit, self.http, self.changed
        )
        self.conda.policy = CondaPolicy(self.policies, self.vulns)
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
        self.tuf = TufService(
            settings, self.sessions, self.store, self.indexes, self.pages, self.audit
        )
        self.pages.on_page = self.tuf.page_built
        self.uploads.on_change = self.files.on_stored = self.tuf.project_changed
        self._tasks: list[asyncio.Task[None]] = []

    def _upstream(self, url: str) -> UpstreamIndex:
        return UpstreamIndex(self.http, url, self.settings.max_page_size)

    def start(self) -> None:
        """Background work of a server process (the CLI builds a Runtime without it)."""
        self.coord.start()
        self.audit.start()
        self.tuf.start()
        if self.settings.vulndb_sync_interval > 0:
            self._tasks.append(asyncio.create_task(self._sync_loop(), name="vulndb-sync"))

    async def _sync_loop(self) -> None:
        """Sync the vulnerability feed every ``vulndb_sync_interval`` seconds. Several workers
        may run this loop; a file lock lets one of them sync at a time."""
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
                    await self._sync_once()
            await asyncio.sleep(self.settings.vulndb_sync_interval)

    def check_invalidation(self) -> None:
        """Drop caches when another process changed configuration (one stat per call)."""
        if self.coord.changed():
            self.clear_caches()

    def clear_caches(self) -> None:
        self.indexes.clear()
        self.tokens.clear()
        self.pages.clear()
        self.vulns.clear()
        self.policies.clear()
        self.threats.clear()
        self.identity.clear()
        self.conda.clear()
        self.tuf.clear()

    def changed(self) -> None:
        """Tell every process (this one included) that configuration changed."""
        self.coord.bump()
        self.clear_caches()

    async def _sync_once(self) -> None:
        url = self.settings.vulndb_url
        try:
            report = await self.vulns.sync(url, self.http)
        except Exception as exc:  # keep the schedule alive; say what failed
            log.warning("vulndb sync from %s failed: %s", url, exc)
            self.audit.record("vulndb.sync", outcome="error", url=url, reason=str(exc))
            return
        log.info("vulndb sync: %d added, %d updated", report.added, report.updated)
        self.audit.record("vulndb.sync", url=url, added=report.added, updated=report.updated)
        if report.added or report.updated:
            self.changed()
            try:
                await self.advisories_changed(report.changed)
            except Exception as exc:  # alerts must not stop the sync schedule
                log.warning("alerts after the sync failed: %s", exc)

    async def advisories_changed(
        self, ids: list[str]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """After an import or sync: alerts for affected downloads, and the environments that
        contain a package of a changed advisory re-evaluated. (alerts, environment changes)
        Callers announce the change first (``changed()``), which drops the caches."""
        alerts = await self.alerts.after_import(ids)
        if not ids:
            return alerts, []
        shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
        changes = await self.envs.reevaluate_packages(
            await self.vulns.packages_of(ids), cause=f"advisories changed: {shown}"
        )
        await self.audit.flush()
        return alerts, changes

    async def curated(
        self, c: Curation, actor: str | None, client: str | None = None
    ) -> list[dict[str, Any]]:
        """After a curation, wherever it was made (CLI, API, console): audited, announced to
        every process, and the environments containing the package re-evaluated."""
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
        changes = await self.envs.reevaluate_packages(
            [(c.ecosystem, c.package)], cause=f"curation of {c.advisory_id} for {c.package}"
        )
        await self.audit.flush()
        return changes

    async def policy_changed(self, index: str, version: int) -> list[dict[str, Any]]:
        """After a policy change (announced with ``changed()``): the index re-signed and the
        environments bound to it re-evaluated."""
        self.tuf.index_changed(index)
        changes = await self.envs.reevaluate_index(index, cause=f"policy of {index} v{version}")
        await self.audit.flush()
        return changes

    async def close(self) -> None:
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

"""Alerts: a new or changed advisory affects versions that were already downloaded.

After every feed sync or import (:meth:`AlertService.after_import` with the ids it added or
changed), the advisories naming a project somebody downloaded are checked with
:func:`stockade.services.response.affected_downloads` (curations applied). Each downloading team
gets one alert per advisory: a JSON POST to its webhook (``alert_team_webhooks``) or else to
``alert_webhook``, and an audit event ``alert.raised`` (outcome ok, error or unsent when no
webhook is configured) that the console and ``audit list --action alert.raised`` show. The same
downloads are not alerted twice: an alert carries a fingerprint of what it reports.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from typing import Any

import httpx
import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.db.models import AdvisoryPackageRow, AuditRow
from stockade.services.audit import AuditLog, query_events
from stockade.services.response import affected_downloads
from stockade.services.tokens import TokenService
from stockade.services.vulndb import VulnDB
from stockade.settings import Settings

log = logging.getLogger("stockade.alerts")
WEBHOOK_TIMEOUT = 10.0


class AlertService:
    def __init__(
        self,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
        vulns: VulnDB,
        tokens: TokenService,
        audit: AuditLog,
        client: httpx.AsyncClient,
    ) -> None:
        self._settings = settings
        self._sessions = sessions
        self._vulns = vulns
        self._tokens = tokens
        self._audit = audit
        self._client = client

    async def _candidates(self, changed: Iterable[str]) -> list[str]:
        """Changed advisories that name a PyPI project with a recorded download."""
        ids = sorted(set(changed))
        if not ids:
            return []
        async with self._sessions() as s:
            q = (
                select(AuditRow.project)
                .where(AuditRow.action == "download", AuditRow.outcome == "ok")
                .distinct()
            )
            downloaded = {p for p in (await s.execute(q)).scalars() if p}
            if not downloaded:
                return []
            out: set[str] = set()
            for i in range(0, len(ids), 500):
                q2 = select(AdvisoryPackageRow.advisory_id, AdvisoryPackageRow.name).where(
                    AdvisoryPackageRow.advisory_id.in_(ids[i : i + 500]),
                    AdvisoryPackageRow.ecosystem == "PyPI",
                )
                for adv, name in (await s.execute(q2)).tuples():
                    if name in downloaded:
                        out.add(adv)
        return sorted(out)

    async def _sent_before(self) -> set[str]:
        return {
            str((e["detail"] or {}).get("fingerprint"))
            async for e in query_events(self._sessions, action="alert.raised")
        }

    async def after_import(self, changed: Iterable[str]) -> list[dict[str, Any]]:
        """Raise the alerts the changed advisories call for; returns what was raised."""
        candidates = await self._candidates(changed)
        if not candidates:
            return []
        await self._audit.flush()  # downloads still queued count too
        sent = await self._sent_before()
        raised: list[dict[str, Any]] = []
        for ident in candidates:
            found = await affected_downloads(self._sessions, self._vulns, self._tokens, ident)
            by_team: dict[str | None, list[dict[str, Any]]] = {}
            for d in found["downloads"]:
                by_team.setdefault(d["team"], []).append(d)
            for team, downloads in sorted(by_team.items(), key=lambda kv: kv[0] or ""):
                fingerprint = hashlib.sha256(
                    orjson.dumps(
                        [
                            found["advisory"],
                            team,
                            sorted(
                                (d["token"] or "", d["index"] or "", d["version"])
                                for d in downloads
                            ),
                        ]
                    )
                ).hexdigest()[:32]
                if fingerprint in sent:
                    continue
                sent.add(fingerprint)
                alert = {
                    "event": "vulnerability.affects_downloads",
                    "advisory": found["advisory"],
                    "aliases": found["aliases"],
                    "summary": found["summary"],
                    "team": team,
                    "downloads": downloads,
                }
                outcome, detail = await self.deliver(team, alert)
                self._audit.record(
                    "alert.raised",
                    outcome=outcome,
                    project=downloads[0]["project"],
                    advisory=found["advisory"],
                    team=team,
                    versions=sorted({d["version"] for d in downloads}),
                    tokens=sorted({d["token"] or "anonymous" for d in downloads}),
                    fingerprint=fingerprint,
                    delivery=detail,
                )
                raised.append({**alert, "delivery": detail, "outcome": outcome})
        await self._audit.flush()
        return raised

    async def deliver(self, team: str | None, alert: dict[str, Any]) -> tuple[str, str]:
        """POST ``alert`` to the team's webhook (or the default one): (outcome, detail)."""
        url = (self._settings.alert_team_webhooks.get(team) if team else None) or (
            self._settings.alert_webhook
        )
        if not url:
            return "unsent", "no webhook configured (alert_webhook / alert_team_webhooks)"
        try:
            resp = await self._client.post(
                url,
                content=orjson.dumps(alert),
                headers={"Content-Type": "application/json"},
                timeout=WEBHOOK_TIMEOUT,
            )
        except httpx.HTTPError as exc:
            log.warning("alert webhook %s failed: %s", url, exc)
            return "error", f"{url}: {exc}"
        if resp.status_code >= 300:
            return "error", f"{url} answered {resp.status_code}"
        return "ok", f"{url} answered {resp.status_code}"

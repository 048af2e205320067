"""Environments: the lock files teams run, stored as immutable numbered versions and watched.

``push`` reads a lock file with core/lockfiles (every supported format), stores the bytes in the
blob store, records its pins (``environment_packages``, indexed by package) and evaluates it:

* vulnerabilities: the curated verdict (feed + newest covering curation) of every pin; an open
  finding (affected / under investigation) is a problem;
* threats: known-malicious (OSV ``MAL-``) records, and the malware scanner's ``malicious``
  verdict on any stored file of a pinned version (a new verdict re-evaluates the versions that
  pin that package);
* policy: when the version is bound to an index, whether the index would still serve the pinned
  version (at least one of its files allowed), with the rule that blocks it.

Problems are kept per pin (``"name==version"`` → list), and the status is red when any pin has
one. Watching: when advisories change (import, sync, curation) only the versions containing the
changed packages are re-evaluated, and only for those pins; a policy change re-evaluates the
versions bound to that index. A change of status is recorded with its cause
(``environment_status_changes``), audited (``env.status``) and sent to the team's webhook.
"""

from __future__ import annotations

import builtins
import logging
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from stockade.core.conda.names import parse_filename as parse_conda_filename
from stockade.core.lockfiles import Inventory, read_inventory
from stockade.core.ports import BlobStore
from stockade.core.simple import project_from_filename, version_from_filename
from stockade.db.models import (
    EnvironmentPackageRow,
    EnvironmentRow,
    EnvironmentStatusRow,
    EnvironmentVersionRow,
    ScanReportRow,
)
from stockade.errors import Conflict, InvalidRequest, NotFound, StockadeError
from stockade.services.audit import AuditLog
from stockade.services.repo import aware, utcnow
from stockade.services.vulndb import VulnDB, normalize_package
from stockade.types import IndexKind

if TYPE_CHECKING:
    from stockade.services.alerts import AlertService
    from stockade.services.conda import CondaService
    from stockade.services.indexes import IndexService
    from stockade.services.pages import PageService
    from stockade.services.repo import IndexInfo

log = logging.getLogger("stockade.environments")

OPEN = ("affected", "under_investigation")
MALICIOUS_PREFIX = "MAL-"
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def split_ref(ref: str) -> tuple[str, str, int | None]:
    """``TEAM/NAME[@VERSION]`` → (team, name, version or None)."""
    version: int | None = None
    text = ref.strip()
    if "@" in text:
        text, _, v = text.rpartition("@")
        if not v.isdigit():
            raise InvalidRequest(f"{ref!r}: the version after @ is a number", "e.g. ml/train@3")
        version = int(v)
    team, sep, name = text.partition("/")
    if not sep or not _PART.match(team) or not _PART.match(name):
        raise InvalidRequest(
            f"{ref!r} is not TEAM/NAME", "e.g. ml/train (letters, digits, . _ -), optionally @3"
        )
    return team, name.lower(), version


def pin_key(name: str, version: str) -> str:
    return f"{name}=={version}"


@dataclass(frozen=True, slots=True)
class EnvVersion:
    team: str
    name: str
    version: int
    kind: str
    filename: str
    sha256: str
    size: int
    index: str | None
    status: str
    problems: dict[str, list[dict[str, Any]]]
    packages: tuple[tuple[str, str, str], ...]  # (ecosystem, name, version)
    created_at: str
    created_by: str | None
    evaluated_at: str
    note: str | None = None
    id: int = 0

    @property
    def ref(self) -> str:
        return f"{self.team}/{self.name}@{self.version}"

    def as_dict(self, packages: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ref": self.ref,
            "team": self.team,
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "filename": self.filename,
            "sha256": self.sha256,
            "size": self.size,
            "index": self.index,
            "status": self.status,
            "problems": {k: v for k, v in sorted(self.problems.items()) if v},
            "created_at": self.created_at,
            "created_by": self.created_by,
            "evaluated_at": self.evaluated_at,
            "note": self.note,
            "package_count": len(self.packages),
        }
        if packages:
            out["packages"] = [
                {"ecosystem": e, "name": n, "version": v} for e, n, v in self.packages
            ]
        return out


class EnvironmentService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        store: BlobStore,
        vulns: VulnDB,
        audit: AuditLog,
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._vulns = vulns
        self._audit = audit
        self.pages: PageService | None = None  # wired by Runtime (policy verdicts)
        self.indexes: IndexService | None = None
        self.alerts: AlertService | None = None
        self.conda: CondaService | None = None  # conda channels' policy verdicts

    # -- pushing -------------------------------------------------------------------------------

    async def push(
        self,
        ref: str,
        filename: str,
        content: bytes,
        *,
        index: str | None = None,
        author: str | None = None,
        note: str | None = None,
        kind: str | None = None,
    ) -> EnvVersion:
        """Store a new version of TEAM/NAME from a lock file's bytes (nothing is stored when the
        file cannot be read: the error names the file and line)."""
        team, name, at = split_ref(ref)
        if at is not None:
            raise InvalidRequest(
                f"{ref!r}: versions are numbered by Stockade", f"push {team}/{name}"
            )
        safe = Path(filename).name or "lockfile"
        inv = _inventory(safe, content, kind)
        lost = [w for w in inv.warnings if w.endswith(("skipped", "ignored"))]
        if lost:
            raise InvalidRequest(
                f"{safe} cannot be stored as a lock: " + "; ".join(lost[:5]),
                "fix those lines (or regenerate the file with the tool that wrote it)",
            )
        if inv.unpinned:
            shown = ", ".join(f"{p.spec or p.name} ({p.source})" for p in inv.unpinned[:5])
            raise InvalidRequest(
                f"{safe} has entries without an exact version: {shown}",
                "an environment is a lock: pin every package (==), or use `stockade env lock`",
            )
        if not inv.pins:
            raise InvalidRequest(
                f"{safe} pins no package ({len(inv.unpinned)} entries without an exact version)",
                "push a lock file (every package with ==version); `stockade env lock` makes one",
            )
        if index is not None and self.indexes is not None:
            await self.indexes.get(index)  # a clear error when it does not exist
        sha = self._store.put_bytes(content)
        packages = tuple(
            sorted({(p.ecosystem, p.name, p.version or "") for p in inv.pins if p.version})
        )
        problems = {k: v for k, v in (await self._evaluate(packages, index)).items() if v}
        now = utcnow()
        for _attempt in range(5):
            try:
                async with self._sessions() as s, s.begin():
                    env = (
                        await s.execute(
                            select(EnvironmentRow).where(
                                EnvironmentRow.team == team, EnvironmentRow.name == name
                            )
                        )
                    ).scalar_one_or_none()
                    if env is None:
                        env = EnvironmentRow(
                            team=team, name=name, created_at=now, created_by=author
                        )
                        s.add(env)
                        await s.flush()
                    last = (
                        await s.execute(
                            select(EnvironmentVersionRow.version)
                            .where(EnvironmentVersionRow.env_id == env.id)
                            .order_by(EnvironmentVersionRow.version.desc())
                            .limit(1)
                        )
                    ).scalar_one_or_none()
                    row = EnvironmentVersionRow(
                        env_id=env.id,
                        version=(last or 0) + 1,
                        kind=inv.kind,
                        filename=safe,
                        sha256=sha,
                        size=len(content),
                        index_name=index,
                        status=_status(problems),
                        problems=problems,
                        evaluated_at=now,
                        created_at=now,
                        created_by=author,
                        note=note,
                    )
                    s.add(row)
                    await s.flush()
                    s.add_all(
                        EnvironmentPackageRow(version_id=row.id, ecosystem=e, name=n, version=v)
                        for e, n, v in packages
                    )
                    version = row.version
                break
            except IntegrityError:  # a concurrent push took the number (or the name): retry
                continue
        else:
            raise Conflict(f"could not number a new version of {team}/{name}", "try again")
        self._audit.record(
            "env.push",
            actor=author,
            project=f"{team}/{name}",
            filename=safe,
            version=version,
            status=_status(problems),
            index_name=index,
        )
        return await self.get(f"{team}/{name}@{version}")

    # -- reading -------------------------------------------------------------------------------

    async def _row(
        self, s: AsyncSession, team: str, name: str, version: int | None
    ) -> tuple[EnvironmentRow, EnvironmentVersionRow]:
        env = (
            await s.execute(
                select(EnvironmentRow).where(
                    EnvironmentRow.team == team, EnvironmentRow.name == name
                )
            )
        ).scalar_one_or_none()
        if env is None:
            raise NotFound(f"no environment {team}/{name}", "see `stockade env list`")
        q = select(EnvironmentVersionRow).where(EnvironmentVersionRow.env_id == env.id)
        if version is None:
            q = q.order_by(EnvironmentVersionRow.version.desc()).limit(1)
        else:
            q = q.where(EnvironmentVersionRow.version == version)
        row = (await s.execute(q)).scalar_one_or_none()
        if row is None:
            raise NotFound(
                f"{team}/{name} has no version {version}", f"see `stockade env show {team}/{name}`"
            )
        return env, row

    async def get(self, ref: str) -> EnvVersion:
        team, name, version = split_ref(ref)
        async with self._sessions() as s:
            env, row = await self._row(s, team, name, version)
            packages = await self._packages(s, row.id)
        return _version(env, row, packages)

    async def _packages(self, s: AsyncSession, version_id: int) -> tuple[tuple[str, str, str], ...]:
        q = select(
            EnvironmentPackageRow.ecosystem,
            EnvironmentPackageRow.name,
            EnvironmentPackageRow.version,
        ).where(EnvironmentPackageRow.version_id == version_id)
        return tuple(sorted((e, n, v) for e, n, v in (await s.execute(q)).tuples()))

    async def pull(self, ref: str) -> tuple[EnvVersion, bytes]:
        got = await self.get(ref)
        return got, self._store.read_bytes(got.sha256)

    async def latest(self, team: str | None = None) -> builtins.list[EnvVersion]:
        """The newest version of every environment (of ``team``)."""
        async with self._sessions() as s:
            q = select(EnvironmentRow).order_by(EnvironmentRow.team, EnvironmentRow.name)
            if team is not None:
                q = q.where(EnvironmentRow.team == team)
            out = []
            for env in (await s.execute(q)).scalars():
                try:
                    _, row = await self._row(s, env.team, env.name, None)
                except NotFound:
                    continue
                out.append(_version(env, row, ()))
        return out

    async def versions(self, ref: str) -> list[EnvVersion]:
        team, name, _ = split_ref(ref)
        async with self._sessions() as s:
            env = (
                await s.execute(
                    select(EnvironmentRow).where(
                        EnvironmentRow.team == team, EnvironmentRow.name == name
                    )
                )
            ).scalar_one_or_none()
            if env is None:
                raise NotFound(f"no environment {team}/{name}", "see `stockade env list`")
            q = (
                select(EnvironmentVersionRow)
                .where(EnvironmentVersionRow.env_id == env.id)
                .order_by(EnvironmentVersionRow.version)
            )
            return [_version(env, r, ()) for r in (await s.execute(q)).scalars()]

    async def history(self, ref: str) -> list[dict[str, Any]]:
        """Status changes of a version, oldest first, with their causes."""
        got = await self.get(ref)
        async with self._sessions() as s:
            q = (
                select(EnvironmentStatusRow)
                .where(EnvironmentStatusRow.version_id == got.id)
                .order_by(EnvironmentStatusRow.id)
            )
            return [
                {
                    "at": (aware(r.at) or utcnow()).isoformat(),
                    "from": r.old_status,
                    "to": r.new_status,
                    "cause": r.cause,
                    "detail": r.detail,
                }
                for r in (await s.execute(q)).scalars()
            ]

    async def diff(self, a: str, b: str) -> dict[str, Any]:
        """Packages added, removed and changed from A to B, and the problems that changed."""
        old, new = await self.get(a), await self.get(b)
        before = {(e, n): v for e, n, v in old.packages}
        after = {(e, n): v for e, n, v in new.packages}
        changed = []
        for key in sorted(before.keys() & after.keys()):
            if before[key] != after[key]:
                changed.append(
                    {
                        "ecosystem": key[0],
                        "name": key[1],
                        "from": before[key],
                        "to": after[key],
                        "direction": _direction(key[0], before[key], after[key]),
                    }
                )
        old_p = {k for k, v in old.problems.items() if v}
        new_p = {k for k, v in new.problems.items() if v}
        return {
            "from": old.ref,
            "to": new.ref,
            "added": [
                {"ecosystem": e, "name": n, "version": after[(e, n)]}
                for e, n in sorted(after.keys() - before.keys())
            ],
            "removed": [
                {"ecosystem": e, "name": n, "version": before[(e, n)]}
                for e, n in sorted(before.keys() - after.keys())
            ],
            "changed": changed,
            "problems_fixed": {k: old.problems[k] for k in sorted(old_p - new_p)},
            "problems_new": {k: new.problems[k] for k in sorted(new_p - old_p)},
            "status": {"from": old.status, "to": new.status},
        }

    # -- evaluating ----------------------------------------------------------------------------

    async def _evaluate(
        self, packages: Iterable[tuple[str, str, str]], index: str | None
    ) -> dict[str, list[dict[str, Any]]]:
        pins = list(packages)
        found = await self._vulns.query_many((e, n, v) for e, n, v in pins)
        out: dict[str, list[dict[str, Any]]] = {}
        for e, n, v in pins:
            problems: list[dict[str, Any]] = []
            for f in found.get((*normalize_package(e, n), v), []):
                if f.status not in OPEN:
                    continue
                malicious = f.id.startswith(MALICIOUS_PREFIX)
                problems.append(
                    {
                        "kind": "malicious" if malicious else "vulnerability",
                        "id": f.id,
                        "aliases": list(f.aliases),
                        "severity": f.severity,
                        "status": f.status,
                        "decided_by": f.decided_by,
                        "fixed_in": list(f.fixed_versions),
                    }
                )
            out[pin_key(n, v)] = problems
        for key, flagged in (await self._threats(pins)).items():
            out.setdefault(key, []).extend(flagged)
        if index is not None:
            for (_e, n, v), blocked in (await self._policy(index, pins)).items():
                if blocked:
                    out.setdefault(pin_key(n, v), []).append(blocked)
        return out

    async def _threats(self, pins: list[tuple[str, str, str]]) -> dict[str, list[dict[str, Any]]]:
        """Per pin key: the malware scanner's ``malicious`` verdicts on a file of that exact
        version (any file Stockade stored: uploaded or mirrored). Flagged reports are few; the
        verdict column is indexed."""
        wanted = {
            (*normalize_package(e, n), _norm_version(e, v)): pin_key(n, v) for e, n, v in pins
        }
        out: dict[str, list[dict[str, Any]]] = {}
        async with self._sessions() as s:
            q = select(
                ScanReportRow.sha256,
                ScanReportRow.filename,
                ScanReportRow.score,
                ScanReportRow.findings,
            ).where(ScanReportRow.verdict == "malicious")
            for sha, filename, score, findings in await s.execute(q):
                found = package_of_file(filename)
                key = wanted.get(found) if found is not None else None
                if key is None:
                    continue
                rules = sorted({str(f.get("rule")) for f in findings or [] if isinstance(f, dict)})
                out.setdefault(key, []).append(
                    {
                        "kind": "threat",
                        "id": f"scan:{sha[:12]}",
                        "rule": "malware",
                        "file": filename,
                        "sha256": sha,
                        "score": score,
                        "message": f"malware scanner: {filename} is malicious ("
                        + ", ".join(rules[:5])
                        + ")",
                    }
                )
        return out

    async def _policy(
        self, index: str, pins: list[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], dict[str, Any] | None]:
        """Per pin: None when the index serves the version, else the reason it would not."""
        out: dict[tuple[str, str, str], dict[str, Any] | None] = {}
        if self.pages is None or self.indexes is None:
            return out
        info = await self.indexes.get(index)
        if info.kind in (IndexKind.CONDA_MIRROR, IndexKind.CONDA_PRIVATE):
            return await self._conda_policy(info, pins)
        for e, n, v in pins:
            if e != "PyPI":
                continue
            try:
                served = await self.pages.project_page(info, canonicalize_name(n))
            except NotFound:
                out[(e, n, v)] = {
                    "kind": "policy",
                    "rule": "absent",
                    "message": f"{n} is not on {index}",
                }
                continue
            except StockadeError as exc:
                out[(e, n, v)] = {"kind": "policy", "rule": "unavailable", "message": exc.message}
                continue
            files = [
                f
                for f in (served.unfiltered or served.page).files
                if version_from_filename(f.filename) == v
            ]
            if not files:
                out[(e, n, v)] = {
                    "kind": "policy",
                    "rule": "absent",
                    "message": f"{n} {v} is not on {index}",
                }
                continue
            decisions = [served.decisions.get(f.filename) for f in files]
            if any(d is None or d.allowed for d in decisions):
                out[(e, n, v)] = None
                continue
            first = next(d for d in decisions if d is not None)
            out[(e, n, v)] = {
                "kind": "policy",
                "rule": first.blocks[0].kind if first.blocks else "policy",
                "message": "; ".join(r.line() for r in first.blocks),
            }
        return out

    async def _conda_policy(
        self, info: IndexInfo, pins: list[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], dict[str, Any] | None]:
        """Conda pins against a channel: served when a record of that name and version is in
        the channel's policy-filtered repodata (PyPI pins of the environment's pip section are
        not the channel's business and are left alone)."""
        out: dict[tuple[str, str, str], dict[str, Any] | None] = {}
        if self.conda is None:
            return out
        ch = await self.conda.as_channel(info)
        for e, n, v in pins:
            if e != "conda":
                continue
            try:
                served, reasons = await self.conda.pin_verdict(ch, n, v)
            except StockadeError as exc:
                out[(e, n, v)] = {"kind": "policy", "rule": "unavailable", "message": exc.message}
                continue
            if served:
                out[(e, n, v)] = None
            elif reasons:
                out[(e, n, v)] = {
                    "kind": "policy",
                    "rule": "policy",
                    "message": "; ".join(reasons[:3]),
                }
            else:
                out[(e, n, v)] = {
                    "kind": "policy",
                    "rule": "absent",
                    "message": f"{n} {v} is not served by conda channel {info.name}",
                }
        return out

    async def reevaluate_packages(
        self, packages: Iterable[tuple[str, str]], cause: str
    ) -> list[dict[str, Any]]:
        """Re-evaluate the pins of these (ecosystem, name) packages in every version containing
        them; returns the status changes (each also recorded, audited and alerted)."""
        wanted = {normalize_package(e, n) for e, n in packages}
        if not wanted:
            return []
        async with self._sessions() as s:
            rows: dict[int, list[tuple[str, str, str]]] = {}
            p = EnvironmentPackageRow
            for eco in sorted({e for e, _ in wanted}):
                names = sorted(n for e, n in wanted if e == eco)
                for i in range(0, len(names), 500):  # (ecosystem, name): the index's order
                    q = select(p.version_id, p.ecosystem, p.name, p.version).where(
                        p.ecosystem == eco, p.name.in_(names[i : i + 500])
                    )
                    for vid, e, n, v in await s.execute(q):
                        rows.setdefault(vid, []).append((e, n, v))
        return await self._update(rows, cause, full=False)

    async def reevaluate_index(self, index: str, cause: str) -> list[dict[str, Any]]:
        """Re-evaluate every version bound to ``index`` (its policy changed)."""
        async with self._sessions() as s:
            ids = list(
                (
                    await s.execute(
                        select(EnvironmentVersionRow.id).where(
                            EnvironmentVersionRow.index_name == index
                        )
                    )
                ).scalars()
            )
            rows = {vid: list(await self._packages(s, vid)) for vid in ids}
        return await self._update(rows, cause, full=True)

    async def _update(
        self, rows: dict[int, list[tuple[str, str, str]]], cause: str, *, full: bool
    ) -> list[dict[str, Any]]:
        changes: list[dict[str, Any]] = []
        if not rows:
            return changes
        async with self._sessions() as s:
            versions: dict[int, tuple[int, str | None]] = {}
            ids = sorted(rows)
            for i in range(0, len(ids), 500):
                q = select(
                    EnvironmentVersionRow.id,
                    EnvironmentVersionRow.env_id,
                    EnvironmentVersionRow.index_name,
                ).where(EnvironmentVersionRow.id.in_(ids[i : i + 500]))
                versions.update((vid, (env_id, ix)) for vid, env_id, ix in await s.execute(q))
            env_ids = sorted({env_id for env_id, _ in versions.values()})
            envs: dict[int, EnvironmentRow] = {}
            for i in range(0, len(env_ids), 500):
                q2 = select(EnvironmentRow).where(EnvironmentRow.id.in_(env_ids[i : i + 500]))
                envs.update((e.id, e) for e in (await s.execute(q2)).scalars())
        by_index: dict[str | None, set[tuple[str, str, str]]] = {}
        for vid, pins in rows.items():
            if vid in versions:
                by_index.setdefault(versions[vid][1], set()).update(pins)
        fresh: dict[str | None, dict[str, list[dict[str, Any]]]] = {}
        for index, unique in by_index.items():
            fresh[index] = await self._evaluate(sorted(unique), index)
        now = utcnow()
        updates: list[dict[str, Any]] = []
        status_rows: list[dict[str, Any]] = []
        async with self._sessions() as s, s.begin():
            ids = sorted(rows)
            v = EnvironmentVersionRow
            for i in range(0, len(ids), 500):  # one query per 500 versions, not one each
                q3 = select(v.id, v.env_id, v.version, v.index_name, v.status, v.problems).where(
                    v.id.in_(ids[i : i + 500])
                )
                for vid, env_id, number, index, old, stored in await s.execute(q3):
                    pins = rows[vid]
                    problems = {} if full else dict(stored or {})
                    for _e, n, ver in pins:
                        found = fresh[index].get(pin_key(n, ver), [])
                        if found:
                            problems[pin_key(n, ver)] = found
                        else:
                            problems.pop(pin_key(n, ver), None)
                    new = _status(problems)
                    updates.append(
                        {"id": vid, "problems": problems, "status": new, "evaluated_at": now}
                    )
                    if old == new:
                        continue
                    env = envs[env_id]
                    touched = {p[1] for p in pins}
                    culprits = {
                        k: found for k, found in problems.items() if k.split("==")[0] in touched
                    }
                    detail: dict[str, Any] = (
                        {"problems": culprits} if new == "red" else {"resolved": sorted(touched)}
                    )
                    why = cause
                    if new == "red":  # name what matters to this environment first
                        named = sorted(
                            {
                                f"{p.get('id') or p.get('rule')} ({pin})"
                                for pin, found in culprits.items()
                                for p in found
                            }
                        )
                        shown = ", ".join(named[:5]) + (" …" if len(named) > 5 else "")
                        why = f"{shown}; {cause}" if shown else cause
                    status_rows.append(
                        {
                            "version_id": vid,
                            "at": now,
                            "old_status": old,
                            "new_status": new,
                            "cause": why,
                            "detail": detail,
                        }
                    )
                    changes.append(
                        {
                            "ref": f"{env.team}/{env.name}@{number}",
                            "team": env.team,
                            "from": old,
                            "to": new,
                            "cause": why,
                            **detail,
                        }
                    )
            if updates:  # bulk UPDATE by primary key (executemany), not one statement per row
                await s.execute(update(EnvironmentVersionRow), updates)
            if status_rows:
                await s.execute(insert(EnvironmentStatusRow), status_rows)
        for c in changes:
            self._audit.record(
                "env.status",
                project=c["ref"].split("@")[0],
                outcome=c["to"],
                ref=c["ref"],
                cause=c["cause"],
                team=c["team"],
            )
            if self.alerts is not None:
                outcome, how = await self.alerts.deliver(
                    c["team"], {"event": "environment.status", **c}
                )
                c["delivery"] = f"{outcome}: {how}"
        return changes


def _norm_version(ecosystem: str, version: str) -> str:
    if ecosystem.lower() != "pypi":
        return version
    try:
        return str(Version(version))
    except InvalidVersion:
        return version


def package_of_file(filename: str) -> tuple[str, str, str] | None:
    """(ecosystem, normalized name, normalized version) of a distribution or conda file name."""
    conda = parse_conda_filename(filename)
    if conda is not None:
        return "conda", conda.name.lower(), conda.version
    name, version = project_from_filename(filename), version_from_filename(filename)
    if name is None or version is None:
        return None
    return "PyPI", str(name), _norm_version("PyPI", version)


def _status(problems: dict[str, list[dict[str, Any]]]) -> str:
    return "red" if any(problems.values()) else "green"


def _direction(ecosystem: str, old: str, new: str) -> str:
    from stockade.core.vulns.versions import scheme_for

    scheme = scheme_for(ecosystem)
    try:
        if scheme is not None:
            return "upgraded" if scheme.parse(new) > scheme.parse(old) else "downgraded"
    except ValueError:
        pass
    return "changed"


def _inventory(filename: str, content: bytes, kind: str | None) -> Inventory:
    with tempfile.TemporaryDirectory(prefix="stockade-env-") as tmp:
        path = Path(tmp) / filename
        path.write_bytes(content)
        try:
            return read_inventory(path, kind)
        except StockadeError as exc:
            raise type(exc)(exc.message.replace(str(path), filename), exc.hint) from None


def _version(
    env: EnvironmentRow, row: EnvironmentVersionRow, packages: tuple[tuple[str, str, str], ...]
) -> EnvVersion:
    return EnvVersion(
        team=env.team,
        name=env.name,
        version=row.version,
        kind=row.kind,
        filename=row.filename,
        sha256=row.sha256,
        size=row.size,
        index=row.index_name,
        status=row.status,
        problems=dict(row.problems or {}),
        packages=packages,
        created_at=(aware(row.created_at) or utcnow()).isoformat(),
        created_by=row.created_by,
        evaluated_at=(aware(row.evaluated_at) or utcnow()).isoformat(),
        note=row.note,
        id=row.id,
    )


__all__ = ["EnvVersion", "EnvironmentService", "split_ref"]

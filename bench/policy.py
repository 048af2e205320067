"""Policy-engine benchmark: uncached decisions for a 2,000-file page, hot filtered pages against
unfiltered ones, and the re-evaluation of 10,000 projects after a vulnerability sync.

    .venv/bin/python bench/policy.py [--db sqlite|postgresql] [--data PATH] [--profile]

One fresh Stockade home (a temporary PostgreSQL database with ``--db postgresql``), the PyPA
advisory database imported through the real CLI (a generated OSV feed when it is missing), then:

1. in process, ``PolicyService.decide()`` (as a page build calls it) of a strict policy over an
   in-memory ``django`` page of 2,000 files (400 versions x 5 files), three ways: no decision or
   match cached with the advisories and licence facts in memory (what a server does after a
   policy change or a feed sync: the target), licence facts read from the database (a fresh
   process), and every cache dropped (the whole advisory database reloaded first); median and
   p95, and where the time goes (vulnerability snapshot, matching, licence facts, ``evaluate()``);
2. a real ``stockade serve`` with a mirror of a local upstream and two virtual indexes over it,
   one with the same policy and one without: hot-page req/s of both under wrk;
3. in process, every page of 10,000 generated projects decided again after what a feed sync
   does (``Runtime.changed()``).

Prints a table per part and the targets with PASS/FAIL; exits 1 when a target fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import hashlib
import io
import json
import os
import pstats
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(BENCH)]  # this checkout; tests.builders; run

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

# bench/run.py's process, HTTP and wrk helpers (same invocation, same Lua script).
from run import (  # noqa: E402
    Proc,
    _descendants,
    basic,
    busy_seconds,
    children_cpu,
    clean_env,
    cpu_seconds,
    http_get,
    loadavg,
    lua_script,
    spawn,
    stop,
    stop_all,
    wait_http,
    wrk,
)

SHARED = ROOT.parent / "shared" / "data"
STOCKADE = ROOT / ".venv" / "bin" / "stockade"
RESULTS = BENCH / "results"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PROJECT = "django"  # the project the PyPA feed covers most heavily after tensorflow (116 records)
JSON_V1 = "application/vnd.pypi.simple.v1+json"

# A strict policy: every rule kind the issue names, with realistic options.
POLICY = """\
# bench/policy.py: a strict policy
blocked_files = "yanked"

[[rules]]
kind = "vulnerabilities"
severity = "high"
only_fixed = true

[[rules]]
kind = "names"
deny = ["evil-*", "*-typosquat", "django<1.4", "requests<2.20", "urllib3==1.25.*"]

[[rules]]
kind = "age"
min_days = 3

[[rules]]
kind = "yanked"
action = "hide"

[[rules]]
kind = "license"
deny = ["GPL-*", "AGPL-*"]
unknown = "allow"

[[rules]]
kind = "custom"
name = "big-sdists"
block_if = 'kind == "sdist" && size > 50000000'
message = "sdists over 50 MB need a review"
"""

console = Console(width=None if sys.stdout.isatty() else 150)


# -- data --------------------------------------------------------------------------------------


def django_versions(n: int) -> list[str]:
    """``n`` release numbers in Django's scheme (1.0 … 5.2.16), oldest first."""
    minors = [(1, m) for m in range(12)] + [(a, b) for a in (2, 3, 4, 5) for b in range(3)]
    out = [f"{a}.{b}" if p == 0 else f"{a}.{b}.{p}" for a, b in minors for p in range(17)]
    return out[-n:]


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def upload_times(n: int, now: datetime) -> list[datetime]:
    """Oldest first, spread over 15 years; the newest three inside the 3-day quarantine."""
    start = now - timedelta(days=365 * 15)
    step = (now - timedelta(days=10) - start) / max(n - 3, 1)
    times = [start + step * i for i in range(max(n - 3, 0))]
    times += [now - timedelta(days=2), now - timedelta(days=1), now - timedelta(hours=6)]
    return times[-n:]


def licence_of(i: int) -> str | None:
    """Version i's licence: BSD mostly, a GPL relicensing now and then, sometimes none."""
    if i % 61 == 7:
        return "GPL-3.0-or-later"
    if i % 97 == 11:
        return None
    return "BSD-3-Clause"


def big_page(n_versions: int, now: datetime) -> Any:
    """An in-memory mirror page: ``n_versions`` x (sdist + 4 wheels), as PyPI's JSON gives it."""
    from packaging.utils import NormalizedName

    from stockade.core.simple import FileEntry, ProjectPage

    files = []
    tags = [
        "py3-none-any",
        "cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64",
        "cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64",
        "cp312-cp312-win_amd64",
    ]
    versions = django_versions(n_versions)
    for i, (v, when) in enumerate(zip(versions, upload_times(n_versions, now), strict=True)):
        names = [f"{PROJECT}-{v}.tar.gz"] + [f"{PROJECT}-{v}-{t}.whl" for t in tags]
        for j, fn in enumerate(names):
            sdist = fn.endswith(".tar.gz")
            size = (60_000_000 if i % 50 == 25 else 10_400_000) if sdist else 8_100_000 + 977 * j
            files.append(
                FileEntry(
                    filename=fn,
                    sha256=hashlib.sha256(fn.encode()).hexdigest(),
                    url=f"https://files.pythonhosted.example/packages/{fn}",
                    requires_python=">=3.8" if i > 200 else None,
                    yanked=i % 37 == 5,
                    yanked_reason="broken release" if i % 74 == 5 else None,
                    metadata_sha256=None
                    if sdist
                    else hashlib.sha256(fn.encode() + b"m").hexdigest(),
                    has_metadata=not sdist,
                    size=size + i,
                    upload_time=iso(when + timedelta(minutes=j)),
                )
            )
    return ProjectPage(name=NormalizedName(PROJECT), files=tuple(files))


def many_names(n: int, data: Path) -> list[str]:
    """Every package the advisories name, then top-PyPI projects, then generated names."""
    from packaging.utils import canonicalize_name

    names: dict[str, None] = {}
    vulns = data / "vulns"
    if vulns.is_dir():
        for p in sorted(vulns.iterdir()):
            names.setdefault(canonicalize_name(p.name), None)
    top = SHARED / "top-pypi-packages.json"
    if top.exists():
        for row in json.loads(top.read_text())["rows"]:
            names.setdefault(canonicalize_name(row["project"]), None)
    i = 0
    while len(names) < n:
        names.setdefault(f"bench-project-{i:05d}", None)
        i += 1
    return list(names)[:n]


SMALL_VERSIONS = ["0.9.0", "1.0.0", "1.2.3", "2.0.0", "3.1.0"]


def small_pages(names: list[str], now: datetime) -> list[Any]:
    """~10 files per project: 5 versions x (wheel + sdist), the newest uploaded yesterday."""
    from packaging.utils import NormalizedName

    from stockade.core.simple import FileEntry, ProjectPage

    pages = []
    for k, name in enumerate(names):
        stem = name.replace("-", "_")
        files = []
        for i, v in enumerate(SMALL_VERSIONS):
            when = now - timedelta(days=1 if i == 4 else 900 - 200 * i)
            for fn in (f"{stem}-{v}-py3-none-any.whl", f"{stem}-{v}.tar.gz"):
                files.append(
                    FileEntry(
                        filename=fn,
                        sha256=hashlib.sha256(b"part3/" + fn.encode()).hexdigest(),
                        url=None,  # no upstream: facts come from file_metadata only
                        yanked=(k + i) % 53 == 0,
                        size=40_000 + 1_000 * i,
                        upload_time=iso(when),
                        has_metadata=fn.endswith(".whl"),
                    )
                )
        pages.append(ProjectPage(name=NormalizedName(name), files=tuple(files)))
    return pages


def generated_feed(target: Path) -> Path:
    """A few dozen OSV records for django (CVSS v3 rated) when the PyPA database is missing."""
    vectors = [
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",  # critical
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H",  # high
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:U/C:L/I:L/A:N",  # medium
    ]
    minors = [(1, m) for m in range(4, 12)] + [(a, b) for a in (2, 3, 4, 5) for b in range(3)]
    vulns = target / "vulns" / PROJECT
    vulns.mkdir(parents=True)
    n = 0
    for a, b in minors:
        for k, fixed in enumerate((5, 11)):
            n += 1
            rec = {
                "schema_version": "1.6.0",
                "id": f"BENCH-{2010 + a}-{n:04d}",
                "modified": "2024-01-01T00:00:00Z",
                "published": f"{2010 + a}-0{1 + k}-15T00:00:00Z",
                "summary": f"generated advisory {n} for {PROJECT} {a}.{b}",
                "details": "Generated by bench/policy.py for the benchmark.",
                "affected": [
                    {
                        "package": {"ecosystem": "PyPI", "name": PROJECT},
                        "ranges": [
                            {
                                "type": "ECOSYSTEM",
                                "events": [
                                    {"introduced": f"{a}.{b}"},
                                    {"fixed": f"{a}.{b}.{fixed}"},
                                ],
                            }
                        ],
                    }
                ],
                "severity": [{"type": "CVSS_V3", "score": vectors[n % 3]}],
            }
            (vulns / f"{rec['id']}.json").write_text(json.dumps(rec))
    return target


# -- the home ----------------------------------------------------------------------------------


def child_env(home: Path, db_url: str, **extra: str) -> dict[str, str]:
    """A clean environment for the CLI and the server, running this checkout's code."""
    return clean_env(
        STOCKADE_HOME=str(home),
        STOCKADE_DATABASE_URL=db_url,
        PYTHONPATH=str(ROOT / "src"),
        **extra,
    )


def cli(env: dict[str, str], *args: str) -> str:
    res = subprocess.run(
        [str(STOCKADE), *args], env=env, capture_output=True, text=True, check=False
    )
    if res.returncode != 0:
        raise SystemExit(f"stockade {' '.join(args)} failed:\n{res.stderr or res.stdout}")
    return res.stdout


@contextlib.contextmanager
def database(kind: str, home: Path) -> Iterator[str]:
    """The database URL: SQLite in the home, or a temporary PostgreSQL database (dropped)."""
    if kind == "sqlite":
        yield f"sqlite:///{home / 'stockade.db'}"
        return
    import psycopg

    name = f"stockade_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- part 1: one uncached decision of a 2,000-file page ----------------------------------------


class Probe:
    """Wall time and call counts of a few functions, patched in place for instrumented runs."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._undo: list[Callable[[], None]] = []

    def _add(self, key: str, took: float) -> None:
        self.seconds[key] = self.seconds.get(key, 0.0) + took
        self.calls[key] = self.calls.get(key, 0) + 1

    def sync(self, owner: Any, attr: str, key: str) -> None:
        if not hasattr(owner, attr):
            return
        fn = getattr(owner, attr)

        def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self._add(key, time.perf_counter() - t0)

        self._patch(owner, attr, fn, timed)

    def coro(self, owner: Any, attr: str, key: str) -> None:
        if not hasattr(owner, attr):
            return
        fn: Callable[..., Awaitable[Any]] = getattr(owner, attr)

        async def timed(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*a, **kw)
            finally:
                self._add(key, time.perf_counter() - t0)

        self._patch(owner, attr, fn, timed)

    def _patch(self, owner: Any, attr: str, old: Any, new: Any) -> None:
        setattr(owner, attr, new)
        if isinstance(owner, type | types.ModuleType):
            self._undo.append(lambda: setattr(owner, attr, old))
        else:  # an instance attribute shadowing the class's method
            self._undo.append(lambda: owner.__dict__.pop(attr, None))

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


def drop_caches(rt: Any) -> None:
    """What a changed vulnerability database or policy drops, plus the licence-facts cache."""
    rt.vulns.clear()
    rt.policies.clear()
    rt.metadata._cache.clear()


async def seed(rt: Any, page: Any, data: Path | None) -> dict[str, Any]:
    """Curations (PyPA records carry no rating for django), licence facts, one exception."""
    from stockade.services.metadata import MetaFacts

    curated = 0
    if data is not None:
        records = sorted((data / "vulns" / PROJECT).glob("*"))
        for i, path in enumerate(records):
            if i % 3:  # a third of them triaged; the first rated critical, the rest high
                continue
            await rt.vulns.curate(
                path.name.split(".")[0],
                package=PROJECT,
                severity="critical" if i == 0 else "high",
                reason="bench: triaged by the security team",
                author="bench",
            )
            curated += 1
    versions = django_versions(len({f.version for f in page.files}))
    index_of = {v: i for i, v in enumerate(versions)}
    for f in page.files:
        lic = licence_of(index_of[f.version])
        await rt.metadata.save(
            MetaFacts(
                f.sha256, PROJECT, f.version, lic, lic, "License-Expression", None, "metadata"
            )
        )
    await rt.policies.set("bench", POLICY, "bench")
    await rt.policies.allow(
        "bench", f"{PROJECT}==4.2.3", reason="bench: reviewed", expires="30d", author="bench"
    )
    return {"curations": curated, "facts": len(page.files)}


async def part1(rt: Any, data: Path | None, runs: int, profile: bool) -> dict[str, Any]:
    import stockade.core.policy.model as model_mod
    import stockade.core.simple as simple_mod
    import stockade.services.policies as policies_mod
    from stockade.core.policy import parse_policy

    now = datetime.now(UTC)
    page = big_page(400, now)
    seeded = await seed(rt, page, data)
    policy = parse_policy(POLICY)
    fetches = Probe()  # any network fetch of metadata would spoil the measurement
    fetches.coro(rt.metadata, "_fetch", "fetch")

    async def once() -> tuple[float, float, dict[str, Any]]:
        c0, t0 = time.process_time(), time.perf_counter()
        decisions = await rt.policies.decide(policy, page, index="bench", complete=False)
        return time.perf_counter() - t0, time.process_time() - c0, decisions

    drop_caches(rt)
    _, _, decisions = await once()  # imports, first-use allocations
    cold: list[float] = []
    warm: list[float] = []
    cold_cpu: list[float] = []
    warm_cpu: list[float] = []
    data_ms: list[float] = []
    data_cpu: list[float] = []
    for _ in range(runs):  # interleaved, so drifting background load hits both alike
        drop_caches(rt)
        took, cpu, decisions = await once()
        cold.append(took)
        cold_cpu.append(cpu)
        rt.policies.clear()
        rt.metadata._cache.clear()
        rt.vulns._snap.matches.clear()  # advisories loaded; no match of this page remembered
        took, cpu, _ = await once()
        warm.append(took)
        warm_cpu.append(cpu)
        rt.policies.clear()  # the data in memory (advisories, licence facts), no decision
        rt.vulns._snap.matches.clear()
        took, cpu, _ = await once()
        data_ms.append(took)
        data_cpu.append(cpu)
    # Instrumented runs: where the time goes (uncached, like the timed runs).
    probe = Probe()
    probe.coro(rt.vulns, "_load_snapshot", "snapshot")
    probe.coro(rt.vulns, "policy_hits", "query_many")
    probe.coro(rt.metadata, "learn", "learn")
    probe.coro(rt.policies, "exceptions", "exceptions")
    probe.coro(rt.policies, "approvals", "approvals")
    probe.sync(policies_mod, "evaluate", "evaluate")
    probe.sync(model_mod, "cel_facts", "cel_facts")
    probe.sync(simple_mod, "version_from_filename", "version_parse")
    totals: list[float] = []
    parts: dict[str, list[float]] = {}
    calls: dict[str, int] = {}
    try:
        for _ in range(max(5, runs // 2)):
            drop_caches(rt)
            probe.reset()
            took, _, _ = await once()
            totals.append(took)
            for k, v in probe.seconds.items():
                parts.setdefault(k, []).append(v)
            calls = dict(probe.calls)
    finally:
        probe.restore()
    fetches.restore()
    if fetches.calls:
        raise SystemExit(f"part 1 fetched metadata over the network {fetches.calls} times")
    mean = {k: statistics.mean(v) for k, v in parts.items()}
    profile_text = ""
    if profile:
        prof = cProfile.Profile()
        for _ in range(5):
            drop_caches(rt)
            await once()  # the data loaded: profile the decision's own work
            rt.policies.clear()
            rt.vulns._snap.matches.clear()
            prof.enable()
            await once()
            prof.disable()
        buf = io.StringIO()
        stats = pstats.Stats(prof, stream=buf)
        stats.sort_stats("tottime").print_stats(40)
        stats.sort_stats("cumulative").print_stats(35)
        profile_text = buf.getvalue()
    blocked = [d for d in decisions.values() if not d.allowed]
    by_kind: dict[str, int] = {}
    for d in blocked:
        for r in d.blocks:
            by_kind[r.kind] = by_kind.get(r.kind, 0) + 1
    return {
        "files": len(page.files),
        "versions": len({f.version for f in page.files}),
        "seeded": seeded,
        "cold_ms": [t * 1000 for t in cold],
        "warm_ms": [t * 1000 for t in warm],
        "cold_cpu_ms": [t * 1000 for t in cold_cpu],
        "warm_cpu_ms": [t * 1000 for t in warm_cpu],
        "data_ms": [t * 1000 for t in data_ms],
        "data_cpu_ms": [t * 1000 for t in data_cpu],
        "instrumented_ms": statistics.mean(totals) * 1000,
        "parts_ms": {k: v * 1000 for k, v in mean.items()},
        "calls": calls,
        "blocked": len(blocked),
        "excepted": sum(1 for d in decisions.values() if d.exception),
        "blocks_by_rule": by_kind,
        "profile": profile_text,
    }


# -- part 3: every project decided again after a sync ------------------------------------------


async def part3(rt: Any, n: int, data: Path) -> dict[str, Any]:
    from sqlalchemy import insert

    from stockade.db.models import FileMetadataRow

    now = datetime.now(UTC)
    t0 = time.perf_counter()
    pages = small_pages(many_names(n, data), now)
    rows = []
    for k, page in enumerate(pages):
        lic = "GPL-3.0-only" if k % 47 == 0 else ("MIT" if k % 2 else "Apache-2.0")
        for f in page.files:
            rows.append(
                {
                    "sha256": f.sha256,
                    "project": page.name,
                    "version": f.version,
                    "license_expression": lic,
                    "license_raw": lic,
                    "license_source": "License-Expression",
                    "requires_python": None,
                    "source": "metadata",
                    "error": None,
                    "created_at": now,
                }
            )
    async with rt.sessions() as s, s.begin():
        for i in range(0, len(rows), 5000):
            await s.execute(insert(FileMetadataRow), rows[i : i + 5000])
    setup_s = time.perf_counter() - t0

    async def all_pages() -> tuple[float, int]:
        blocked = 0
        t0 = time.perf_counter()
        for page in pages:
            policy = await rt.policies.current("bench")  # what PageService._apply_policy does
            assert policy is not None
            decisions = await rt.policies.decide(policy, page, index="bench", complete=False)
            blocked += sum(1 for d in decisions.values() if not d.allowed)
        return time.perf_counter() - t0, blocked

    rt.changed()
    rt.metadata._cache.clear()
    first_s, blocked = await all_pages()  # a fresh process: licence facts from the database
    rt.changed()  # what a sync that added or updated advisories does, in every process
    after_sync_s, blocked2 = await all_pages()
    return {
        "projects": len(pages),
        "files": sum(len(p.files) for p in pages),
        "setup_s": setup_s,
        "cold_process_s": first_s,
        "after_sync_s": after_sync_s,
        "blocked": blocked2,
        "blocked_first": blocked,
    }


async def in_process(home: Path, db_url: str, data: Path | None, args: Any) -> dict[str, Any]:
    from stockade.services.runtime import Runtime
    from stockade.settings import Settings

    rt = Runtime(Settings.load(home=home, database_url=db_url))
    try:
        one = await part1(rt, data, args.runs, args.profile)
        three = await part3(rt, args.projects, data or Path("/nonexistent"))
        return {"part1": one, "part3": three}
    finally:
        await rt.close()


# -- part 2: hot filtered and unfiltered pages through a real server ---------------------------


def build_upstream(root: Path, n_versions: int) -> dict[str, Any]:
    """A local upstream with ``n_versions`` real django wheels and sdists (small, generated),
    PEP 658 metadata for the wheels and upload times over the years (newest: 6 hours ago)."""
    from tests.builders import build_sdist, build_wheel, write_simple_tree

    dists = root / "dists"
    dists.mkdir(parents=True)
    files: list[Path] = []
    wheels: list[str] = []
    versions = django_versions(n_versions)
    for i, v in enumerate(versions):
        lic = licence_of(i + 3) or "BSD-3-Clause"
        w = build_wheel(
            dists, PROJECT, v, requires_python=">=3.8", headers=[f"License-Expression: {lic}"]
        )
        files += [w, build_sdist(dists, PROJECT, v, requires_python=">=3.8")]
        wheels.append(w.name)
    tree = root / "tree"
    write_simple_tree(tree, files, with_metadata=wheels)
    page = tree / "simple" / PROJECT / "index.json"
    doc = json.loads(page.read_text())
    when = dict(zip(versions, upload_times(n_versions, datetime.now(UTC)), strict=True))
    from stockade.core.simple import version_from_filename

    for entry in doc["files"]:
        entry["upload-time"] = iso(when[version_from_filename(entry["filename"]) or ""])
    page.write_text(json.dumps(doc, indent=2) + "\n")
    return {"tree": tree, "files": len(files)}


def count_blocked(body: bytes, kind: str) -> tuple[int, int]:
    """(files listed, files listed as blocked) on a served page."""
    if kind == "json":
        files = json.loads(body)["files"]
        blocked = [f for f in files if str(f.get("yanked") or "").startswith("blocked by policy")]
        return len(files), len(blocked)
    text = body.decode("utf-8", "replace")
    return text.count("<a "), text.count("blocked by policy")


def measure_cell(proc: Proc, url: str, script: Path, conns: int, seconds: float) -> dict[str, Any]:
    """One wrk run with the server's CPU per request and the share of the machine's CPU other
    processes used meanwhile (noise), as bench/run.py records them."""
    pids = _descendants(proc.pid)
    cpu0, busy0, kids0 = cpu_seconds(pids), busy_seconds(), children_cpu()
    cell = wrk(url, script, conns, seconds)
    cpu, busy = cpu_seconds(pids) - cpu0, busy_seconds() - busy0
    wrk_cpu = children_cpu() - kids0
    cell["server_cpu_us_per_req"] = 1e6 * cpu / max(cell["requests"], 1)
    capacity = (os.cpu_count() or 1) * cell["seconds"]
    cell["foreign_cpu_share"] = max(0.0, busy - cpu - wrk_cpu) / capacity
    return cell


def part2(tmp: Path, home: Path, db_url: str, args: Any) -> dict[str, Any]:
    from tests.upstream import Upstream

    built = build_upstream(tmp / "upstream", args.server_versions)
    out: dict[str, Any] = {"upstream_files": built["files"], "cells": {}, "pages": {}}
    with Upstream(built["tree"]) as up:
        env = child_env(home, db_url)
        cli(env, "index", "create", "up", "--mirror", up.simple_url)
        cli(env, "index", "create", "filtered", "--virtual", "up")
        cli(env, "index", "create", "plain", "--virtual", "up")
        policy_file = tmp / "policy.toml"
        policy_file.write_text(POLICY)
        cli(env, "policy", "set", "filtered", "--file", str(policy_file), "--author", "bench")
        token = cli(env, "token", "create", "--index", "*", "--scope", "read").strip()
        token = token.splitlines()[-1].strip()
        ready = tmp / "stockade.port"
        workers = str(args.workers)
        proc = spawn(
            "stockade-policy",
            [str(STOCKADE), "serve", "--host", "127.0.0.1", "--port", "0", "--workers", workers],
            {**env, "STOCKADE_READY_FILE": str(ready)},
        )
        try:
            t0 = time.monotonic()
            while not ready.exists():
                if not proc.alive() or time.monotonic() - t0 > 30:
                    raise SystemExit(f"stockade serve did not start: {proc.log_tail(10)}")
                time.sleep(0.05)
            port = int(ready.read_text())
            wait_http(f"http://127.0.0.1:{port}/health", proc)
            auth = {"Authorization": basic("__token__", token)}
            urls = {
                ix: f"http://127.0.0.1:{port}/pypi/{ix}/simple/{PROJECT}/"
                for ix in ("plain", "filtered")
            }
            scripts: dict[str, Path] = {}
            for kind, accept in (("html", "text/html"), ("json", JSON_V1)):
                scripts[kind] = lua_script(tmp / f"{kind}.lua", {**auth, "Accept": accept})
                for ix, url in urls.items():
                    t0 = time.perf_counter()
                    for i in range(3):  # the first request builds (and decides) the page
                        status, _h, body = http_get(url, {**auth, "Accept": accept})
                        if status != 200:
                            raise SystemExit(f"{url} ({kind}): HTTP {status} {body[:300]!r}")
                        if i == 0:
                            first_s = time.perf_counter() - t0
                    listed, blocked = count_blocked(body, kind)
                    out["pages"][f"{ix}/{kind}"] = {
                        "first_s": first_s,
                        "bytes": len(body),
                        "listed": listed,
                        "blocked": blocked,
                    }
            if out["pages"]["filtered/json"]["blocked"] == 0:
                raise SystemExit("the filtered page blocks nothing: the policy did not apply")
            for kind in ("html", "json"):  # a 1 s wrk warm-up of every cell
                for url in urls.values():
                    wrk(url, scripts[kind], 8, 1.0)
            for rep in range(args.repeat):
                for kind in ("html", "json"):
                    order = list(urls.items())  # interleaved, the order swapped every round
                    for ix, url in order if rep % 2 == 0 else reversed(order):
                        cell = measure_cell(proc, url, scripts[kind], 8, args.duration)
                        key = f"{ix}/{kind}"
                        runs = out["cells"].setdefault(key, [])
                        runs.append(cell)
                        bad = cell["non_2xx_3xx"] or cell["socket_errors"]
                        console.print(
                            f"  {key:<14} #{rep + 1} {cell['rps']:>8,.0f} req/s  "
                            f"p99 {cell['p99_ms']:5.2f} ms  "
                            f"{cell['server_cpu_us_per_req']:4.0f} µs CPU/req  "
                            f"others {cell['foreign_cpu_share']:.0%} CPU"
                            + ("  [red]errors[/]" if bad else "")
                        )
        finally:
            out["log_tail"] = proc.log_tail(20)
            stop(proc)
    for key, runs in out["cells"].items():
        good = [c for c in runs if not (c["non_2xx_3xx"] or c["socket_errors"])]
        out["cells"][key] = {"best": max(good or runs, key=lambda c: c["rps"]), "runs": runs}
    for kind in ("html", "json"):  # paired rounds: the two indexes ran back to back
        pairs = zip(
            out["cells"][f"filtered/{kind}"]["runs"],
            out["cells"][f"plain/{kind}"]["runs"],
            strict=True,
        )
        out[f"ratios/{kind}"] = [f["rps"] / u["rps"] for f, u in pairs if u["rps"]]
    return out


# -- report ------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def report(res: dict[str, Any], args: Any) -> list[tuple[str, str, str, str]]:
    meta = res["meta"]
    p1 = res["part1"]
    targets: list[tuple[str, str, str, str]] = []

    def verdict(ok: bool | None) -> str:
        return "info" if ok is None else ("PASS" if ok else "FAIL")

    cold, warm = p1["cold_ms"], p1["warm_ms"]
    t1 = Table(
        title=f"1. PolicyService.decide(), {PROJECT} page of {p1['files']:,} files "
        f"({p1['versions']} versions x 5), {meta['advisories']}, {args.db}"
    )
    for col in ("run", "median ms", "p95 ms", "min ms", "CPU ms (median)", "runs"):
        t1.add_column(col, justify="left" if col == "run" else "right")
    for label, key in (
        ("uncached: every cache dropped (VulnDB, policies, licence facts)", "cold"),
        ("page uncached, vulnerability snapshot already loaded", "warm"),
        ("page uncached, advisories and licence facts in memory", "data"),
    ):
        ms = p1[f"{key}_ms"]
        t1.add_row(
            label,
            f"{statistics.median(ms):.1f}",
            f"{pct(ms, 0.95):.1f}",
            f"{min(ms):.1f}",
            f"{statistics.median(p1[f'{key}_cpu_ms']):.1f}",
            str(len(ms)),
        )
    console.print(t1)
    parts = p1["parts_ms"]
    total = p1["instrumented_ms"]
    t1b = Table(
        title=f"   where the time goes: mean of instrumented uncached runs ({total:.1f} ms each); "
        f"{p1['blocked']} files blocked, {p1['excepted']} by exception"
    )
    for col in ("part", "ms", "share", "calls"):
        t1b.add_column(col, justify="left" if col == "part" else "right")
    snapshot = parts.get("snapshot", 0.0)
    matching = parts.get("query_many", 0.0) - snapshot
    excs = parts.get("exceptions", 0.0) + parts.get("approvals", 0.0)
    learn = parts.get("learn", 0.0)
    evaluate = parts.get("evaluate", 0.0)
    rest = total - parts.get("query_many", 0.0) - learn - evaluate - excs
    calls = p1["calls"]
    rows = [
        ("VulnDB snapshot load (_load_snapshot)", snapshot, calls.get("snapshot", 0)),
        ("vulnerability matching (policy_hits minus the load)", matching, 1),
        ("licence facts (MetadataService.learn: file_metadata)", learn, 1),
        ("policy exceptions/approvals (database)", excs, 1),
        ("evaluate() (core/policy/model.py), all files", evaluate, calls.get("evaluate", 0)),
        (
            "  of which the CEL activation (cel_facts)",
            parts.get("cel_facts", 0.0),
            calls.get("cel_facts", 0),
        ),
        ("rest of decide() (FileFacts, upload times, versions)", rest, 1),
        (
            "across all parts: FileEntry.version (filename parsed per access)",
            parts.get("version_parse", 0.0),
            calls.get("version_parse", 0),
        ),
    ]
    for name, ms, n in rows:
        t1b.add_row(name, f"{ms:.1f}", f"{ms / total:.0%}", f"{n:,}")
    console.print(t1b)
    by_rule = ", ".join(f"{k} {v}" for k, v in sorted(p1["blocks_by_rule"].items()))
    console.print(f"   blocks by rule: {by_rule}")
    # The target is the decision itself, as a running server makes it after a policy change or
    # a feed sync: no decision and no match remembered, the data it decides on (advisories,
    # licence facts: immutable per file) in memory. Loading that data is shown, not hidden.
    data = p1["data_ms"]
    medd = statistics.median(data)
    targets.append(
        (
            "uncached decision, 2,000 files (no decision or match cached; advisories and "
            "licence facts in memory, as after a policy change or sync)",
            f"{medd:.1f} ms median, {pct(data, 0.95):.1f} ms p95, "
            f"{statistics.median(p1['data_cpu_ms']):.1f} ms CPU",
            "median < 20 ms",
            verdict(medd < 20),
        )
    )
    medw = statistics.median(warm)
    targets.append(
        (
            "same, licence facts read from the database (a fresh process)",
            f"{medw:.1f} ms median, {pct(warm, 0.95):.1f} ms p95, "
            f"{statistics.median(p1['warm_cpu_ms']):.1f} ms CPU",
            "info",
            "info",
        )
    )
    med = statistics.median(cold)
    targets.append(
        (
            "same, every cache dropped (the whole advisory database reloaded first)",
            f"{med:.1f} ms median, {pct(cold, 0.95):.1f} ms p95 "
            f"(evaluate() {evaluate / total:.0%} of it)",
            "info",
            "info",
        )
    )

    p2 = res.get("part2")
    if p2 is not None:
        t2 = Table(
            title=f"2. Hot page /pypi/<index>/simple/{PROJECT}/ ({p2['upstream_files']} files "
            f"upstream), --workers {args.workers}; wrk -c8, {args.repeat} paired rounds of "
            f"{args.duration:g} s, best round shown"
        )
        cols = ("index", "format", "listed", "blocked", "bytes", "first GET ms", "req/s")
        for col in (*cols, "p99 ms", "CPU µs/req", "others' CPU"):
            t2.add_column(col, justify="left" if col in ("index", "format") else "right")
        for kind in ("html", "json"):
            for ix in ("plain", "filtered"):
                page = p2["pages"][f"{ix}/{kind}"]
                cell = p2["cells"][f"{ix}/{kind}"]["best"]
                t2.add_row(
                    ix + (" (strict policy)" if ix == "filtered" else " (no policy)"),
                    kind.upper(),
                    str(page["listed"]),
                    str(page["blocked"]),
                    f"{page['bytes']:,}",
                    f"{1000 * page['first_s']:.0f}",
                    f"{cell['rps']:,.0f}",
                    f"{cell['p99_ms']:.2f}",
                    f"{cell['server_cpu_us_per_req']:.0f}",
                    f"{cell['foreign_cpu_share']:.0%}",
                )
        console.print(t2)
        for kind in ("html", "json"):
            f = p2["cells"][f"filtered/{kind}"]["best"]
            u = p2["cells"][f"plain/{kind}"]["best"]
            errors = any(c["non_2xx_3xx"] or c["socket_errors"] for c in (f, u))
            ratios = p2[f"ratios/{kind}"]
            ratio = statistics.median(ratios) if ratios else 0.0
            noise = max(f["foreign_cpu_share"], u["foreign_cpu_share"])
            v = "FAIL (errors)" if errors else verdict(ratio >= 0.90)
            if noise > 0.10:
                v += f" (noisy: others used {noise:.0%} CPU)"
            targets.append(
                (
                    f"hot filtered page vs unfiltered, {kind.upper()} @8",
                    f"{ratio:.0%} median of {len(ratios)} paired rounds "
                    f"({', '.join(f'{r:.0%}' for r in ratios)}); best {f['rps']:,.0f} vs "
                    f"{u['rps']:,.0f} req/s, CPU/req {f['server_cpu_us_per_req']:.0f} vs "
                    f"{u['server_cpu_us_per_req']:.0f} µs",
                    "≥ 90%",
                    v,
                )
            )

    p3 = res["part3"]
    t3 = Table(
        title=f"3. Re-evaluation: {p3['projects']:,} projects ({p3['files']:,} files), "
        f"decide() each after Runtime.changed()"
    )
    for col in ("run", "total s", "projects/s", "ms/project", "files blocked"):
        t3.add_column(col, justify="left" if col == "run" else "right")
    for label, key, blocked in (
        ("after a sync (licence facts cached in process)", "after_sync_s", p3["blocked"]),
        ("fresh process (licence facts from the database)", "cold_process_s", p3["blocked_first"]),
    ):
        s = p3[key]
        t3.add_row(
            label,
            f"{s:.1f}",
            f"{p3['projects'] / s:,.0f}",
            f"{1000 * s / p3['projects']:.2f}",
            f"{blocked:,}",
        )
    console.print(t3)
    s = p3["after_sync_s"]
    targets.append(
        (
            f"re-evaluation of {p3['projects']:,} projects after a sync",
            f"{s:.1f} s ({p3['projects'] / s:,.0f} projects/s)",
            "info (sanity: < 120 s)",
            "info" if s < 120 else "FAIL",
        )
    )

    tt = Table(title=f"Targets — {meta['host']}, {args.db}, {meta['date']}")
    for col in ("target", "measured", "goal", "verdict"):
        tt.add_column(col)
    colors = {"PASS": "green", "FAIL": "red", "info": "cyan"}
    for name, measured, goal, v in targets:
        tt.add_row(name, measured, goal, f"[{colors.get(v.split()[0], 'red')}]{v}[/]")
    console.print(tt)
    if p1["profile"]:
        console.print(
            "\n[bold]cProfile of 5 decide() runs, advisories and licence facts in memory[/]"
        )
        console.print(p1["profile"], markup=False, highlight=False)
    return targets


# -- main --------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--data", type=Path, default=SHARED / "pypa-advisory-db")
    ap.add_argument("--runs", type=int, default=25, help="timed decide() runs per variant")
    ap.add_argument("--projects", type=int, default=10_000, help="projects re-evaluated")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    ap.add_argument("--repeat", type=int, default=5, help="paired wrk rounds per format")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="serve --workers")
    ap.add_argument("--server-versions", type=int, default=40, help="versions on the upstream")
    ap.add_argument("--skip-server", action="store_true", help="skip part 2")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of part 1")
    args = ap.parse_args()
    if not STOCKADE.exists():
        console.print(f"[red]{STOCKADE} missing: run `make venv`[/]")
        return 2
    if not args.skip_server and shutil.which("wrk") is None:
        console.print("[red]wrk is missing[/]: apt-get update && apt-get install -y wrk")
        return 2
    started = time.monotonic()
    stamp = datetime.now(UTC)
    res: dict[str, Any] = {
        "meta": {
            "date": stamp.strftime("%Y-%m-%d %H:%M UTC"),
            "host": f"{os.uname().nodename}, {os.cpu_count()} cpus",
            "python": sys.version.split()[0],
            "loadavg_start": loadavg(),
            "args": {k: str(v) for k, v in vars(args).items()},
        }
    }
    load = loadavg()
    if load and load[0] > 0.5 * (os.cpu_count() or 1):
        console.print(
            f"[yellow]load average {load[0]:.2f} on {os.cpu_count()} cpus before starting: other "
            "processes compete for the CPU, so numbers will be noisy (recorded in the JSON)[/]"
        )
    tmp = Path(tempfile.mkdtemp(prefix="stockade-policy-bench-"))
    try:
        home = tmp / "home"
        with database(args.db, home) as db_url:
            env = child_env(home, db_url)
            cli(env, "init", "--no-default-indexes")
            data: Path | None = args.data if args.data.is_dir() else None
            feed = data if data is not None else generated_feed(tmp / "feed")
            imported = json.loads(cli(env, "vulndb", "import", str(feed), "--json"))
            res["meta"]["advisories"] = (
                f"{imported['added']:,} advisories ("
                + ("PyPA advisory database" if data else "generated feed")
                + ")"
            )
            console.print(f"[bold]policy bench[/] ({args.db}): {res['meta']['advisories']}")
            res.update(asyncio.run(in_process(home, db_url, data, args)))
            if not args.skip_server:
                res["part2"] = part2(tmp, home, db_url, args)
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    res["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
    res["meta"]["loadavg_end"] = loadavg()
    targets = report(res, args)
    res["targets"] = targets
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"policy-{args.db}-{stamp.strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(res, indent=2, default=str))
    console.print(f"raw results: {out.relative_to(ROOT)}  (run took {res['meta']['elapsed_s']}s)")
    return 1 if any(v.startswith("FAIL") for *_, v in targets) else 0


if __name__ == "__main__":
    raise SystemExit(main())

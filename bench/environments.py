"""Environment watching benchmark: 5,000 stored environments of 200 packages each, then one
advisory changes; how long until every affected environment is re-evaluated?

    .venv/bin/python bench/environments.py [--db sqlite|postgresql] [--envs 5000] [--size 200]

One fresh Stockade home (a temporary PostgreSQL database with ``--db postgresql``). The
environments are written straight into the tables (what ``env push`` stores: a version, its
pins, its evaluated status) so that setting up a million pins takes seconds; their package names
come from the top-PyPI list when it is on this machine (popular names appear in more
environments, as in real life). Then, for a rare, a common and an absent package, an OSV
advisory affecting the pinned version is imported and ``Runtime.advisories_changed()`` runs (what
a feed sync does): the table shows how many environments contain the package, how many turned
red, and the time. Target: under 2 s, and the time follows the environments that contain the
package, not the 5,000.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT / "src"), str(BENCH)]

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
console = Console()


def names(n: int) -> list[str]:
    path = SHARED / "top-pypi-packages.json"
    if path.exists():
        rows = json.loads(path.read_text())["rows"]
        got = [r["project"] for r in rows[:n]]
        if len(got) == n:
            return got
    return [f"pkg-{i:05d}" for i in range(n)]


async def seed(rt: Any, envs: int, size: int, pool: list[str]) -> dict[str, int]:
    """Write the environments straight into the tables, in batches."""
    from sqlalchemy import insert

    from stockade.db.models import (
        EnvironmentPackageRow,
        EnvironmentRow,
        EnvironmentVersionRow,
    )
    from stockade.services.repo import utcnow

    rnd = random.Random(7)
    weights = [1.0 / (i + 1) ** 0.8 for i in range(len(pool))]  # Zipf-like popularity
    now = utcnow()
    contains: dict[str, int] = {}
    batch = 250
    for start in range(0, envs, batch):
        async with rt.sessions() as s, s.begin():
            env_rows = [
                {"team": f"team{i % 50}", "name": f"env{i}", "created_at": now, "created_by": "b"}
                for i in range(start, min(envs, start + batch))
            ]
            await s.execute(insert(EnvironmentRow), env_rows)
            ids = {
                r[1]: r[0]
                for r in (
                    await s.execute(
                        EnvironmentRow.__table__.select()
                        .with_only_columns(EnvironmentRow.id, EnvironmentRow.name)
                        .where(EnvironmentRow.name.in_([e["name"] for e in env_rows]))
                    )
                )
            }
            versions = [
                {
                    "env_id": ids[e["name"]],
                    "version": 1,
                    "kind": "requirements",
                    "filename": "requirements.txt",
                    "sha256": "0" * 64,
                    "size": 0,
                    "index_name": None,
                    "status": "green",
                    "problems": {},
                    "evaluated_at": now,
                    "created_at": now,
                    "created_by": "bench",
                }
                for e in env_rows
            ]
            await s.execute(insert(EnvironmentVersionRow), versions)
            vids = list(
                (
                    await s.execute(
                        EnvironmentVersionRow.__table__.select()
                        .with_only_columns(EnvironmentVersionRow.id)
                        .where(EnvironmentVersionRow.env_id.in_(list(ids.values())))
                    )
                ).scalars()
            )
            pins = []
            for vid in vids:
                chosen: set[str] = set()
                while len(chosen) < size:
                    chosen.update(rnd.choices(pool, weights=weights, k=size - len(chosen)))
                for name in chosen:
                    contains[name] = contains.get(name, 0) + 1
                    pins.append(
                        {"version_id": vid, "ecosystem": "PyPI", "name": name, "version": "1.0.0"}
                    )
            await s.execute(insert(EnvironmentPackageRow), pins)
    return contains


async def measure(rt: Any, home: Path, name: str, ident: str) -> tuple[float, int]:
    feed = home / f"feed-{ident}"
    feed.mkdir()
    (feed / f"{ident}.json").write_text(
        json.dumps(
            {
                "id": ident,
                "modified": "2026-01-01T00:00:00Z",
                "affected": [
                    {
                        "package": {"ecosystem": "PyPI", "name": name},
                        "ranges": [
                            {
                                "type": "ECOSYSTEM",
                                "events": [{"introduced": "0"}, {"fixed": "1.0.1"}],
                            }
                        ],
                    }
                ],
            }
        )
    )
    report = await rt.vulns.import_path(feed)
    t0 = time.perf_counter()
    _alerts, changes = await rt.advisories_changed(report.changed)
    return time.perf_counter() - t0, len(changes)


async def main_async(args: argparse.Namespace) -> int:
    from stockade.db.engine import upgrade
    from stockade.services.runtime import Runtime
    from stockade.settings import Settings

    with tempfile.TemporaryDirectory(prefix="stockade-envbench-") as tmp:
        home = Path(tmp)
        db_url = f"sqlite:///{home / 'bench.db'}"
        if args.db == "postgresql":
            import psycopg

            dbname = f"stockade_envbench_{int(time.time())}"
            with psycopg.connect(
                "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True
            ) as c:
                c.execute(f'CREATE DATABASE "{dbname}"')
            db_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{dbname}"
        upgrade(db_url)
        rt = Runtime(Settings.load(home=home, database_url=db_url))
        try:
            pool = names(2000)
            t0 = time.perf_counter()
            contains = await seed(rt, args.envs, args.size, pool)
            seeded = time.perf_counter() - t0
            ranked = sorted(contains.items(), key=lambda kv: kv[1])
            rare = next(n for n, c in ranked if c >= max(5, args.envs // 200))
            common = ranked[-1][0]
            absent = "not-in-any-environment"
            rows = []
            for label, name in (("absent", absent), ("rare", rare), ("common", common)):
                times = []
                turned = 0
                for i in range(args.repeat):
                    took, changed = await measure(rt, home, name, f"BENCH-{label}-{i}")
                    times.append(took)
                    turned = max(turned, changed)
                rows.append((label, name, contains.get(name, 0), turned, times))
        finally:
            await rt.close()
        if args.db == "postgresql":
            import psycopg

            with psycopg.connect(
                "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True
            ) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    table = Table(
        title=f"Re-evaluation after one advisory changes: {args.envs:,} environments x "
        f"{args.size} packages ({args.db}; seeded in {seeded:.1f}s)"
    )
    for col in ("package", "name", "environments containing it", "turned red", "median s", "max s"):
        table.add_column(col, justify="left" if col in ("package", "name") else "right")
    for label, name, n, turned, times in rows:
        table.add_row(
            label,
            name,
            f"{n:,}",
            f"{turned:,}",
            f"{statistics.median(times):.3f}",
            f"{max(times):.3f}",
        )
    console.print(table)
    worst = max(max(t) for *_, t in rows)
    per_env = [
        statistics.median(t) / max(n, 1) for _, _, n, _, t in rows if n
    ]  # seconds per containing environment
    ok = worst < 2.0
    console.print(
        f"target: every re-evaluation under 2 s → {'PASS' if ok else 'FAIL'} "
        f"(worst {worst:.3f} s); per containing environment: "
        + ", ".join(f"{x * 1000:.2f} ms" for x in per_env)
    )
    return 0 if ok else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--envs", type=int, default=5000)
    ap.add_argument("--size", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())

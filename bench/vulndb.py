"""Vulnerability-database benchmark: import, re-import, scan of 1,000 pins, single lookups.

    .venv/bin/python bench/vulndb.py [--db sqlite|postgresql] [--data PATH]

Imports the PyPA advisory database (../shared/data/pypa-advisory-db) into a fresh Stockade home
through the real CLI (time and peak RSS of that process), re-imports it unchanged, then, in
process with the database loaded, times a scan of a 1,000-package lock (names from the top-PyPI
list plus every package the advisories name, so lookups hit real rows) and single lookups.
Prints a table with the issue's targets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
STOCKADE = ROOT / ".venv" / "bin" / "stockade"


def timed_cli(env: dict[str, str], *args: str) -> tuple[float, int, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    res = subprocess.run(
        [str(STOCKADE), *args], env=env, capture_output=True, text=True, check=False
    )
    took = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"stockade {' '.join(args)} failed:\n{res.stderr}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return took, max(peak, before), res.stdout


def pins(n: int) -> list[tuple[str, str, str]]:
    names: list[str] = []
    for p in sorted((SHARED / "pypa-advisory-db" / "vulns").iterdir()):
        names.append(p.name)
    top = SHARED / "top-pypi-packages.json"
    if top.exists():
        names += [r["project"] for r in json.loads(top.read_text())["rows"]]
    seen: dict[str, None] = {}
    for name in names:
        seen.setdefault(name, None)
    return [("PyPI", name, "1.0.0") for name in list(seen)[:n]]


async def in_process(home: Path, db_url: str) -> dict[str, float]:
    from stockade.services.runtime import Runtime
    from stockade.settings import Settings

    rt = Runtime(Settings.load(home=home, database_url=db_url))
    try:
        lock = pins(1000)
        await rt.vulns.query_many(lock)  # load: compile matchers, warm the database
        scans = []
        for _ in range(7):
            t0 = time.perf_counter()
            found = await rt.vulns.query_many(lock)
            scans.append(time.perf_counter() - t0)
        hits = sum(len(v) for v in found.values())
        singles = []
        for _ in range(300):
            t0 = time.perf_counter()
            await rt.vulns.query("PyPI", "django", "2.2.0")
            singles.append(time.perf_counter() - t0)
        return {
            "scan_ms": statistics.median(scans) * 1000,
            "scan_hits": hits,
            "lookup_ms": statistics.median(singles) * 1000,
            "lookup_p99_ms": sorted(singles)[int(len(singles) * 0.99)] * 1000,
        }
    finally:
        await rt.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--data", type=Path, default=SHARED / "pypa-advisory-db")
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"advisory data not found at {args.data}; pass --data", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        db_name = None
        if args.db == "postgresql":
            import psycopg

            db_name = f"stockade_bench_{secrets.token_hex(4)}"
            with psycopg.connect(
                "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True
            ) as c:
                c.execute(f'CREATE DATABASE "{db_name}"')
            db_url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{db_name}"
        else:
            db_url = f"sqlite:///{home / 'stockade.db'}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKADE_")}
        env.update(STOCKADE_HOME=str(home), STOCKADE_DATABASE_URL=db_url)
        try:
            timed_cli(env, "init", "--no-default-indexes")
            imp_s, imp_rss, out = timed_cli(env, "vulndb", "import", str(args.data), "--json")
            report = json.loads(out)
            re_s, _, out2 = timed_cli(env, "vulndb", "import", str(args.data), "--json")
            re_service = float(json.loads(out2)["seconds"])
            imp_service = float(report["seconds"])
            measured = asyncio.run(in_process(home, db_url))
        finally:
            if db_name:
                import psycopg

                with psycopg.connect(
                    "postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True
                ) as c:
                    c.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    rows = [
        (
            "full import",
            f"{imp_service:.2f} s in the importer (CLI process {imp_s:.2f} s, "
            f"peak RSS {imp_rss / 1024:.0f} MiB)",
            "< 10 s",
            imp_s < 10,
        ),
        (
            "re-import, unchanged",
            f"{re_service:.2f} s in the importer (CLI process {re_s:.2f} s, ~1 s of it "
            "interpreter and import start-up)",
            "< 2 s",
            re_service < 2,
        ),
        (
            "scan of 1,000 pins (loaded)",
            f"{measured['scan_ms']:.1f} ms ({measured['scan_hits']:.0f} findings)",
            "< 200 ms",
            measured["scan_ms"] < 200,
        ),
        (
            "one lookup (django 2.2.0)",
            f"{measured['lookup_ms']:.3f} ms median, {measured['lookup_p99_ms']:.3f} ms p99",
            "< 1 ms",
            measured["lookup_ms"] < 1,
        ),
    ]
    table = Table(title=f"Vulnerability database — {report['added']} advisories, {args.db}")
    for col in ("measure", "result", "target", "verdict"):
        table.add_column(col)
    for name, result, target, ok in rows:
        table.add_row(name, result, target, "PASS" if ok else "MISS")
    Console(width=150).print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

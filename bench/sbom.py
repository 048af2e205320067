"""SBOM benchmark: a 500-package environment, `stockade sbom create --env` next to
`cyclonedx-py environment`, in one run.

    .venv/bin/python bench/sbom.py [--packages 500] [--runs 3]

Builds (once, under bench/.cache/sbom-env) a virtualenv without pip holding the installed
metadata (`*.dist-info`: METADATA, WHEEL, RECORD, INSTALLER, top_level.txt) of N real wheels from
/opt/pypi/files, /opt/pypi-more/files and /opt/wheels (one wheel per project), as `pip install
--no-deps` would leave it. Then times both tools as the user runs them (whole processes, median
of --runs), counts in each output the components with a licence, a hash and a purl, checks ours
with cyclonedx-python-lib's strict 1.6 validator, and prints a table with PASS/MISS against the
target: faster than cyclonedx-py, with at least its completeness.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name, parse_wheel_filename
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
SOURCES = (Path("/opt/pypi/files"), Path("/opt/pypi-more/files"), Path("/opt/wheels"))
CACHE = ROOT / "bench" / ".cache"
KEEP = ("METADATA", "WHEEL", "RECORD", "top_level.txt", "entry_points.txt")


def wheels(count: int) -> list[Path]:
    chosen: dict[str, Path] = {}
    for folder in SOURCES:
        for path in sorted(folder.glob("*.whl")) if folder.is_dir() else ():
            try:
                name = canonicalize_name(parse_wheel_filename(path.name)[0])
            except ValueError:
                continue
            chosen.setdefault(name, path)
    picked = [chosen[k] for k in sorted(chosen)][:count]
    if len(picked) < count:
        sys.exit(f"only {len(picked)} distinct projects' wheels found under {SOURCES}")
    return picked


def build_env(count: int) -> Path:
    env = CACHE / f"sbom-env-{count}"
    done = env / ".complete"
    if done.exists():
        return env
    shutil.rmtree(env, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    [site] = (env / "lib").glob("python3*/site-packages")
    for wheel in wheels(count):
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.namelist():
                top, _, rest = member.partition("/")
                if top.endswith(".dist-info") and "/" not in rest and rest in KEEP:
                    target = site / top / rest
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(member))
            dist_info = next(
                (n.split("/")[0] for n in zf.namelist() if n.split("/")[0].endswith(".dist-info")),
                None,
            )
            if dist_info:
                (site / dist_info / "INSTALLER").write_text("pip\n")
    done.write_text("ok\n")
    return env


def timed(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def completeness(path: Path) -> dict[str, int]:
    doc: dict[str, Any] = json.loads(path.read_text())
    comps = doc.get("components", [])
    return {
        "components": len(comps),
        "licence": sum(1 for c in comps if c.get("licenses")),
        "hash": sum(1 for c in comps if c.get("hashes")),
        "purl": sum(1 for c in comps if c.get("purl")),
        "dependencies": sum(len(d.get("dependsOn", [])) for d in doc.get("dependencies", [])),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    err = Console(stderr=True)
    err.print(f"building the {args.packages}-package environment (cached)…")
    env = build_env(args.packages)
    out = CACHE / "sbom-out"
    out.mkdir(parents=True, exist_ok=True)
    ours, theirs, spdx = out / "stockade.cdx.json", out / "cyclonedx-py.cdx.json", out / "s.json"
    ours_cmd = [str(BIN / "stockade"), "sbom", "create", "--env", str(env), "-o", str(ours)]
    spdx_cmd = [*ours_cmd[:-2], "--format", "spdx", "-o", str(spdx)]
    theirs_cmd = [
        str(BIN / "cyclonedx-py"),
        "environment",
        str(env / "bin" / "python"),
        "--output-format",
        "JSON",
        "--spec-version",
        "1.6",
        "-o",
        str(theirs),
    ]
    err.print(f"timing, median of {args.runs} runs each…")
    t_ours = timed(ours_cmd, args.runs)
    t_theirs = timed(theirs_cmd, args.runs)
    t_spdx = timed(spdx_cmd, args.runs)
    c_ours, c_theirs = completeness(ours), completeness(theirs)

    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    problem = JsonStrictValidator(SchemaVersion.V1_6).validate_str(ours.read_text())
    table = Table(title=f"SBOM of a {args.packages}-package environment ({env})")
    for col in ("measure", "stockade sbom create --env", "cyclonedx-py environment", "target"):
        table.add_column(col)

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    table.add_row(
        "time (s, whole process)",
        f"{t_ours:.2f}",
        f"{t_theirs:.2f}",
        f"{verdict(t_ours < t_theirs)} faster ({t_theirs / t_ours:.1f}x)",
    )
    for key in ("components", "licence", "hash", "purl"):
        label = "components" if key == "components" else f"components with {key}"
        ok = c_ours[key] >= c_theirs[key] if key != "components" else c_ours[key] == c_theirs[key]
        table.add_row(label, str(c_ours[key]), str(c_theirs[key]), verdict(ok))
    table.add_row(
        "dependency edges",
        str(c_ours["dependencies"]),
        str(c_theirs["dependencies"]),
        "info: cyclonedx-py also follows requirements behind extras (aiohttp -> brotli)",
    )
    table.add_row("SPDX 2.3 JSON, same env (s)", f"{t_spdx:.2f}", "-", "-")
    table.add_row(
        "strict CycloneDX 1.6 validation",
        "0 errors" if problem is None else str(problem),
        "-",
        verdict(problem is None),
    )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()

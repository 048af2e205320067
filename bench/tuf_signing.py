"""TUF benchmark: the cost of keeping a signed index current, and what a client downloads.

    .venv/bin/python bench/tuf_signing.py [--projects 10000] [--files 10] [--bins 16384] [--runs 20]

A fresh SQLite Stockade home with one private index signed with ``--bins`` hashed bins, whose
``tuf_targets`` are filled with ``projects`` x (2 pages + ``files`` files) rows (the default:
10,000 projects and 100,000 files, as the issue's benchmark asks), then in process:

1. ``tuf init`` (every bin signed once);
2. one upload: a project's page gains a file and the service re-signs what changed (page
   rendered and hashed, target rows diffed under the lock, its bins, snapshot, timestamp),
   median and p95 over ``runs`` uploads;
3. the metadata a client downloads for one install of one project (timestamp, snapshot,
   targets, the bins of its page and file).

Target: re-signing after one upload under 200 ms, and not growing with the index size (only
with the bin count, through the snapshot).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert

from stockade.core import tuf as T
from stockade.core.simple import FileEntry, ProjectPage
from stockade.db.models import TufTargetRow
from stockade.services import repo
from stockade.services.pages import ServedPage
from stockade.services.runtime import Runtime
from stockade.settings import Settings
from stockade.types import IndexKind, NormalizedName

STOCKADE = str(Path(sys.executable).parent / "stockade")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _page(project: str, files: int) -> ServedPage:
    entries = tuple(
        FileEntry(
            filename=f"{project.replace('-', '_')}-{v}.0-py3-none-any.whl",
            sha256=_sha(f"{project}{v}"),
            size=1000 + v,
            upload_time="2026-01-01T00:00:00.000000Z",
            origin="bench",
        )
        for v in range(files)
    )
    return ServedPage(ProjectPage(NormalizedName(project), entries), IndexKind.PRIVATE, 1e18)


def fresh_home() -> Path:
    home = Path(tempfile.mkdtemp(prefix="stockade-tuf-bench-"))
    env = {**os.environ, "STOCKADE_HOME": str(home)}
    subprocess.run(
        [STOCKADE, "init", "--no-default-indexes"], env=env, check=True, capture_output=True
    )
    return home


async def main(args: argparse.Namespace, home: Path) -> int:
    r = Runtime(Settings.load(home))
    try:
        index = await r.indexes.create("bench", IndexKind.PRIVATE)
        t0 = time.perf_counter()
        await r.tuf.init_index(index, args.bins)
        init_s = time.perf_counter() - t0
        bit_length = T.bit_length_for(args.bins)
        now = repo.utcnow()
        rows = []
        for p in range(args.projects):
            project = f"project-{p}"
            paths = [T.page_path(project, False), T.page_path(project, True)] + [
                T.file_path(project, f"{project}-{v}.whl") for v in range(args.files)
            ]
            rows.extend(
                {
                    "index_id": index.id,
                    "project": project,
                    "path": path,
                    "bin": T.bin_of(path, bit_length),
                    "length": 1000,
                    "sha256": _sha(path),
                    "prev_sha256": None,
                    "updated_at": now,
                }
                for path in paths
            )
        async with r.sessions() as s, s.begin():
            for i in range(0, len(rows), 5000):
                await s.execute(insert(TufTargetRow), rows[i : i + 5000])
        timings = []
        project = "project-7"
        for run in range(args.runs):
            served = _page(project, args.files + run + 1)  # one more file each time
            t0 = time.perf_counter()
            await r.tuf._record(index, {project: served})
            timings.append(time.perf_counter() - t0)
        timings.sort()
        st = await r.tuf.status(index)
        sizes = {
            "timestamp.json": len(await r.tuf.metadata(index, "timestamp.json")),
            "snapshot": len(
                await r.tuf.metadata(index, f"{st.versions['snapshot']}.snapshot.json")
            ),
            "targets": len(await r.tuf.metadata(index, f"{st.versions['targets']}.targets.json")),
        }
        snap = T.snapshot_versions(
            await r.tuf.metadata(index, f"{st.versions['snapshot']}.snapshot.json")
        )
        for path in (
            T.page_path(project, True),
            T.file_path(project, served.page.files[0].filename),
        ):
            b = T.bin_of(path, bit_length)
            sizes[f"bin of {path.split('/')[0]}"] = len(
                await r.tuf.metadata(index, f"{snap[b]}.{b}.json")
            )
        total_targets = len(rows)
        median = statistics.median(timings) * 1000
        p95 = timings[int(len(timings) * 0.95) - 1] * 1000
        print(f"index: {args.projects} projects, {total_targets} targets, {args.bins} bins")
        print(f"tuf init (every bin signed once): {init_s:.2f} s")
        print(f"re-sign after one upload: median {median:.1f} ms, p95 {p95:.1f} ms")
        print("metadata a client downloads for one install (bytes):")
        for k, v in sizes.items():
            print(f"  {k:<24} {v:>9,}")
        print(f"  {'total':<24} {sum(sizes.values()):>9,}")
        ok = median < 200
        print(f"target: re-sign under 200 ms: {'PASS' if ok else 'FAIL'}")
        return 0 if ok else 1
    finally:
        await r.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--projects", type=int, default=10_000)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--bins", type=int, default=16384)
    ap.add_argument("--runs", type=int, default=20)
    sys.exit(asyncio.run(main(ap.parse_args(), fresh_home())))

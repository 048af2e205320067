"""Development evaluation of the static malware scanner (stockade.core.threats).

    .venv/bin/python bench/threats_dev.py                 # everything, one table
    .venv/bin/python bench/threats_dev.py --only dev --show-missed 20
    .venv/bin/python bench/threats_dev.py --only benign --show-flagged 30
    .venv/bin/python bench/threats_dev.py --jobs 2 --json bench/results/threats.json

The JSON holds, per file, the verdict, score, CPU seconds of the scan (``process_time``) and a
sha256 of every finding, so two runs (before/after a scanner change) can be diffed file by file.

Data (read in place, never copied, never extracted to disk):

* malware: /work/shared/data/malware-samples/pypi/*.zip — each a ZipCrypto zip (password
  ``infected``) holding one original upload. The inner archive is read into memory and handed to
  ``scan_bytes``; nothing of it is written, installed, imported or executed.
* benign wheels: /opt/pypi/files, /opt/pypi-more/files, /opt/wheels.
* benign sdists: bench/.cache/sdists (``pip download --no-deps --no-binary :all: NAME``).

Hold-out split: samples are grouped into families (union of: the same normalised name stem —
letters only, a leading "py"/"python" dropped, first 6 letters — and the same normalised code:
the lines of .py files that touch execution/network/decoding, with the package name and digits
removed). The largest family stays in dev; every other family goes to the hold-out when a hash of
its smallest member name says so (about a third). Missed samples can be listed for dev only.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import re
import statistics
import sys
import tarfile
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from stockade.core.threats import scan_bytes  # noqa: E402

SAMPLES = Path("/work/shared/data/malware-samples/pypi")
BENIGN_WHEEL_DIRS = [Path("/opt/pypi/files"), Path("/opt/pypi-more/files"), Path("/opt/wheels")]
BENIGN_SDIST_DIR = ROOT / "bench" / ".cache" / "sdists"
PASSWORD = b"infected"
_KW = re.compile(
    r"exec|eval|system|popen|urlopen|urlretrieve|requests|socket|b64|marshal|webhook|http|"
    r"__import__|subprocess|startfile|getenv|environ",
    re.I,
)


@dataclass
class Sample:
    name: str  # package
    zip_path: Path
    member: str
    size: int
    split: str = "dev"
    family: str = ""


def _inner(s: Sample) -> bytes:
    """The original upload, in memory only."""
    with zipfile.ZipFile(s.zip_path) as z:
        return z.read(s.member, pwd=PASSWORD)


def _code_members(raw: bytes) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    try:
        if raw[:2] == b"PK":
            z = zipfile.ZipFile(io.BytesIO(raw))
            for i in z.infolist():
                if i.filename.endswith((".py", ".pth")) and i.file_size < 4_000_000:
                    out.append((i.filename, z.read(i)))
        else:
            with tarfile.open(fileobj=io.BytesIO(raw)) as t:
                for ti in t:
                    if ti.isfile() and ti.name.endswith((".py", ".pth")) and ti.size < 4_000_000:
                        f = t.extractfile(ti)
                        if f is not None:
                            out.append((ti.name, f.read()))
    except Exception:
        pass
    return out


def _stem(name: str) -> str:
    n = re.sub(r"[^a-z]", "", name.lower())
    return re.sub(r"^(python|py)", "", n)[:6]


def load_samples() -> list[Sample]:
    manifest = json.loads((SAMPLES / "manifest.json").read_text())
    samples = [
        Sample(e["package"], SAMPLES / e["sample"], e["member"], e["size"])
        for e in manifest["samples"]
    ]
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        parent[find(a)] = find(b)

    for s in samples:
        key = "S:" + s.name
        union(key, "N:" + _stem(s.name))
        variants = {
            s.name.lower(),
            s.name.lower().replace("-", "_"),
            s.name.lower().replace("_", "-"),
        }
        for path, body in _code_members(_inner(s)):
            if ".egg-info" in path:
                continue
            text = body.decode("utf-8", "replace").lower()
            hits = [ln for ln in text.splitlines() if _KW.search(ln)]
            if not hits:
                continue
            t = "\n".join(hits)
            for v in variants:
                t = t.replace(v, "PKG")
            t = re.sub(r"\s+", "", re.sub(r"\d+", "", t))
            union(key, "F:" + hashlib.sha1(t.encode()).hexdigest()[:16])
    fams: dict[str, list[Sample]] = collections.defaultdict(list)
    for s in samples:
        fams[find("S:" + s.name)].append(s)
    largest = max(fams.values(), key=len)
    for members in fams.values():
        fam_key = min(m.name for m in members)
        h = int(hashlib.sha256(fam_key.encode()).hexdigest(), 16)
        split = "dev" if members is largest or h % 3 else "holdout"
        for m in members:
            m.split = split
            m.family = fam_key
    return samples


# ----------------------------------------------------------------------------- scanning


def _scan_sample(s: Sample) -> dict[str, Any]:
    raw = _inner(s)
    c0 = time.process_time()
    r = scan_bytes(raw, s.member)
    return _summary(r, len(raw), time.process_time() - c0)


def _scan_file(p: Path) -> dict[str, Any]:
    data = p.read_bytes()
    c0 = time.process_time()
    r = scan_bytes(data, p.name)
    return _summary(r, len(data), time.process_time() - c0)


def _summary(r: Any, size: int, cpu: float) -> dict[str, Any]:
    every = [(f.rule, f.severity, f.path, f.line, f.snippet, f.message) for f in r.findings]
    return {
        "file": r.filename,
        "verdict": r.verdict,
        "score": r.score,
        "size": size,
        "elapsed": r.elapsed,
        "cpu": round(cpu, 4),
        "members": r.members,
        "findings": [(f[0], f[1], f[2], f[3], f[4][:140]) for f in every[:8]],
        # every finding, hashed: two runs agree on a file when verdict, score and this agree
        "findings_sha256": hashlib.sha256(repr(every).encode()).hexdigest(),
    }


def _run(fn: Any, items: list[Any], jobs: int) -> list[dict[str, Any]]:
    if jobs <= 1:
        return [fn(x) for x in items]
    with ProcessPoolExecutor(jobs) as ex:
        return list(ex.map(fn, items, chunksize=4))


def _family_recall(res: list[dict[str, Any]]) -> dict[str, Any]:
    """Recall counted per family: a family is detected at a tier when at least half of its
    samples are (a majority; 1 of 2 counts). Also the mean of the per-family sample recalls
    (macro average), for the JSON."""
    fams: dict[str, list[str]] = collections.defaultdict(list)
    for r in res:
        fams[r.get("family") or r["file"]].append(r["verdict"])
    out: dict[str, Any] = {"families": len(fams)}
    for tier, ok in (("malicious", ("malicious",)), ("suspicious+", ("malicious", "suspicious"))):
        rates = [sum(v in ok for v in vs) / len(vs) for vs in fams.values()]
        out[tier] = sum(r >= 0.5 for r in rates)
        out[f"{tier}_macro"] = round(sum(rates) / len(rates), 4) if rates else 0.0
    return out


def _pct(n: int, d: int) -> str:
    return f"{100.0 * n / d:6.2f}%" if d else "   n/a"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--only", choices=["dev", "holdout", "malware", "benign", "wheels", "sdists"])
    ap.add_argument("--limit", type=int, default=0, help="at most N items per set")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--show-missed", type=int, default=0, help="list N missed DEV samples")
    ap.add_argument("--show-flagged", type=int, default=0, help="list N flagged benign files")
    ap.add_argument("--json", type=Path, help="write the raw results here")
    args = ap.parse_args()

    results: dict[str, list[dict[str, Any]]] = {}
    meta: dict[str, Any] = {}
    want = args.only
    if want in (None, "dev", "holdout", "malware"):
        t = time.perf_counter()
        samples = load_samples()
        meta["families"] = len({s.family for s in samples})
        meta["split_seconds"] = round(time.perf_counter() - t, 1)
        for split in ("dev", "holdout"):
            part = [s for s in samples if s.split == split]
            meta[f"{split}_samples"] = len(part)
            meta[f"{split}_families"] = len({s.family for s in part})
        print(
            f"split: dev {meta['dev_samples']} samples / {meta['dev_families']} families, "
            f"holdout {meta['holdout_samples']} samples / {meta['holdout_families']} families"
        )
        for split in ("dev", "holdout"):
            if want in ("dev", "holdout") and want != split:
                continue
            items = [s for s in samples if s.split == split]
            if args.limit:
                items = items[: args.limit]
            res = _run(_scan_sample, items, args.jobs)
            for s, r in zip(items, res, strict=True):
                r["package"] = s.name
                r["family"] = s.family
            results[split] = res
    if want in (None, "benign", "wheels"):
        wheels = sorted(
            p for d in BENIGN_WHEEL_DIRS if d.is_dir() for p in d.iterdir() if p.suffix == ".whl"
        )
        if args.limit:
            wheels = wheels[: args.limit]
        results["wheels"] = _run(_scan_file, wheels, args.jobs)
    if want in (None, "benign", "sdists"):
        sdists = (
            sorted(p for p in BENIGN_SDIST_DIR.glob("*") if p.is_file())
            if BENIGN_SDIST_DIR.is_dir()
            else []
        )
        if args.limit:
            sdists = sdists[: args.limit]
        results["sdists"] = _run(_scan_file, sdists, args.jobs)

    print(
        f"{'set':<9} {'n':>5} {'malicious':>10} {'suspicious+':>12} {'clean':>7}   "
        f"{'families':>8} {'fam mal':>8} {'fam sus+':>8}   "
        f"{'MB':>8} {'MB/s':>7} {'median ms':>9} {'p95 ms':>8} {'max s':>6}"
    )
    for name, res in results.items():
        n = len(res)
        mal = sum(r["verdict"] == "malicious" for r in res)
        sus = sum(r["verdict"] in ("malicious", "suspicious") for r in res)
        mb = sum(r["size"] for r in res) / 1e6
        secs = sum(r["elapsed"] for r in res)
        el = sorted(r["elapsed"] for r in res) or [0.0]
        p95 = el[min(len(el) - 1, int(0.95 * len(el)))]
        fam = _family_recall(res) if name in ("dev", "holdout") else None
        if fam is not None:
            meta[f"{name}_family_recall"] = fam
            fcols = (
                f"{fam['families']:>8} {_pct(fam['malicious'], fam['families']):>8} "
                f"{_pct(fam['suspicious+'], fam['families']):>8}"
            )
        else:
            fcols = f"{'':>8} {'':>8} {'':>8}"
        print(
            f"{name:<9} {n:>5} {_pct(mal, n):>10} {_pct(sus, n):>12} {_pct(n - sus, n):>7}   "
            f"{fcols}   "
            f"{mb:8.1f} {mb / secs if secs else 0:7.1f} {1000 * statistics.median(el):9.1f} "
            f"{1000 * p95:8.1f} {el[-1]:6.2f}"
        )
    print(
        "(malware rows: recall per sample, then per family: a family counts as detected at a "
        "tier when at least half of its samples are flagged at that tier, so every family "
        "weighs the same whatever its size; benign rows: false-positive rate; "
        "MB/s = input bytes / scan time, one core)"
    )
    if "dev" in results and args.show_missed:
        missed = [r for r in results["dev"] if r["verdict"] != "malicious"]
        print(f"\nmissed at the malicious tier in dev ({len(missed)}):")
        for r in missed[: args.show_missed]:
            print(f"  {r['package']} [{r['verdict']} {r['score']}] {r['file']}")
            for f in r["findings"][:4]:
                print(f"      {f[1]:<8} {f[0]:<26} {f[2]}:{f[3]}  {f[4]}")
    for name in ("wheels", "sdists"):
        if name in results and args.show_flagged:
            flagged = [r for r in results[name] if r["verdict"] != "clean"]
            print(f"\nflagged benign {name} ({len(flagged)}):")
            for r in flagged[: args.show_flagged]:
                print(f"  {r['file']} [{r['verdict']} {r['score']}]")
                for f in r["findings"][:4]:
                    print(f"      {f[1]:<8} {f[0]:<26} {f[2]}:{f[3]}  {f[4]}")
    if "dev" in results or "holdout" in results:
        rules = collections.Counter(
            f[0] for k in ("dev",) for r in results.get(k, []) for f in r["findings"]
        )
        print("\nrules firing on dev:", ", ".join(f"{k}={v}" for k, v in rules.most_common()))
    for name in ("wheels", "sdists"):
        if name in results:
            fired = collections.Counter(f[0] for r in results[name] for f in r["findings"])
            print(
                f"rules firing on benign {name}:",
                ", ".join(f"{k}={v}" for k, v in fired.most_common()),
            )
    everything = [r for res in results.values() for r in res]
    if everything:
        mb = sum(r["size"] for r in everything) / 1e6
        secs = sum(r["elapsed"] for r in everything)
        el = sorted(r["elapsed"] for r in everything)
        print(
            f"all sets: {len(everything)} files, {mb:.1f} MB in {secs:.1f} s of scanning "
            f"({mb / secs if secs else 0:.1f} MB/s per core), median "
            f"{1000 * statistics.median(el):.1f} ms, "
            f"p95 {1000 * el[int(0.95 * (len(el) - 1))]:.0f} ms"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

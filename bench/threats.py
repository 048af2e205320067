"""Stockade's static malware scanner against GuardDog: recall, false positives and speed.

    .venv/bin/python bench/threats.py                        # the whole evaluation, one table
    .venv/bin/python bench/threats.py --limit 20             # quick: at most 20 files per set
    .venv/bin/python bench/threats.py --peer-sample 100 --jobs 2 --sdists 60

Peer: GuardDog (DataDog), installed once from PyPI into ``bench/.peers/guarddog`` (a python3.11
venv; ``pip install guarddog``). It is only ever run as a subprocess,
``guarddog pypi scan <local archive> --output-format json``, with its own kernel sandbox left on
(the default), a private ``TMPDIR`` and a per-package timeout (``--timeout``).

Data (the same three sets for both tools):

* malware: /work/shared/data/malware-samples/pypi/*.zip — 1,500 real malicious uploads, each a
  ZipCrypto zip (password ``infected``) holding one original upload. Stockade reads the inner
  archive into memory and hands the bytes to ``scan_bytes`` (as bench/threats_dev.py does).
  GuardDog needs a file: the inner archive is written, still packed, into a fresh
  ``tempfile.mkdtemp(prefix="stockade-gd-")`` directory (mode 0700, a name that cannot be
  imported), GuardDog scans that one file (its own extraction also goes there via ``TMPDIR``) and
  the directory is removed right after, whatever happens. Nothing is installed, imported or run.
* benign wheels: every ``*.whl`` in /opt/pypi/files, /opt/pypi-more/files and /opt/wheels.
* benign sdists: bench/.cache/sdists — the first ``--sdists`` (80) projects of
  /work/shared/data/top-pypi-packages.json that publish an sdist, fetched once each with
  ``pip download --no-deps --no-binary :all: --isolated NAME`` (``PIP_CONFIG_FILE=/dev/null``).
  When pip cannot do it (``--no-binary :all:`` also forces the build backends to be built from
  source, which fails for numpy, cryptography, pydantic-core …) or takes over a minute, the sdist
  of the latest release listed by PyPI's JSON API is downloaded instead (sha256 checked). Which
  way each file came is kept in bench/.cache/sdists.json.

Tiers:

* Stockade: its verdict. ``malicious`` is the malicious tier; ``suspicious`` or ``malicious`` is
  the suspicious-or-worse tier.
* GuardDog (3.x): the risk engine's label in the JSON report (``risk_score.label``, from
  correlating capability and threat rule matches into risks and scoring them 0-10).
  ``high_risk`` (score ≥ 7) is the malicious tier; ``suspicious`` (5-7) or ``high_risk`` is the
  suspicious-or-worse tier; ``low`` and ``no_risks_detected`` are clean. GuardDog 3 has no
  per-rule ERROR/WARNING severity any more. The looser reading "any rule matched"
  (``issues > 0``) is reported on a separate line for reference. A GuardDog run that times out,
  exits non-zero or prints no JSON report counts as *not flagged* (a miss on malware, no false
  positive on benign files) and is counted in the ``err`` column.

Method: Stockade scans the full sets in ``--jobs`` worker processes; the time of a package is
``Report.elapsed`` (the scan of bytes already in memory, wall clock) and its CPU time
``time.process_time`` around ``scan_bytes``. GuardDog scans a deterministic subset of each set
(the ``--peer-sample`` files with the smallest sha256 of their name; all of a set when it is
smaller), ``--jobs`` subprocesses at a time; the time of a package is the wall clock of its whole
``guarddog`` process (interpreter start-up included: that is what one scan costs with its CLI),
and the CPU time of the set is the children's rusage. The comparison rows put both tools on the
same files; MB/s = input bytes (the archives as uploaded) / summed per-package seconds. The
GuardDog start-up floor (median of 5 runs on the smallest benign wheel) is printed so that the
ratio can also be read without it. Stockade's recall is also split by malware family into the
dev and held-out halves of bench/threats_dev.py (``load_samples``, imported, unchanged).

Targets (PASS/MISS, from this run's numbers): Stockade malicious-tier recall ≥ 95% on all 1,500
samples; false positives ≤ 0.2% at the malicious tier and ≤ 2% at suspicious-or-worse, on benign
wheels and on benign sdists separately; Stockade MB/s ≥ 10x GuardDog's on the same files. Raw
numbers go to bench/results/threats-<UTC>.json. The script exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from threats_dev import (  # noqa: E402
    BENIGN_SDIST_DIR,
    BENIGN_WHEEL_DIRS,
    PASSWORD,
    Sample,
    load_samples,
)

from stockade.core.threats import scan_bytes  # noqa: E402

PEERS = ROOT / "bench" / ".peers"
GD_VENV = PEERS / "guarddog"
GD_PACKAGES = ["guarddog"]
RESULTS = ROOT / "bench" / "results"
SDIST_MANIFEST = ROOT / "bench" / ".cache" / "sdists.json"
TOP_PYPI = Path("/work/shared/data/top-pypi-packages.json")
PYPI_SIMPLE = "https://pypi.org/simple/"
PYPI_JSON = "https://pypi.org/pypi/{name}/json"
SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tgz")
SETS = ("malware", "wheels", "sdists")
GD_MALICIOUS = {"high_risk"}
GD_SUSPICIOUS = {"high_risk", "suspicious"}


class Unavailable(Exception):
    """A prerequisite is missing; the message says how to get it."""


@dataclass(frozen=True)
class Item:
    """One file of a set. Malware: ``path`` is the outer zip and ``member`` the upload in it."""

    set: str
    name: str  # display name: the file name of the upload
    path: Path
    member: str = ""
    size: int = 0
    split: str = ""  # malware only: dev | holdout
    family: str = ""


@dataclass
class Outcome:
    """One tool's result on one item."""

    name: str
    tier: str  # malicious | suspicious | clean
    size: int
    seconds: float
    cpu: float = 0.0
    status: str = "ok"  # ok | error | timeout
    score: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for children: no PIP_*/proxy/STOCKADE_* settings leak in."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "STOCKADE_", "UV_"))
        and k.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env["PIP_CONFIG_FILE"] = "/dev/null"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def run_cmd(
    argv: list[str], env: dict[str, str], timeout: float, cwd: Path | None = None
) -> tuple[int | None, str, str]:
    """Run in its own process group; the group is killed on timeout (returncode None)."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        return None, out, err
    return proc.returncode, out, err


class Progress:
    """One status line on stderr, rewritten in place (a plain line per 10% when not a tty)."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done, self.t0 = label, total, 0, time.monotonic()
        self.tty = sys.stderr.isatty()
        self.step = max(1, total // 10)

    def advance(self) -> None:
        self.done += 1
        if self.tty or self.done % self.step == 0 or self.done == self.total:
            el = time.monotonic() - self.t0
            eta = el / self.done * (self.total - self.done)
            line = f"  {self.label}: {self.done}/{self.total}  {el:5.0f} s  (eta {eta:4.0f} s)"
            print(("\r" + line) if self.tty else line, end="", file=sys.stderr, flush=True)
            if not self.tty:
                print(file=sys.stderr)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- prerequisites


def ensure_guarddog() -> Path:
    """``bench/.peers/guarddog/bin/guarddog``: a python3.11 venv with guarddog from PyPI."""
    gd = GD_VENV / "bin" / "guarddog"
    marker = GD_VENV / ".bench-installed"
    if gd.exists() and marker.exists() and json.loads(marker.read_text()) == GD_PACKAGES:
        return gd
    py = shutil.which("python3.11")
    if py is None:
        raise Unavailable("python3.11 not found on PATH (needed to create GuardDog's venv)")
    say(f"installing GuardDog once, from PyPI, into {GD_VENV} (pip install guarddog) …")
    env = clean_env()
    if "PIP_CERT" in os.environ:
        env["PIP_CERT"] = os.environ["PIP_CERT"]
    if not (GD_VENV / "bin" / "python").exists():
        rc, _, err = run_cmd([py, "-m", "venv", str(GD_VENV)], env, timeout=120)
        if rc != 0:
            raise Unavailable(f"venv creation failed: {err.strip()[-300:]}")
    pip = [str(GD_VENV / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    rc, _, err = run_cmd([*pip, "-q", "--index-url", PYPI_SIMPLE, "-U", *GD_PACKAGES], env, 900)
    if rc != 0 or not gd.exists():
        raise Unavailable(f"pip install guarddog failed: {err.strip()[-400:]}")
    marker.write_text(json.dumps(GD_PACKAGES))
    return gd


def guarddog_version(gd: Path) -> str:
    rc, out, _ = run_cmd([str(gd), "--version"], clean_env(), timeout=60)
    return out.strip().splitlines()[-1] if rc == 0 and out.strip() else "?"


def _top_names() -> list[str]:
    rows = json.loads(TOP_PYPI.read_text())["rows"]
    return [str(r["project"]) for r in rows]


def _pip_download(name: str, dest: Path) -> Path | None:
    """``pip download --no-deps --no-binary :all:`` into a scratch dir; the sdist or None."""
    scratch = Path(tempfile.mkdtemp(prefix="stockade-sdist-"))
    try:
        argv = [sys.executable, "-m", "pip", "download", "--isolated", "--quiet"]
        argv += ["--disable-pip-version-check", "--no-deps", "--no-binary", ":all:"]
        argv += ["--index-url", PYPI_SIMPLE, "-d", str(scratch), name]
        rc, _, _ = run_cmd(argv, clean_env(), timeout=60, cwd=scratch)
        got = [p for p in scratch.iterdir() if p.name.endswith(SDIST_SUFFIXES)]
        if rc != 0 or len(got) != 1:
            return None
        target = dest / got[0].name
        shutil.move(str(got[0]), target)
        return target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _json_download(name: str, dest: Path) -> Path | None:
    """The sdist of the latest release as listed by PyPI's JSON API, sha256 checked."""
    api = PYPI_JSON.format(name=name)
    with urllib.request.urlopen(api, timeout=60) as r:
        info = json.load(r)
    sdists = [u for u in info.get("urls", []) if u.get("packagetype") == "sdist"]
    if not sdists:
        return None
    u = sdists[0]
    fname = Path(u["filename"]).name
    url = urllib.parse.urljoin(api, u["url"])  # may be relative to the API
    if not fname.endswith(SDIST_SUFFIXES) or not url.startswith("https://"):
        return None
    with urllib.request.urlopen(url, timeout=300) as r:
        data = r.read()
    if hashlib.sha256(data).hexdigest() != u["digests"]["sha256"]:
        raise ValueError(f"{fname}: sha256 mismatch")
    target = dest / fname
    target.write_bytes(data)
    return target


def ensure_sdists(count: int) -> list[Path]:
    """The sdists of the first ``count`` top-PyPI projects that have one (cached)."""
    BENIGN_SDIST_DIR.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, dict[str, str]] = (
        json.loads(SDIST_MANIFEST.read_text()) if SDIST_MANIFEST.exists() else {}
    )
    have = {
        n: e
        for n, e in manifest.items()
        if not e["file"] or (BENIGN_SDIST_DIR / e["file"]).exists()
    }
    names: list[str] = []
    for n in _top_names():
        if len([x for x in names if have.get(x, {}).get("file", "?")]) >= count:
            break
        if n in have and not have[n]["file"]:
            continue  # known: no sdist on PyPI
        names.append(n)
        if n in have:
            continue
        say(f"  fetching the sdist of {n} from PyPI …")
        entry = {"file": "", "via": "none"}
        try:
            p = _pip_download(n, BENIGN_SDIST_DIR)
            if p is not None:
                entry = {"file": p.name, "via": "pip download --no-binary :all:"}
            else:
                p = _json_download(n, BENIGN_SDIST_DIR)
                if p is not None:
                    entry = {"file": p.name, "via": "PyPI JSON API (pip could not)"}
        except Exception as exc:  # network trouble: retried next run
            say(f"  {n}: {type(exc).__name__}: {exc}")
            continue
        have[n] = entry
        SDIST_MANIFEST.write_text(json.dumps(have, indent=1, sort_keys=True))
    return sorted(BENIGN_SDIST_DIR / have[n]["file"] for n in names if have.get(n, {}).get("file"))


# ----------------------------------------------------------------------------- Stockade


def _inner_bytes(zip_path: Path, member: str) -> bytes:
    """The original upload, in memory only."""
    with zipfile.ZipFile(zip_path) as z:
        return z.read(member, pwd=PASSWORD)


def _read(item: Item) -> bytes:
    return _inner_bytes(item.path, item.member) if item.set == "malware" else item.path.read_bytes()


def stockade_one(item: Item) -> Outcome:
    """Worker process: read the bytes (malware from its zip, in memory) and scan them."""
    data = _read(item)
    c0 = time.process_time()
    r = scan_bytes(data, item.name)
    cpu = time.process_time() - c0
    rules = sorted({f.rule for f in r.findings if f.severity in ("high", "critical")})
    return Outcome(item.name, r.verdict, len(data), r.elapsed, cpu, score=r.score, detail={
        "rules": rules[:12],
        "findings": len(r.findings),
    })  # fmt: skip


def _warm() -> None:
    """Worker initializer: one scan of a tiny synthetic sdist, so no package pays for set-up."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, body in (
            ("warm-0.1/PKG-INFO", b"Metadata-Version: 2.1\nName: warm\nVersion: 0.1\n"),
            ("warm-0.1/setup.py", b"from setuptools import setup\nsetup(name='warm')\n"),
            ("warm-0.1/warm/__init__.py", b"import base64\nX = base64.b64decode('aGk=')\n"),
        ):
            ti = tarfile.TarInfo(name)
            ti.size = len(body)
            tf.addfile(ti, io.BytesIO(body))
    scan_bytes(buf.getvalue(), "warm-0.1.tar.gz")


def _run_pool(fn: Callable[[Item], Outcome], items: list[Item], jobs: int, label: str, *,
              threads: bool = False) -> list[Outcome]:  # fmt: skip
    prog = Progress(label, len(items))
    out: list[Outcome] = []
    try:
        if jobs <= 1:
            if not threads:
                _warm()
            for it in items:
                out.append(fn(it))
                prog.advance()
        else:
            ex: Executor = (
                ThreadPoolExecutor(jobs)
                if threads
                else ProcessPoolExecutor(jobs, initializer=_warm)
            )
            with ex:
                for o in ex.map(fn, items, chunksize=1):
                    out.append(o)
                    prog.advance()
    finally:
        prog.close()
    return out


# ----------------------------------------------------------------------------- GuardDog


def _parse_guarddog(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                report = json.loads(line)
                if isinstance(report, dict):
                    return report
    with contextlib.suppress(ValueError):
        report = json.loads(stdout)
        if isinstance(report, dict):
            return report
    return None


@dataclass
class GuardDog:
    exe: Path
    timeout: float

    def scan(self, item: Item) -> Outcome:
        """One ``guarddog pypi scan`` in a private 0700 temp dir, removed afterwards."""
        tmp = Path(tempfile.mkdtemp(prefix="stockade-gd-"))
        try:
            if item.set == "malware":
                # the upload as-is (still packed), only so that GuardDog can read it
                target = tmp / Path(item.member).name
                data = _inner_bytes(item.path, item.member)
                target.write_bytes(data)
                size = len(data)
                del data
            else:
                target, size = item.path, item.size
            argv = [str(self.exe), "pypi", "scan", str(target), "--output-format", "json"]
            env = clean_env(TMPDIR=str(tmp), HOME=str(tmp))
            t0 = time.perf_counter()
            rc, out, err = run_cmd(argv, env, timeout=self.timeout, cwd=tmp)
            seconds = time.perf_counter() - t0
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if rc is None:
            return Outcome(item.name, "clean", size, seconds, status="timeout")
        report = _parse_guarddog(out)
        if rc != 0 or report is None:
            tail = [ln for ln in err.splitlines() if "network error" not in ln.lower()][-3:]
            return Outcome(item.name, "clean", size, seconds, status="error",
                           detail={"rc": rc, "stderr": " | ".join(tail)[-400:]})  # fmt: skip
        risk = report.get("risk_score") or {}
        label = str(risk.get("label", ""))
        tier = (
            "malicious"
            if label in GD_MALICIOUS
            else "suspicious"
            if label in GD_SUSPICIOUS
            else "clean"
        )
        results = report.get("results") or {}
        matched = sorted(k for k, v in results.items() if v)
        errors = report.get("errors") or {}
        return Outcome(item.name, tier, size, seconds, score=float(risk.get("score") or 0.0),
                       detail={"label": label, "issues": int(report.get("issues") or 0),
                               "rules": matched[:20], "rule_errors": len(errors)})  # fmt: skip


def startup_floor(gd: GuardDog, wheels: list[Item]) -> float:
    """Median wall time of 5 GuardDog runs on the smallest benign wheel."""
    if not wheels:
        return 0.0
    small = min(wheels, key=lambda i: i.size)
    return statistics.median(gd.scan(small).seconds for _ in range(5))


# ----------------------------------------------------------------------------- data sets


def _h(s: str) -> str:
    return hashlib.sha256(s.encode()).hexdigest()


def pick(items: list[Item], n: int) -> list[Item]:
    """Deterministic subset: the n items with the smallest sha256 of their name."""
    if n <= 0 or n >= len(items):
        return list(items)
    chosen = {i.name for i in sorted(items, key=lambda i: _h(i.name))[:n]}
    return [i for i in items if i.name in chosen]


def malware_items(samples: list[Sample]) -> list[Item]:
    return sorted(
        (
            Item("malware", s.member, s.zip_path, s.member, s.size, s.split, s.family)
            for s in samples
        ),
        key=lambda i: i.name,
    )


def file_items(set_name: str, paths: Iterable[Path]) -> list[Item]:
    return [Item(set_name, p.name, p, size=p.stat().st_size) for p in sorted(paths)]


# ----------------------------------------------------------------------------- numbers


def rate(outs: list[Outcome], tiers: set[str]) -> tuple[int, int]:
    return sum(o.tier in tiers for o in outs), len(outs)


MAL = {"malicious"}
SUS = {"malicious", "suspicious"}


def pct(k: int, n: int) -> str:
    return f"{100.0 * k / n:.2f}%" if n else "n/a"


def speed(outs: list[Outcome]) -> dict[str, float]:
    if not outs:
        return {"mb": 0.0, "seconds": 0.0, "mbps": 0.0, "median": 0.0, "p95": 0.0, "max": 0.0}
    mb = sum(o.size for o in outs) / 1e6
    secs = sum(o.seconds for o in outs)
    el = sorted(o.seconds for o in outs)
    return {
        "mb": mb,
        "seconds": secs,
        "mbps": mb / secs if secs else 0.0,
        "median": statistics.median(el),
        "p95": el[min(len(el) - 1, round(0.95 * (len(el) - 1)))],
        "max": el[-1],
    }


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# ----------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--jobs", type=int, default=2, help="parallel scans (both tools)")
    ap.add_argument(
        "--peer-sample", type=int, default=250, help="files per set scanned by both tools"
    )
    ap.add_argument("--sdists", type=int, default=80, help="top-PyPI sdists to use (cached)")
    ap.add_argument("--limit", type=int, default=0, help="at most N files per set (quick runs)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per GuardDog run")
    ap.add_argument("--skip-peer", action="store_true", help="Stockade only")
    ap.add_argument("--json", type=Path, help="raw results (default bench/results/threats-<UTC>)")
    args = ap.parse_args()
    t_start = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    commit = _git_head()  # now: the scanner code and rules are loaded at start

    gd: GuardDog | None = None
    gd_version = ""
    if not args.skip_peer:
        try:
            gd = GuardDog(ensure_guarddog(), args.timeout)
            gd_version = guarddog_version(gd.exe)
        except Unavailable as exc:
            say(f"GuardDog unavailable: {exc}")
            return 2

    # -- data
    say("reading the malware samples and splitting them into families (bench/threats_dev.py) …")
    t = time.monotonic()
    samples = load_samples()
    split_seconds = time.monotonic() - t
    sets: dict[str, list[Item]] = {
        "malware": malware_items(samples),
        "wheels": file_items(
            "wheels",
            (p for d in BENIGN_WHEEL_DIRS if d.is_dir() for p in d.iterdir() if p.suffix == ".whl"),
        ),
        "sdists": file_items("sdists", ensure_sdists(args.sdists)),
    }
    if args.limit:
        sets = {k: pick(v, args.limit) for k, v in sets.items()}
    say(
        "sets: "
        + ", ".join(
            f"{k} {len(v)} ({sum(i.size for i in v) / 1e6:.0f} MB)" for k, v in sets.items()
        )
    )

    # -- Stockade, full sets
    stockade: dict[str, list[Outcome]] = {}
    stockade_wall: dict[str, float] = {}
    for name in SETS:
        t = time.monotonic()
        stockade[name] = _run_pool(stockade_one, sets[name], args.jobs, f"Stockade {name}")
        stockade_wall[name] = time.monotonic() - t

    # -- GuardDog, subsets
    subsets = {k: pick(v, args.peer_sample) for k, v in sets.items()}
    guard: dict[str, list[Outcome]] = {}
    guard_cpu: dict[str, float] = {}
    guard_wall: dict[str, float] = {}
    floor = 0.0
    if gd is not None:
        floor = startup_floor(gd, sets["wheels"])
        for name in SETS:
            c0, t = _children_cpu(), time.monotonic()
            guard[name] = _run_pool(
                gd.scan, subsets[name], args.jobs, f"GuardDog {name}", threads=True
            )
            guard_cpu[name] = _children_cpu() - c0
            guard_wall[name] = time.monotonic() - t

    # -- tables
    by_name = {k: {o.name: o for o in v} for k, v in stockade.items()}
    same = {k: [by_name[k][i.name] for i in subsets[k]] for k in SETS}
    lines: list[str] = []
    emit = lines.append
    emit(
        f"Stockade {_stockade_version()} ({commit}) vs GuardDog {gd_version or '(skipped)'} — "
        f"{platform.node()}, {os.cpu_count()} CPUs, --jobs {args.jobs}, "
        f"load average at start {os.getloadavg()[0]:.1f}"
    )
    emit("")
    emit("Detection  (malware rows: recall; benign rows: false-positive rate)")
    head = f"{'tool':<9} {'set':<26} {'n':>5} {'malicious':>10} {'suspicious+':>12} {'err':>4}"
    emit(head)
    emit("-" * len(head))

    def det(tool: str, label: str, outs: list[Outcome]) -> None:
        m, n = rate(outs, MAL)
        s, _ = rate(outs, SUS)
        errs = sum(o.status != "ok" for o in outs)
        emit(f"{tool:<9} {label:<26} {n:>5} {pct(m, n):>10} {pct(s, n):>12} {errs:>4}")

    mal_all = stockade["malware"]
    split_of = {i.name: i.split for i in sets["malware"]}
    det("Stockade", "malware, all", mal_all)
    det("Stockade", "  dev families", [o for o in mal_all if split_of[o.name] == "dev"])
    det("Stockade", "  held-out families", [o for o in mal_all if split_of[o.name] == "holdout"])
    det("Stockade", "benign wheels, all", stockade["wheels"])
    det("Stockade", "benign sdists, all", stockade["sdists"])
    if guard:
        emit(
            f"same files (peer sample: {', '.join(f'{k} {len(subsets[k])}' for k in SETS)}; "
            "GuardDog errors/timeouts count as not flagged)"
        )
        for name, label in (("malware", "malware"), ("wheels", "benign wheels"),
                            ("sdists", "benign sdists")):  # fmt: skip
            det("Stockade", f"{label}, subset", same[name])
            det("GuardDog", f"{label}, subset", guard[name])
        loose = {k: sum(o.detail.get("issues", 0) > 0 for o in v) for k, v in guard.items()}
        emit(
            "GuardDog, any rule matched (issues > 0): "
            + ", ".join(f"{k} {pct(loose[k], len(guard[k]))}" for k in SETS)
        )

    emit("")
    emit("Speed  (seconds per package; MB/s = input MB / summed per-package seconds)")
    head = (
        f"{'tool':<9} {'set':<20} {'n':>5} {'MB':>8} {'MB/s':>7} {'CPU MB/s':>8} "
        f"{'median s':>9} {'p95 s':>7} {'max s':>7}"
    )
    emit(head)
    emit("-" * len(head))

    def spd(tool: str, label: str, outs: list[Outcome], cpu: float) -> dict[str, float]:
        sp = speed(outs)
        cpu_mbps = sp["mb"] / cpu if cpu else 0.0
        emit(
            f"{tool:<9} {label:<20} {len(outs):>5} {sp['mb']:8.1f} {sp['mbps']:7.1f} "
            f"{cpu_mbps:8.1f} {sp['median']:9.3f} {sp['p95']:7.3f} {sp['max']:7.2f}"
        )
        return sp

    for name in SETS:
        spd("Stockade", f"{name}, all", stockade[name], sum(o.cpu for o in stockade[name]))
    sp_s = sp_g = speed([])
    if guard:
        for name in SETS:
            spd("Stockade", f"{name}, subset", same[name], sum(o.cpu for o in same[name]))
            spd("GuardDog", f"{name}, subset", guard[name], guard_cpu[name])
        all_same = [o for k in SETS for o in same[k]]
        all_guard = [o for k in SETS for o in guard[k]]
        sp_s = spd("Stockade", "all three, subset", all_same, sum(o.cpu for o in all_same))
        sp_g = spd("GuardDog", "all three, subset", all_guard, sum(guard_cpu.values()))
        no_floor = sp_g["seconds"] - floor * len(all_guard)
        emit(
            f"GuardDog start-up floor (smallest wheel, median of 5): {floor:.2f} s per run; "
            f"without it GuardDog would do {sp_g['mb'] / no_floor if no_floor > 0 else 0:.1f} "
            "MB/s on the subset"
        )

    flagged = [(s, o) for s in ("wheels", "sdists") for o in stockade[s] if o.tier != "clean"]
    if flagged:
        emit("")
        emit(f"Benign files flagged by Stockade ({len(flagged)}):")
        for set_name, o in flagged[:20]:
            rules = ", ".join(o.detail.get("rules", [])) or "(medium/low findings only)"
            emit(f"  {set_name:<7} {o.name:<52} {o.tier:<10} {rules}")

    # -- targets
    emit("")
    emit("Targets")
    verdicts: list[tuple[str, str, str, bool | None]] = []
    m, n = rate(mal_all, MAL)
    verdicts.append(
        (
            "Stockade malicious-tier recall, all malware",
            pct(m, n),
            ">= 95%",
            n > 0 and m >= 0.95 * n,
        )
    )
    for name in ("wheels", "sdists"):
        k, n = rate(stockade[name], MAL)
        verdicts.append((f"FP at malicious, benign {name}", pct(k, n), "<= 0.2%", k <= 0.002 * n))
        k, n = rate(stockade[name], SUS)
        verdicts.append((f"FP at suspicious+, benign {name}", pct(k, n), "<= 2%", k <= 0.02 * n))
    if guard and sp_g["mbps"]:
        ratio = sp_s["mbps"] / sp_g["mbps"]
        cpu_s = sum(o.cpu for k in SETS for o in same[k])
        cpu_g = sum(guard_cpu.values())
        cpu_ratio = cpu_g / cpu_s if cpu_s else 0.0
        verdicts.append(
            (
                "throughput vs GuardDog, same files",
                f"{ratio:.1f}x ({sp_s['mbps']:.1f} vs {sp_g['mbps']:.1f} MB/s; "
                f"CPU {cpu_ratio:.1f}x)",
                ">= 10x (MB/s)",
                ratio >= 10,
            )
        )
    else:
        verdicts.append(("throughput vs GuardDog, same files", "not measured", ">= 10x", None))
    for what, value, goal, ok in verdicts:
        mark = "N/A" if ok is None else "PASS" if ok else "MISS"
        emit(f"  {mark:<5} {what:<44} {value:<44} target {goal}")
    total = time.monotonic() - t_start
    emit("")
    emit(
        f"run took {total / 60:.1f} min (family split {split_seconds:.0f} s; Stockade "
        + ", ".join(f"{k} {v:.0f} s" for k, v in stockade_wall.items())
        + (
            "; GuardDog " + ", ".join(f"{k} {v:.0f} s" for k, v in guard_wall.items())
            if guard
            else ""
        )
        + ")"
    )
    for line in lines:
        print(line)

    out = args.json or RESULTS / f"threats-{stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)

    def dump(outs: list[Outcome]) -> list[dict[str, Any]]:
        return [o.__dict__ for o in outs]

    out.write_text(
        json.dumps(
            {
                "meta": {
                    "utc": stamp,
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "commit": commit,
                    "guarddog": gd_version,
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "loadavg_end": os.getloadavg(),
                    "seconds": round(total, 1),
                    "split_seconds": round(split_seconds, 1),
                    "stockade_wall": stockade_wall,
                    "guarddog_wall": guard_wall,
                    "guarddog_children_cpu": guard_cpu,
                    "guarddog_startup_floor": floor,
                    "subsets": {k: [i.name for i in v] for k, v in subsets.items()},
                    "splits": {i.name: [i.split, i.family] for i in sets["malware"]},
                    "sdist_sources": json.loads(SDIST_MANIFEST.read_text())
                    if SDIST_MANIFEST.exists()
                    else {},
                    "table": lines,
                    "targets": [
                        {"target": w, "value": v, "goal": g, "pass": ok} for w, v, g, ok in verdicts
                    ],
                },
                "stockade": {k: dump(v) for k, v in stockade.items()},
                "guarddog": {k: dump(v) for k, v in guard.items()},
            },
            indent=1,
        )
    )
    print(f"raw numbers: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0 if all(ok is not False for *_, ok in verdicts) else 1


def _git_head() -> str:
    """HEAD, plus "+dirty" when the scanner or its rules differ from it in the working tree."""
    env = dict(os.environ)
    rc, out, _ = run_cmd(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], env, 10)
    if rc != 0:
        return "?"
    scanner = ["src/stockade/core/threats", "src/stockade/data/threat_rules.toml"]
    _, dirty, _ = run_cmd(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--", *scanner], env, 10
    )
    return out.strip() + ("+dirty" if dirty.strip() else "")


def _stockade_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("stockade")
    except PackageNotFoundError:
        return "(source)"


if __name__ == "__main__":
    raise SystemExit(main())

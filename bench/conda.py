"""Conda channel benchmark (issue 7): a mirror of a 200,000-record linux-64 repodata.json,
filtered by a policy, next to its named peers, in one run.

    .venv/bin/python bench/conda.py                 # 200,000 records (about 2 minutes)
    .venv/bin/python bench/conda.py --records 20000 --duration 2    # quick

Measured, all on 127.0.0.1:

* Stockade (``stockade serve --workers 1``, SQLite, local files): a mirror channel of the
  synthesized upstream (served by nginx) under a policy (licence, names and age rules):
  - cold: the first ``GET …/linux-64/repodata.json`` (fetch from the upstream, one orjson parse,
    every record decided, JSON + .zst + gzip + CEP-16 shards written, switched);
  - warm: the same request again (the derived document, from the blob store), sequential
    latency and wrk throughput; a 304 revalidation with ``If-None-Match``;
  - the shard index and one shard;
  - peak memory: the server's VmHWM (its resident high-water mark) before and after the cold
    request (so the delta is what deriving the document cost).
* peer "orjson": ``orjson.loads`` + ``orjson.dumps`` of the same unfiltered file, and
  ``orjson.dumps`` alone of the parsed dict, in a fresh process (time, ru_maxrss). The issue's
  target: filtering within 2x of orjson parsing plus serializing.
* peer "nginx": Debian's nginx serving the very bytes Stockade served (the filtered
  repodata.json), pre-built as a static file: sequential latency and wrk throughput.

Raw numbers go to bench/results/conda-<UTC timestamp>.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT), str(BENCH)]

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from run import (  # noqa: E402
    _descendants,
    basic,
    clean_env,
    free_port,
    lua_script,
    run_cmd,
    spawn,
    stop_all,
    tool,
    wait_http,
    wrk,
)

STOCKADE = ROOT / ".venv" / "bin" / "stockade"
PYTHON = ROOT / ".venv" / "bin" / "python"
RESULTS = BENCH / "results"
console = Console(width=None if sys.stdout.isatty() else 150)

POLICY = """\
# bench/conda.py: a policy over conda records
[[rules]]
kind = "license"
deny = ["GPL-*", "AGPL-*"]
unknown = "allow"

[[rules]]
kind = "names"
deny = ["pkg-000*", "lib-evil*"]

[[rules]]
kind = "age"
min_days = 3
"""

LICENSES = ["MIT", "BSD-3-Clause", "Apache-2.0", "GPL-3.0-or-later", "LGPL-2.1-or-later",
            "MPL-2.0", "BSD-2-Clause", "PSF-2.0", "ISC", "Unlicense", "LicenseRef-Proprietary",
            "GPL-2.0-only", "Zlib"]  # fmt: skip

NGINX_CONF = """\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
{user}
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    etag on;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    types {{ application/json json; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


def synthesize(n: int, seed: int = 7) -> dict[str, Any]:
    """A linux-64 repodata.json with ``n`` records shaped like conda-forge's: names with many
    versions and builds, dependencies, licences, digests, sizes, millisecond timestamps."""
    rnd = random.Random(seed)
    names = [f"pkg-{i:05d}" if i % 3 else f"lib{i:05d}" for i in range(max(1, n // 25))]
    now_ms = int(time.time() * 1000)
    packages: dict[str, Any] = {}
    conda: dict[str, Any] = {}
    for i in range(n):
        name = names[i % len(names)]
        k = i // len(names)
        version = f"{k // 5}.{k % 5}.{rnd.randrange(20)}"
        build = f"py{rnd.choice((39, 310, 311, 312))}h{rnd.getrandbits(32):08x}_{k % 3}"
        deps = [f"{rnd.choice(names)} >={rnd.randrange(3)}.{rnd.randrange(9)}" for _ in range(4)]
        rec = {
            "build": build,
            "build_number": k % 3,
            "depends": ["python >=3.9,<3.13.0a0", "libgcc-ng >=12", *deps],
            "license": rnd.choice(LICENSES),
            "license_family": "MIT",
            "md5": hashlib.md5(f"{i}".encode(), usedforsecurity=False).hexdigest(),
            "name": name,
            "sha256": hashlib.sha256(f"{i}".encode()).hexdigest(),
            "size": rnd.randrange(10_000, 50_000_000),
            "subdir": "linux-64",
            "timestamp": now_ms - rnd.randrange(0, 4 * 365 * 86400 * 1000),
            "version": version,
        }
        if i % 7 == 0:
            rec["constrains"] = [f"{rnd.choice(names)} >=1.0"]
        filename = f"{name}-{version}-{build}"
        if i % 2:
            conda[filename + ".conda"] = rec
        else:
            packages[filename + ".tar.bz2"] = rec
    return {
        "info": {"subdir": "linux-64"},
        "packages": packages,
        "packages.conda": conda,
        "removed": [],
        "repodata_version": 1,
    }


ORJSON_PEER = r"""
import orjson, resource, sys, time
raw = open(sys.argv[1], "rb").read()
t0 = time.process_time()  # CPU time, as the stage breakdown
data = orjson.loads(raw)
t1 = time.process_time()
out = orjson.dumps(data)
t2 = time.process_time()
print(orjson.dumps({"loads_s": t1 - t0, "dumps_s": t2 - t1, "bytes_out": len(out),
                    "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}).decode())
"""


STAGES = r"""
import asyncio, gzip, hashlib, sys, tempfile, time
from pathlib import Path
import orjson, zstandard
from stockade.core.conda import repodata as rd
from stockade.db.engine import upgrade
from stockade.services.runtime import Runtime
from stockade.settings import Settings

source, policy = Path(sys.argv[1]), Path(sys.argv[2]).read_text()

async def main():
    home = Path(tempfile.mkdtemp(prefix="stockade-conda-stages-"))
    db = f"sqlite:///{home / 's.db'}"
    upgrade(db)
    rt = Runtime(Settings.load(home=home, database_url=db))
    out = {}
    try:
        await rt.conda.create_channel("cf", mirror="http://127.0.0.1:9/", subdirs=["linux-64"])
        await rt.policies.set("cf", policy, "bench")
        info = await rt.indexes.get("cf")
        raw = source.read_bytes()
        clock = time.process_time
        t = clock(); data = orjson.loads(raw); out["parse_s"] = clock() - t
        t = clock()
        keep = await rt.conda.policy.keep(info, "linux-64", data)
        for key in rd.RECORD_KEYS:
            data[key] = {fn: r for fn, r in data[key].items() if keep is None or keep(fn, r)}
        out["policy_s"] = clock() - t
        t = clock(); body = orjson.dumps(data); out["serialize_s"] = clock() - t
        t = clock(); zstandard.ZstdCompressor(level=rd.ZST_LEVEL).compress(body)
        out["zstd_s"] = clock() - t
        t = clock(); gzip.compress(body, 6, mtime=0); out["gzip_s"] = clock() - t
        t = clock()
        rd.write_shards(data, subdir="linux-64", put_blob=lambda b: hashlib.sha256(b).hexdigest())
        out["shards_s"] = clock() - t
        out["kept"] = sum(len(data[k]) for k in rd.RECORD_KEYS)
    finally:
        await rt.close()
    print(orjson.dumps(out).decode())

asyncio.run(main())
"""


def stages(source: Path, policy: Path) -> dict[str, Any]:
    """Where the cold time goes, in a fresh process, by CPU time: parse, policy (facts and a
    decision per record), serialize the filtered JSON, then the extra forms (zstd, gzip,
    shards). parse + policy + serialize is what the issue's target compares with orjson."""
    r = subprocess.run(
        [sys.executable, "-c", STAGES, str(source), str(policy)],
        capture_output=True, text=True, timeout=1800, check=False, cwd=ROOT,
    )  # fmt: skip
    if r.returncode:
        raise SystemExit(f"stage breakdown failed: {r.stderr[-2000:]}")
    got: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return got


def orjson_peer(path: Path, runs: int) -> dict[str, Any]:
    got = []
    for _ in range(runs):
        r = subprocess.run([str(PYTHON), "-c", ORJSON_PEER, str(path)], capture_output=True,
                           text=True, check=True)  # fmt: skip
        got.append(json.loads(r.stdout))
    loads = statistics.median(g["loads_s"] for g in got)
    dumps = statistics.median(g["dumps_s"] for g in got)
    return {
        "runs": got,
        "loads_s": loads,
        "dumps_s": dumps,
        "both_s": statistics.median(g["loads_s"] + g["dumps_s"] for g in got),
        "maxrss_kib": max(g["maxrss_kib"] for g in got),
    }


def start_nginx(prefix: Path, root: Path) -> tuple[Any, int]:
    (prefix / "tmp").mkdir(parents=True, exist_ok=True)
    port = free_port()
    user = "user root;" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, root=root, user=user))
    argv = [tool("nginx"), "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    proc = spawn("conda-nginx", [*argv, "-g", "daemon off;"], clean_env())
    wait_http(f"http://127.0.0.1:{port}/", proc, timeout=15)
    return proc, port


def get(url: str, headers: dict[str, str]) -> tuple[float, int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, headers=headers)
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            body = resp.read()
            status = resp.status
            hdrs = dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        body, status, hdrs = exc.read(), exc.code, dict(exc.headers.items())
    return time.perf_counter() - t0, status, body, hdrs


def hwm_kib(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) summed over the server and its children."""
    hwm = rss = 0
    for p in [pid, *_descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm += int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
        except OSError:
            continue
    return hwm, rss


def sequential(url: str, headers: dict[str, str], n: int) -> float:
    times = []
    for _ in range(n):
        dt, status, _body, _h = get(url, headers)
        assert status == 200, status
        times.append(dt)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--runs", type=int, default=3, help="orjson peer runs (median)")
    args = ap.parse_args(argv)
    res: dict[str, Any] = {"records": args.records, "started": datetime.now(UTC).isoformat()}
    tmp = Path(tempfile.mkdtemp(prefix="stockade-conda-bench-"))
    try:
        return _run(args, tmp, res)
    finally:
        stop_all()


def _run(args: argparse.Namespace, tmp: Path, res: dict[str, Any]) -> int:
    up = tmp / "upstream"
    (up / "linux-64").mkdir(parents=True)
    (up / "noarch").mkdir()
    t0 = time.perf_counter()
    data = synthesize(args.records)
    import orjson

    raw = orjson.dumps(data)
    del data
    source = up / "linux-64" / "repodata.json"
    source.write_bytes(raw)
    (up / "noarch" / "repodata.json").write_text('{"info":{"subdir":"noarch"},"packages":{}}')
    res["upstream_bytes"] = len(raw)
    del raw
    console.print(f"synthesized {args.records:,} records, {res['upstream_bytes'] / 1e6:.1f} MB "
                  f"({time.perf_counter() - t0:.1f} s)")  # fmt: skip

    console.print("peer: orjson loads + dumps of the unfiltered file …")
    res["orjson"] = orjson_peer(source, args.runs)

    (tmp / "policy.toml").write_text(POLICY)
    console.print("stages: parse, policy, serialize, zstd, gzip, shards (CPU time, in-process) …")
    res["stages"] = stages(source, tmp / "policy.toml")

    _ng, ng_port = start_nginx(tmp / "nginx", up)
    upstream_url = f"http://127.0.0.1:{ng_port}/"

    home = tmp / "home"
    env = clean_env(STOCKADE_HOME=str(home))
    token = ""
    for step in (
        ["init", "--no-default-indexes"],
        ["conda", "channel", "create", "cf", "--mirror", upstream_url, "--subdirs", "linux-64"],
        ["token", "create", "--index", "cf", "--scope", "read"],
    ):
        r = run_cmd([str(STOCKADE), *step], env, timeout=120)
        if r.returncode:
            raise SystemExit(f"stockade {' '.join(step)} failed: {r.stderr or r.stdout}")
        token = r.stdout.strip().splitlines()[-1].strip()
    r = run_cmd([str(STOCKADE), "policy", "set", "cf", "--file", str(tmp / "policy.toml")], env, 60)
    assert r.returncode == 0, r.stderr
    ready = tmp / "stockade.port"
    proc = spawn(
        "conda-stockade",
        [str(STOCKADE), "serve", "--host", "127.0.0.1", "--port", "0", "--workers", "1"],
        {**env, "STOCKADE_READY_FILE": str(ready)},
    )
    deadline = time.monotonic() + 60
    while not ready.exists():
        if not proc.alive() or time.monotonic() > deadline:
            raise SystemExit(f"stockade serve did not start: {proc.log_tail(8)}")
        time.sleep(0.05)
    port = int(ready.read_text())
    wait_http(f"http://127.0.0.1:{port}/health", proc)
    auth = {"Authorization": basic("__token__", token)}
    base = f"http://127.0.0.1:{port}/conda/cf/linux-64"

    hwm0, rss0 = hwm_kib(proc.pid)
    dt, status, body, hdrs = get(f"{base}/repodata.json", auth)
    assert status == 200, (status, body[:300])
    hwm1, rss1 = hwm_kib(proc.pid)
    served = orjson.loads(body)
    kept = len(served["packages"]) + len(served["packages.conda"])
    res["stockade"] = {
        "cold_s": dt,
        "served_bytes": len(body),
        "records_kept": kept,
        "hwm_before_kib": hwm0,
        "rss_before_kib": rss0,
        "hwm_after_kib": hwm1,
        "rss_after_kib": rss1,
    }
    del served
    filtered_root = tmp / "static"
    (filtered_root / "linux-64").mkdir(parents=True)
    (filtered_root / "linux-64" / "repodata.json").write_bytes(body)
    etag = hdrs.get("ETag") or hdrs.get("etag") or ""
    del body

    st = res["stockade"]
    st["warm_s"] = sequential(f"{base}/repodata.json", auth, 5)
    t_304 = []
    for _ in range(20):
        d, s304, _b, _h = get(f"{base}/repodata.json", {**auth, "If-None-Match": etag})
        assert s304 == 304, s304
        t_304.append(d)
    st["revalidate_304_s"] = statistics.median(t_304)
    d, s, idx, _h = get(f"{base}/repodata_shards.msgpack.zst", auth)
    assert s == 200, s
    st["shard_index_s"], st["shard_index_bytes"] = d, len(idx)
    import msgpack
    import zstandard

    shards = msgpack.unpackb(zstandard.ZstdDecompressor().decompressobj().decompress(idx))
    name = sorted(shards["shards"])[len(shards["shards"]) // 2]
    shard_url = f"{base}/shards/{shards['shards'][name].hex()}.msgpack.zst"
    d, s, sh, _h = get(shard_url, auth)
    assert s == 200, s
    st["shard_s"], st["shard_bytes"], st["shards"] = d, len(sh), len(shards["shards"])
    st["shard_warm_s"] = sequential(shard_url, auth, 20)
    st["hwm_end_kib"], st["rss_end_kib"] = hwm_kib(proc.pid)

    _ng2, static_port = start_nginx(tmp / "nginx-static", filtered_root)
    static_url = f"http://127.0.0.1:{static_port}/linux-64/repodata.json"
    res["nginx"] = {"warm_s": sequential(static_url, {}, 5)}

    console.print(f"wrk: {args.conns} connections, {args.duration:g} s each …")
    script_auth = lua_script(tmp / "auth.lua", auth)
    script_none = lua_script(tmp / "none.lua", {})
    st["wrk"] = wrk(f"{base}/repodata.json", script_auth, args.conns, args.duration)
    res["nginx"]["wrk"] = wrk(static_url, script_none, args.conns, args.duration)
    st["wrk_304"] = wrk(
        f"{base}/repodata.json",
        lua_script(tmp / "etag.lua", {**auth, "If-None-Match": etag}),
        args.conns,
        args.duration,
    )
    res["finished"] = datetime.now(UTC).isoformat()
    report(res)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"conda-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.write_text(json.dumps(res, indent=1))
    console.print(f"raw numbers: {out.relative_to(ROOT)}")
    return 0


def report(res: dict[str, Any]) -> None:
    st, oj, ng = res["stockade"], res["orjson"], res["nginx"]
    mib = 1024
    t = Table(title=f"conda repodata, {res['records']:,} records "
                    f"({res['upstream_bytes'] / 1e6:.0f} MB upstream)")  # fmt: skip
    t.add_column("what")
    t.add_column("Stockade", justify="right")
    t.add_column("orjson (peer)", justify="right")
    t.add_column("nginx (peer)", justify="right")
    t.add_row(
        "cold: fetch + parse + policy + write all forms",
        f"{st['cold_s']:.2f} s",
        f"{oj['both_s']:.2f} s (loads+dumps)",
        "-",
    )
    t.add_row("  ratio to orjson loads+dumps", f"{st['cold_s'] / oj['both_s']:.2f}x", "1x", "")
    t.add_row("orjson.dumps alone (unfiltered dict)", "-", f"{oj['dumps_s']:.2f} s", "-")
    t.add_row(
        "peak memory",
        f"+{(st['hwm_after_kib'] - st['hwm_before_kib']) / mib:.0f} MiB "
        f"(HWM {st['hwm_after_kib'] / mib:.0f} MiB)",
        f"{oj['maxrss_kib'] / mib:.0f} MiB",
        "-",
    )
    kept = f"{st['records_kept']:,} / {st['served_bytes'] / 1e6:.1f} MB"
    t.add_row("records served / bytes", kept, f"{res['records']:,}", "same bytes as Stockade")
    t.add_row("warm GET repodata.json (median of 5)", f"{st['warm_s'] * 1000:.0f} ms", "-",
              f"{ng['warm_s'] * 1000:.0f} ms")  # fmt: skip
    t.add_row(
        f"warm throughput (wrk, {st['wrk']['connections']} conns)",
        f"{st['wrk']['rps']:.1f} req/s (p50 {st['wrk']['p50_ms']:.0f} ms)",
        "-",
        f"{ng['wrk']['rps']:.1f} req/s (p50 {ng['wrk']['p50_ms']:.0f} ms)",
    )
    t.add_row("304 with If-None-Match (wrk)", f"{st['wrk_304']['rps']:.0f} req/s "
              f"(p50 {st['wrk_304']['p50_ms']:.1f} ms)", "-", "-")  # fmt: skip
    t.add_row("shard index (first GET)",
              f"{st['shard_index_s'] * 1000:.1f} ms, {st['shard_index_bytes'] / 1e3:.0f} kB, "
              f"{st['shards']:,} names", "-", "-")  # fmt: skip
    t.add_row("one shard (first / warm median)",
              f"{st['shard_s'] * 1000:.1f} / {st['shard_warm_s'] * 1000:.1f} ms, "
              f"{st['shard_bytes']} B", "-", "-")  # fmt: skip
    console.print(t)
    sg = res["stages"]
    s = Table(title="where the cold time goes (CPU seconds, one process, same records)")
    s.add_column("stage")
    s.add_column("Stockade", justify="right")
    s.add_column("orjson (peer)", justify="right")
    s.add_row("parse", f"{sg['parse_s']:.2f} s", f"{oj['loads_s']:.2f} s (loads)")
    s.add_row("policy: facts + a decision per record", f"{sg['policy_s']:.2f} s", "-")
    s.add_row("serialize the filtered JSON", f"{sg['serialize_s']:.2f} s", f"{oj['dumps_s']:.2f} s")
    filtered = sg["parse_s"] + sg["policy_s"] + sg["serialize_s"]
    s.add_row("= filtered repodata", f"{filtered:.2f} s", f"{oj['both_s']:.2f} s (loads+dumps)")
    s.add_row("zstd / gzip of it", f"{sg['zstd_s']:.2f} / {sg['gzip_s']:.2f} s", "-")
    s.add_row(f"shards ({sg['kept']:,} records)", f"{sg['shards_s']:.2f} s", "-")
    console.print(s)
    ratio = filtered / oj["both_s"]
    verdict = "PASS" if ratio <= 2 else "MISS"
    console.print(f"target: filtered repodata (parse + policy + serialize) within 2x of orjson "
                  f"loads+dumps: {verdict} ({ratio:.2f}x). The server's cold request "
                  f"({st['cold_s'] / oj['both_s']:.1f}x) also fetches from the upstream and "
                  "writes .zst, gzip and every shard")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())

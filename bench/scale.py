"""Scale-out benchmark: hot simple pages and file downloads with 1 and 2 server processes on
PostgreSQL, with and without nginx in front, and p99 latency during an invalidation storm.

Run ``.venv/bin/python bench/scale.py`` (needs wrk and nginx: apt-get install wrk nginx-light).
Everything runs on 127.0.0.1: a private PostgreSQL cluster, a local upstream built from real
wheels made here, Stockade, nginx. The peer is nginx serving the same page and file as
static files (what no application server can beat); it is measured in the same run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from tests.builders import build_wheel, write_simple_tree  # noqa: E402
from tests.cluster import Nginx, PgCluster, free_port, join_server  # noqa: E402
from tests.conftest import Server, make_server  # noqa: E402
from tests.upstream import Upstream  # noqa: E402

RESULTS = ROOT / "bench" / "results"
LUA = """\
wrk.method = "GET"
wrk.headers["Authorization"] = "{auth}"
wrk.headers["Accept"] = "text/html"
done = function(summary, latency, requests)
  io.write(string.format("BENCH_JSON {{\\"requests\\":%d,\\"duration_us\\":%d,\\"errors\\":%d," ..
    "\\"status\\":%d,\\"p50_us\\":%d,\\"p99_us\\":%d}}\\n", summary.requests, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50), latency:percentile(99)))
end
"""


def wrk(url: str, auth: str, conns: int, seconds: float, tmp: Path) -> dict[str, float]:
    script = tmp / "bench.lua"
    script.write_text(LUA.format(auth=auth))
    argv = ["wrk", "-t2", f"-c{conns}", f"-d{seconds:g}s", "--timeout", "5s", "-s", str(script)]
    res = subprocess.run([*argv, url], capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"^BENCH_JSON (\{.*\})$", res.stdout, re.MULTILINE)
    if res.returncode or not m:
        raise RuntimeError(f"wrk failed: {res.stderr or res.stdout}")
    raw = json.loads(m.group(1))
    secs = raw["duration_us"] / 1e6
    return {
        "rps": raw["requests"] / secs,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "errors": raw["errors"],
        "non_2xx": raw["status"],
    }


def build_upstream(tmp: Path) -> tuple[Upstream, str, Path]:
    """50 versions of a project (a page of real size) and a 1 MB wheel; (upstream, page
    project, wheel filename)."""
    dist = tmp / "dist"
    dist.mkdir()
    wheels = [build_wheel(dist, "hotpkg", f"1.{i}") for i in range(50)]
    blob = base64.b64encode(os.urandom(768 * 1024)).decode()
    big = build_wheel(dist, "hotpkg", "2.0", modules={"hotpkg/blob.py": f"B = '{blob}'\n"})
    wheels.append(big)
    write_simple_tree(tmp / "upstream", wheels)
    return Upstream(tmp / "upstream"), "hotpkg", big


def static_peer(tmp: Path, page: bytes, wheel: Path) -> tuple[subprocess.Popen[bytes], int]:
    root = tmp / "static"
    (root / "simple" / "hotpkg").mkdir(parents=True)
    (root / "simple" / "hotpkg" / "index.html").write_bytes(page)
    shutil.copy(wheel, root / wheel.name)
    port = free_port()
    conf = tmp / "static.conf"
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf.write_text(
        f"{user}worker_processes 2; pid {tmp}/static.pid; error_log {tmp}/static.err; "
        "daemon off;\nevents { worker_connections 4096; }\n"
        f"http {{ access_log off; sendfile on; client_body_temp_path {tmp}/b; "
        f"proxy_temp_path {tmp}/p; fastcgi_temp_path {tmp}/f; uwsgi_temp_path {tmp}/u; "
        f"scgi_temp_path {tmp}/s; server {{ listen 127.0.0.1:{port}; root {root}; }} }}\n"
    )
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(tmp)])
    time.sleep(0.5)
    return proc, port


def storm(
    srv: Server, kind: str, stop: threading.Event, per_second: float, counter: list[int]
) -> None:
    """Changes every process must see. ``tokens``: a token created and revoked (drops token
    lookups); ``all``: an index created and deleted (drops every cache of every process)."""
    with httpx.Client(base_url=srv.url, auth=("__token__", srv.admin_token), timeout=30) as c:
        while not stop.is_set():
            if kind == "tokens":
                made = c.post("/api/v1/tokens", json={"index": "up", "scope": "read"}).json()
                c.delete(f"/api/v1/tokens/{made['id']}")
            else:
                name = f"storm{counter[0]}"
                c.post("/api/v1/indexes", json={"name": name, "kind": "private"})
                c.delete(f"/api/v1/indexes/{name}")
            counter[0] += 1
            stop.wait(1 / per_second)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--storm-rate", type=float, default=10.0, help="changes per second")
    args = ap.parse_args()
    for prog in ("wrk", "nginx"):
        if shutil.which(prog) is None and not Path(f"/usr/sbin/{prog}").exists():
            print(f"{prog} is missing: apt-get install wrk nginx-light", file=sys.stderr)
            return 2
    tmp = Path(tempfile.mkdtemp(prefix="stockade-scale-"))
    pg = PgCluster()
    up, project, big_path = build_upstream(tmp)
    big = big_path.name
    rows: list[dict[str, Any]] = []
    running: list[Any] = []
    started = datetime.now(UTC)
    try:

        def stockade_shape(name: str, workers: int, front: bool) -> tuple[str, str, Server]:
            db = pg.new_database(name.replace(" ", "_").replace("+", "p"))
            home = tmp / name.replace(" ", "_")
            first = make_server(
                home / "a",
                db,
                workers=workers,
                accel_redirect="/_stockade_blobs/" if front else "",
                storage_url=f"file://{home / 'blobs'}",
            )
            running.append(first)
            first.cli("index", "create", "up", "--mirror", up.simple_url)
            token = first.token("up")
            base = first.url
            if front:
                second = join_server(
                    first,
                    home / "b",
                    accel_redirect="/_stockade_blobs/",
                    storage_url=f"file://{home / 'blobs'}",
                )
                running.append(second)
                nginx = Nginx(
                    home / "nginx", [s.url.split("://")[1] for s in (first, second)], accel=first
                )
                running.append(nginx)
                base = nginx.url
            auth = "Basic " + base64.b64encode(f"__token__:{token}".encode()).decode()
            with httpx.Client(headers={"Authorization": auth}, timeout=60) as c:
                for _ in range(2):  # fetch through, then from the cache / storage
                    assert c.get(f"{base}/pypi/up/simple/{project}/").status_code == 200
                    r = c.get(f"{base}/pypi/up/files/{project}/{big}")
                    assert r.status_code == 200, r.text
            return base, auth, first

        shapes = [
            ("1 process", 1, False),
            ("2 processes", 2, False),
            ("2 processes + nginx", 1, True),
        ]
        storm_target: tuple[str, str, Server] | None = None
        for name, workers, front in shapes:
            before = len(running)
            base, auth, first = stockade_shape(name, workers, front)
            page = wrk(f"{base}/pypi/up/simple/{project}/", auth, args.conns, args.duration, tmp)
            files = wrk(
                f"{base}/pypi/up/files/{project}/{big}", auth, args.conns, args.duration, tmp
            )
            rows.append({"shape": name, "page": page, "file": files})
            print(
                f"{name:22} page {page['rps']:8.0f} req/s p99 {page['p99_ms']:6.1f} ms | "
                f"file {files['rps']:6.0f} req/s p99 {files['p99_ms']:6.1f} ms",
                flush=True,
            )
            mine = running[before:]
            if name == "2 processes":
                storm_target = (base, auth, first)
            else:  # free the cores for the next shape
                for p in reversed(mine):
                    p.stop() if isinstance(p, Server) else p.close()
                    running.remove(p)
        page_html = httpx.get(f"{up.simple_url}{project}/", headers={"Accept": "text/html"}).content
        proc, port = static_peer(tmp, page_html, big_path)
        try:
            auth = "Basic " + base64.b64encode(b"x:y").decode()
            page = wrk(
                f"http://127.0.0.1:{port}/simple/{project}/", auth, args.conns, args.duration, tmp
            )
            files = wrk(f"http://127.0.0.1:{port}/{big}", auth, args.conns, args.duration, tmp)
            rows.append({"shape": "peer: nginx static", "page": page, "file": files})
        finally:
            proc.terminate()
            proc.wait()

        # p99 of the hot page while configuration changes many times a second
        assert storm_target is not None
        base, auth, first = storm_target
        quiet = wrk(f"{base}/pypi/up/simple/{project}/", auth, args.conns, args.duration, tmp)
        storm_row: dict[str, Any] = {"quiet": quiet}
        for kind in ("tokens", "all"):
            stop, count = threading.Event(), [0]
            t = threading.Thread(target=storm, args=(first, kind, stop, args.storm_rate, count))
            t.start()
            try:
                got = wrk(f"{base}/pypi/up/simple/{project}/", auth, args.conns, args.duration, tmp)
            finally:
                stop.set()
                t.join()
            storm_row[kind] = {**got, "changes": count[0], "per_s": count[0] / args.duration}
    finally:
        for p in reversed(running):
            p.stop() if isinstance(p, Server) else p.close()
        up.close()
        pg.close()

    print()
    print(
        f"Scale-out benchmark, {started:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
        f"wrk -t2 -c{args.conns} -d{args.duration:g}s, load {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'shape':24}{'page req/s':>12}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'1 MB file req/s':>17}{'p99 ms':>9}{'errors':>8}"
    )
    for r in rows:
        pg_, f = r["page"], r["file"]
        errs = pg_["errors"] + pg_["non_2xx"] + f["errors"] + f["non_2xx"]
        print(
            f"{r['shape']:24}{pg_['rps']:12.0f}{pg_['p50_ms']:9.1f}{pg_['p99_ms']:9.1f}"
            f"{f['rps']:17.0f}{f['p99_ms']:9.1f}{errs:8d}"
        )
    q = storm_row["quiet"]
    print("\nHot page during an invalidation storm (2 processes):")
    print(
        f"  {'quiet':34}{q['rps']:8.0f} req/s  p50 {q['p50_ms']:6.1f} ms  p99 {q['p99_ms']:7.1f} ms"
    )
    for kind, label in (("tokens", "token revocations"), ("all", "full invalidations")):
        r = storm_row[kind]
        what = f"{label} ({r['per_s']:.1f}/s)"
        print(
            f"  {what:34}{r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.1f} ms  p99 "
            f"{r['p99_ms']:7.1f} ms  ({r['errors'] + r['non_2xx']} errors)"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"scale-{started:%Y%m%dT%H%M%S}.json"
    out.write_text(
        json.dumps({"rows": rows, "storm": storm_row, "load": os.getloadavg()}, indent=2)
    )
    print(f"\nraw numbers: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

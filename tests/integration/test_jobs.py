"""Background jobs on both queues: a crashing job is retried, then shown failed with its error;
scans run on whichever worker takes them (PostgreSQL) or in the server itself (SQLite)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from stockade.services.health import migration_heads
from tests.builders import build_wheel
from tests.conftest import (
    STOCKADE,
    Server,
    client_env,
    make_server,
)

DEAD_FEED = "http://127.0.0.1:9/osv-all.zip"  # nothing listens on the discard port


def jobs(srv: Server, *args: str) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = json.loads(srv.cli("jobs", "list", "--json", *args).stdout)
    return got


def until(what: Callable[[], Any], timeout: float = 60, step: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(step)


def upload(srv: Server, tmp_path: Path, name: str) -> str:
    wheel = build_wheel(tmp_path, name, "1.0")
    with srv.http(srv.admin_token) as c:
        r = c.post(
            "/pypi/internal/",
            data={":action": "file_upload"},
            files={"content": (wheel.name, wheel.read_bytes())},
        )
        assert r.status_code == 200, r.text
    return hashlib.sha256(wheel.read_bytes()).hexdigest()


def test_a_crashing_job_is_retried_then_listed_failed_with_its_error(
    tmp_path: Path, db_url: str
) -> None:
    srv = make_server(tmp_path / "home", db_url, job_retries=2, job_retry_wait=0.2)
    try:
        engine = "inprocess" if db_url.startswith("sqlite") else "procrastinate"
        queued = srv.cli("vulndb", "sync", "--background", "--url", DEAD_FEED, "--json")
        job_id = json.loads(queued.stdout)["job"]
        # SQLite: the command ran it in-process; PostgreSQL: the server's worker runs it
        failed = until(lambda: jobs(srv, "--status", "failed"))
        assert [j["id"] for j in failed] == [job_id]
        job = failed[0]
        assert job["task"] == "vulndb.sync" and job["engine"] == engine
        assert job["attempts"] == 3  # the first and two retries
        assert job["args"] == {"url": DEAD_FEED}
        assert "UpstreamUnavailable: cannot download" in job["error"]
        assert DEAD_FEED in job["error"]
        assert jobs(srv, "--status", "queued") == []
        with srv.http(srv.admin_token) as c:
            api = c.get("/api/v1/jobs", params={"status": "failed"})
            assert api.status_code == 200
            assert [j["id"] for j in api.json()] == [job_id]
            assert c.get("/api/v1/jobs", params={"status": "bogus"}).status_code == 400
        with srv.http(srv.token("*", "read")) as c:
            assert c.get("/api/v1/jobs").status_code == 403
        # the table form shows the error too
        table = srv.cli("jobs", "list", "--status", "failed").stdout
        assert "vulndb.sync" in table and "UpstreamUnavailable" in table
        # a retry is one more attempt; still failing, it says so and exits 1
        again = srv.cli("jobs", "retry", str(job_id), "--json", check=False)
        assert again.returncode == 1, again.stderr
        assert json.loads(again.stdout)["status"] == "failed"
        missing = srv.cli("jobs", "retry", "999999", check=False)
        assert missing.returncode != 0 and "no job 999999" in missing.stderr
        audit = json.loads(srv.cli("audit", "list", "--action", "vulndb.sync", "--json").stdout)
        assert len(audit) >= 4 and all(e["outcome"] == "error" for e in audit)
    finally:
        srv.stop()


def test_a_scan_queued_by_a_server_runs_on_a_separate_worker(tmp_path: Path, pg_url: str) -> None:
    """Server A runs no worker: its upload's scan waits in PostgreSQL until `stockade worker`
    (another process) takes it; A then serves the verdict it never computed."""
    srv = make_server(tmp_path / "home", pg_url, job_worker="false")
    worker: subprocess.Popen[bytes] | None = None
    try:
        srv.cli("index", "create", "internal", "--private")
        sha = upload(srv, tmp_path, "widget")
        queued = until(lambda: jobs(srv, "--task", "scan"))
        assert queued[0]["status"] == "queued"
        assert queued[0]["args"] == {"sha256": sha, "filename": "widget-1.0-py3-none-any.whl"}
        with srv.http(srv.admin_token) as c:
            assert c.get(f"/api/v1/scans/{sha}").status_code == 404
        log = (tmp_path / "worker.log").open("ab")
        worker = subprocess.Popen([STOCKADE, "worker"], env=srv.env, stdout=log, stderr=log)
        done = until(lambda: jobs(srv, "--task", "scan", "--status", "done"))
        assert [j["id"] for j in done] == [queued[0]["id"]] and done[0]["attempts"] == 1
        with srv.http(srv.admin_token) as c:
            report = c.get(f"/api/v1/scans/{sha}")
            assert report.status_code == 200, report.text
            assert report.json()["verdict"] == "clean"
        # a second server process on the same database sees it as well, and its own worker
        # takes the next upload's scan
        env = dict(srv.env)
        del env["STOCKADE_JOB_WORKER"]
        other = Server(home=srv.home, db_url=pg_url, env=env)
        worker.terminate()
        worker.wait(15)
        worker = None
        other.admin_token = srv.admin_token
        other.start()
        try:
            sha2 = upload(srv, tmp_path, "gadget")
            until(lambda: len(jobs(srv, "--task", "scan", "--status", "done")) == 2)
            with other.http(srv.admin_token) as c:
                assert c.get(f"/api/v1/scans/{sha}").json()["verdict"] == "clean"
                assert c.get(f"/api/v1/scans/{sha2}").json()["verdict"] == "clean"
        finally:
            other.stop()
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(15)
        srv.stop()


def test_embedded_runs_scans_and_syncs_in_the_server(tmp_path: Path) -> None:
    home = tmp_path / "home"
    srv = make_server(
        home,
        f"sqlite:///{home / 'stockade.db'}",
        vulndb_url=DEAD_FEED,
        vulndb_sync_interval=3600,
        job_retries=0,
    )
    try:
        srv.cli("index", "create", "internal", "--private")
        sha = upload(srv, tmp_path, "widget")
        done = until(lambda: jobs(srv, "--task", "scan", "--status", "done"))
        assert done[0]["engine"] == "inprocess" and done[0]["args"]["sha256"] == sha
        with srv.http(srv.admin_token) as c:
            assert c.get(f"/api/v1/scans/{sha}").json()["verdict"] == "clean"
        # the server's own sync loop ran the feed sync as a job (and it failed visibly)
        synced = until(lambda: jobs(srv, "--task", "vulndb.sync", "--status", "failed"))
        assert "cannot download" in synced[0]["error"]
        res = srv.cli("worker", check=False)
        assert res.returncode != 0 and "in-process job queue" in res.stderr
    finally:
        srv.stop()


def test_concurrent_upgrades_apply_the_queue_schema_once(pg_url: str, tmp_path: Path) -> None:
    env = client_env(STOCKADE_HOME=str(tmp_path / "h"), STOCKADE_DATABASE_URL=pg_url)
    procs = [
        subprocess.Popen([STOCKADE, "db", "upgrade"], env=env, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    for p in procs:
        _, stderr = p.communicate(timeout=120)
        assert p.returncode == 0, stderr.decode()
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain) as conn:
        assert conn.execute("SELECT to_regclass('procrastinate_jobs')").fetchone() != (None,)
        version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
        # one row, at the newest migration (each of three racing upgrades applied it once)
        assert version == [(head,) for head in migration_heads()]

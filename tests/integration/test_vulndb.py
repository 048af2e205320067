"""The vulnerability database on SQLite and PostgreSQL: import, query, curation, scan."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import subprocess
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stockade.db.engine import upgrade
from stockade.services.runtime import Runtime
from stockade.settings import Settings
from tests.conftest import STOCKADE, client_env

PYPA = Path(__file__).resolve().parents[3] / "shared" / "data" / "pypa-advisory-db"


def record(ident: str, package: str, events: list[dict[str, str]], **extra: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": ident,
        "modified": "2024-01-01T00:00:00Z",
        "published": "2023-12-01T00:00:00Z",
        "summary": f"{ident} summary",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": package},
                "ranges": [{"type": "ECOSYSTEM", "events": events}],
            }
        ],
    }
    rec.update(extra)
    return rec


def write_feed(root: Path, records: list[dict[str, Any]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for rec in records:
        (root / f"{rec['id']}.json").write_text(json.dumps(rec))
    return root


FEED = [
    record(
        "TEST-1",
        "Alpha_Pkg",
        [{"introduced": "0"}, {"fixed": "1.5"}],
        aliases=["CVE-2024-0001", "GHSA-aaaa-bbbb-cccc"],
        severity=[{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
    ),
    record("TEST-2", "alpha-pkg", [{"introduced": "2.0"}, {"last_affected": "2.3"}]),
    record(
        "TEST-3",
        "beta",
        [{"introduced": "1.0"}, {"fixed": "1.1"}, {"introduced": "3.0"}, {"fixed": "3.2"}],
    ),
    record("TEST-4", "beta", [{"introduced": "0"}], withdrawn="2024-02-01T00:00:00Z"),
]


def home_cli(tmp_path: Path, timeout: int = 300) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``stockade`` in an initialized home of its own."""
    env = client_env(STOCKADE_HOME=str(tmp_path / "home"))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [STOCKADE, *args], env=env, capture_output=True, text=True, timeout=timeout
        )

    assert cli("init", "--no-default-indexes").returncode == 0
    return cli


@contextlib.contextmanager
def served_export(tmp_path: Path) -> Iterator[str]:
    """FEED as an OSV export zip on 127.0.0.1; yields its URL."""
    import http.server
    import threading

    export = tmp_path / "export"
    export.mkdir()
    with zipfile.ZipFile(export / "all.zip", "w") as zf:
        for rec in FEED:
            zf.writestr(f"{rec['id']}.json", json.dumps(rec))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(export))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/all.zip"
    finally:
        httpd.shutdown()


def runtime(tmp_path: Path, db_url: str) -> Runtime:
    upgrade(db_url)
    return Runtime(Settings.load(home=tmp_path / "home", database_url=db_url))


def test_import_query_curate_round_trip(tmp_path: Path, db_url: str) -> None:
    feed = write_feed(tmp_path / "feed", FEED)
    (feed / "broken.json").write_text("{not json")
    (feed / "no-id.json").write_text(json.dumps({"affected": []}))
    (feed / "LICENSE").write_text("not a record")

    async def scenario() -> None:
        rt = runtime(tmp_path, db_url)
        try:
            rep = await rt.vulns.import_path(feed)
            assert (rep.added, rep.updated, rep.unchanged, rep.withdrawn) == (4, 0, 0, 1)
            assert sorted(s for s, _ in rep.skipped) == ["broken.json", "no-id.json"]
            again = await rt.vulns.import_path(feed)
            assert (again.added, again.updated, again.unchanged) == (0, 0, 4)

            async def ids(name: str, version: str) -> list[str]:
                return [f.id for f in await rt.vulns.query("PyPI", name, version)]

            assert await ids("alpha-pkg", "1.0") == ["TEST-1"]
            assert await ids("Alpha.Pkg", "1.4.9") == ["TEST-1"]  # PEP 503 name
            assert await ids("alpha-pkg", "1.5") == []
            assert await ids("alpha-pkg", "2.3") == ["TEST-2"]  # last_affected is inclusive
            assert await ids("alpha-pkg", "2.3.1") == []
            assert await ids("beta", "1.0.5") == ["TEST-3"]
            assert await ids("beta", "2.0") == []  # between the two ranges
            assert await ids("beta", "3.1") == ["TEST-3"]
            assert await ids("beta", "0.1") == []  # TEST-4 is withdrawn
            [f] = await rt.vulns.query("PyPI", "alpha-pkg", "1.0")
            assert f.aliases == ("CVE-2024-0001", "GHSA-aaaa-bbbb-cccc")
            assert (f.severity, f.score, f.fixed_versions) == ("critical", 9.8, ("1.5",))
            assert (f.status, f.decided_by) == ("affected", "feed")
            assert (await rt.vulns.show("CVE-2024-0001"))["id"] == "TEST-1"  # alias lookup

            # a changed record updates; the change is visible at once
            changed = [
                dict(
                    FEED[0],
                    modified="2024-03-01T00:00:00Z",
                    affected=[
                        {
                            "package": {"ecosystem": "PyPI", "name": "alpha-pkg"},
                            "ranges": [
                                {
                                    "type": "ECOSYSTEM",
                                    "events": [{"introduced": "0"}, {"fixed": "1.2"}],
                                }
                            ],
                        }
                    ],
                )
            ]
            write_feed(feed, changed)
            rep = await rt.vulns.import_path(feed)
            assert (rep.updated, rep.unchanged) == (1, 3)
            assert await ids("alpha-pkg", "1.3") == []

            # curation flips the verdict for the covered versions only, and keeps history
            c = await rt.vulns.curate(
                "TEST-3",
                package="beta",
                versions=">=3.0",
                status="not_affected",
                justification="vulnerable_code_not_in_execute_path",
                reason="we never call the parser",
                author="alice",
            )
            [f3] = await rt.vulns.query("PyPI", "beta", "3.1")
            assert (f3.status, f3.decided_by, f3.curation) == ("not_affected", "curation", c)
            assert not f3.counts
            [f1] = await rt.vulns.query("PyPI", "beta", "1.0.5")
            assert (f1.status, f1.decided_by) == ("affected", "feed")
            await rt.vulns.curate(
                "TEST-3", package="beta", severity="low", reason="internal only", author="bob"
            )
            [f3] = await rt.vulns.query("PyPI", "beta", "3.1")
            assert f3.severity == "low"
            await rt.vulns.curate("TEST-3", package="beta", status="feed", author="carol")
            [f3] = await rt.vulns.query("PyPI", "beta", "3.1")
            assert (f3.status, f3.decided_by) == ("affected", "feed")
            hist = await rt.vulns.history("TEST-3")
            assert [h.author for h in hist] == ["alice", "bob", "carol"]
            with pytest.raises(Exception, match="justification"):
                await rt.vulns.curate("TEST-3", package="beta", status="not_affected")
            with pytest.raises(Exception, match="does not name"):
                await rt.vulns.curate("TEST-3", package="gamma", status="affected")

            # many packages at once: one batch of indexed queries
            many = await rt.vulns.query_many(
                [("PyPI", f"pkg-{i}", "1.0") for i in range(1000)] + [("PyPI", "beta", "1.0.5")]
            )
            assert sum(len(v) for v in many.values()) == 1
        finally:
            await rt.close()

    asyncio.run(scenario())


def test_zip_import_and_local_advisories(tmp_path: Path, db_url: str) -> None:
    zpath = tmp_path / "all.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for rec in FEED:
            zf.writestr(f"{rec['id']}.json", json.dumps(rec))
    local = write_feed(
        tmp_path / "local",
        [record("ACME-2026-1", "acme-internal", [{"introduced": "0"}, {"fixed": "2.0"}])],
    )
    clash = write_feed(tmp_path / "clash", [record("TEST-1", "x", [{"introduced": "0"}])])

    async def scenario() -> None:
        rt = runtime(tmp_path, db_url)
        try:
            assert (await rt.vulns.import_path(zpath)).added == 4
            assert await rt.vulns.add_local(local) == ["ACME-2026-1"]
            [f] = await rt.vulns.query("PyPI", "acme-internal", "1.0")
            assert f.id == "ACME-2026-1"
            with pytest.raises(Exception, match="feed advisory"):
                await rt.vulns.add_local(clash)
        finally:
            await rt.close()

    asyncio.run(scenario())


@pytest.mark.skipif(not PYPA.is_dir(), reason="shared PyPA advisory database not present")
def test_real_database_and_scan_of_an_old_requirements_file(tmp_path: Path) -> None:
    """The issue's 'done when': import the PyPA database, scan an old requirements file, curate."""
    cli = home_cli(tmp_path, 300)
    imp = cli("vulndb", "import", str(PYPA), "--json")
    assert imp.returncode == 0, imp.stderr
    report = json.loads(imp.stdout)
    assert report["added"] > 2500
    again = json.loads(cli("vulndb", "import", str(PYPA), "--json").stdout)
    assert again["added"] == again["updated"] == 0
    req = tmp_path / "requirements.txt"
    req.write_text("jinja2==2.10\nrequests==2.19.0\nurllib3==1.24.1\nflask>=1.0\n")
    res = cli("scan", str(req), "--json")
    assert res.returncode == 1, res.stderr
    data = json.loads(res.stdout)
    ids = {(f["package"], f["id"]) for f in data["findings"]}
    assert ("jinja2", "PYSEC-2019-217") in ids
    assert ("requests", "PYSEC-2018-28") in ids
    assert [u["package"] for u in data["unpinned"]] == ["flask"]
    cur = cli(
        "vuln",
        "curate",
        "PYSEC-2019-217",
        "--package",
        "jinja2",
        "--status",
        "not_affected",
        "--justification",
        "vulnerable_code_not_in_execute_path",
        "--reason",
        "no sandboxed templates",
        "--author",
        "sec-team",
    )
    assert cur.returncode == 0, cur.stderr
    data = json.loads(cli("scan", str(req), "--json").stdout)
    jinja = next(f for f in data["findings"] if f["id"] == "PYSEC-2019-217")
    assert (jinja["status"], jinja["decided_by"]) == ("not_affected", "curation")
    assert jinja["curation"]["reason"] == "no sandboxed templates"
    table = cli("scan", str(req))
    assert "no sandboxed templates" in table.stdout
    clean = tmp_path / "clean.txt"
    clean.write_text("jinja2==3.1.4\n")
    assert cli("scan", str(clean)).returncode == 0
    assert cli("scan", str(tmp_path / "missing.txt")).returncode == 2


def test_vuln_api_and_sync_from_a_local_export(server: Any, tmp_path: Path) -> None:
    """REST API on both databases; `vulndb sync` fetching a zip served from 127.0.0.1."""
    import httpx

    with served_export(tmp_path) as url:
        synced = json.loads(server.cli("vulndb", "sync", "--url", url, "--json").stdout)
        assert synced["added"] == 4
        bad = server.cli("vulndb", "sync", "--url", url + ".missing", check=False)
        assert bad.returncode == 1
        assert "404" in bad.stderr
    server.cli("index", "create", "p", "--private")
    reader = server.token("p")
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {reader}"}) as c:
        assert c.get("/api/v1/vulns", params={"package": "beta"}).status_code == 200
        assert c.get("/api/v1/vulns/GHSA-aaaa-bbbb-cccc").json()["id"] == "TEST-1"
        q = c.get("/api/v1/vulns/query", params={"name": "alpha-pkg", "version": "1.0"}).json()
        assert [f["id"] for f in q] == ["TEST-1"]
        denied = c.post(
            "/api/v1/vulns/TEST-1/curations", json={"package": "alpha-pkg", "status": "fixed"}
        )
        assert denied.status_code == 403
        scan = c.post(
            "/api/v1/scan",
            params={"filename": "requirements.txt"},
            content=b"alpha-pkg==1.0\nbeta==3.1\nunpinned-thing>=1\n",
        ).json()
        assert sorted(f["id"] for f in scan["findings"]) == ["TEST-1", "TEST-3"]
        assert [u["package"] for u in scan["unpinned"]] == ["unpinned-thing"]
        sneaky = c.post("/api/v1/scan", content=b"-r /etc/passwd\n")
        assert sneaky.status_code == 400
        assert "include" in sneaky.json()["error"]
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"}
    ) as c:
        cur = c.post(
            "/api/v1/vulns/TEST-1/curations",
            json={
                "package": "alpha-pkg",
                "status": "not_affected",
                "justification": "component_not_present",
                "reason": "not shipped",
            },
        )
        assert cur.status_code == 201, cur.text
        q = c.get("/api/v1/vulns/query", params={"name": "alpha-pkg", "version": "1.0"}).json()
        assert (q[0]["status"], q[0]["decided_by"]) == ("not_affected", "curation")
        bad = c.post(
            "/api/v1/vulns/TEST-1/curations",
            json={"package": "alpha-pkg", "status": "not_affected"},
        )
        assert bad.status_code == 400


LOCKS = Path(__file__).resolve().parents[1] / "unit" / "lockfiles"


def test_every_lock_format_of_one_environment_gives_the_same_findings(
    tmp_path: Path, db_url: str
) -> None:
    from stockade.core.lockfiles import read_inventory

    feed = write_feed(
        tmp_path / "feed",
        [
            record("TEST-J", "jinja2", [{"introduced": "0"}, {"fixed": "2.10.1"}]),
            record("TEST-U", "urllib3", [{"introduced": "2.0.0"}, {"fixed": "2.0.8"}]),
            record("TEST-C", "certifi", [{"introduced": "0"}, {"fixed": "2022.12.7"}]),  # not hit
            {
                "id": "TEST-O",
                "modified": "2024-01-01T00:00:00Z",
                "affected": [
                    {
                        "package": {"ecosystem": "conda", "name": "openssl"},
                        "ranges": [
                            {
                                "type": "ECOSYSTEM",
                                "events": [{"introduced": "3.1.0"}, {"fixed": "3.1.5"}],
                            }
                        ],
                    }
                ],
            },
        ],
    )
    # poetry-1.1.lock exercises the old hash layout with a smaller environment of its own
    files = sorted(p for p in LOCKS.iterdir() if p.is_file() and p.name != "poetry-1.1.lock")
    assert len(files) >= 7

    async def scenario() -> None:
        rt = runtime(tmp_path, db_url)
        try:
            await rt.vulns.import_path(feed)
            python_findings = {}
            for f in files:
                inv = read_inventory(f)
                found = await rt.vulns.query_many(
                    (p.ecosystem, p.name, p.version or "") for p in inv.pins
                )
                python_findings[f.name] = sorted(
                    (x.package, x.id) for xs in found.values() for x in xs if x.id != "TEST-O"
                )
                if any(p.name == "openssl" and p.ecosystem == "conda" for p in inv.pins):
                    ids = [x.id for xs in found.values() for x in xs]
                    assert "TEST-O" in ids, f.name  # conda advisory, conda ordering
            expected = [("jinja2", "TEST-J"), ("urllib3", "TEST-U")]
            assert python_findings == dict.fromkeys(python_findings, expected)
        finally:
            await rt.close()

    asyncio.run(scenario())


def test_conda_names_map_to_pypi_advisories(tmp_path: Path, db_url: str) -> None:
    feed = write_feed(
        tmp_path / "feed",
        [
            record("TEST-T", "torch", [{"introduced": "0"}, {"fixed": "2.2.0"}]),
            record(
                "TEST-Z", "zlib", [{"introduced": "0"}]
            ),  # a PyPI project unrelated to conda zlib
            record("TEST-A", "acme-core", [{"introduced": "0"}]),
        ],
    )

    async def scenario() -> None:
        rt = runtime(tmp_path, db_url)
        try:
            await rt.vulns.import_path(feed)

            async def ids(name: str, version: str) -> list[str]:
                return [f.id for f in await rt.vulns.query("conda", name, version)]

            assert await ids("pytorch", "2.1.0") == ["TEST-T"]  # shipped rename
            assert await ids("pytorch", "2.2.0") == []
            assert await ids("zlib", "1.2.13") == []  # not a Python project
            assert await ids("acme", "1.0") == []
            await rt.vulns.map_conda("acme", "acme-core", "admin")
            assert await ids("acme", "1.0") == ["TEST-A"]
            assert await rt.vulns.conda_mapping("acme") == ("acme-core", "admin")
            assert await rt.vulns.conda_mapping("pytorch") == ("torch", "shipped")
            await rt.vulns.map_conda("pytorch", None, "admin")  # override the shipped table
            assert await ids("pytorch", "2.1.0") == []
        finally:
            await rt.close()

    asyncio.run(scenario())


def test_server_syncs_the_feed_on_a_schedule(tmp_path: Path) -> None:
    with served_export(tmp_path) as url:
        scheduled_sync(tmp_path, url)


def scheduled_sync(tmp_path: Path, url: str) -> None:
    import time

    import httpx

    from tests.conftest import make_server

    srv = make_server(
        tmp_path / "h",
        f"sqlite:///{tmp_path / 'h' / 'db.sqlite'}",
        workers=2,
        vulndb_url=url,
        vulndb_sync_interval=2,
    )
    try:
        deadline = time.monotonic() + 20
        with httpx.Client(
            base_url=srv.url, headers={"Authorization": f"Bearer {srv.admin_token}"}
        ) as c:
            while True:
                q = c.get("/api/v1/vulns/query", params={"name": "alpha-pkg", "version": "1.0"})
                if q.status_code == 200 and q.json():
                    break
                assert time.monotonic() < deadline, "the scheduled sync never imported the feed"
                time.sleep(0.3)
            assert q.json()[0]["id"] == "TEST-1"
        events = json.loads(srv.cli("audit", "list", "--json", "--action", "vulndb.sync").stdout)
        assert events
        assert all(e["outcome"] == "ok" for e in events)
    finally:
        srv.stop()


def test_scan_cli_env_and_sarif(tmp_path: Path) -> None:
    cli = home_cli(tmp_path, 120)
    feed = write_feed(tmp_path / "feed", FEED)
    assert cli("vulndb", "import", str(feed)).returncode == 0
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    for name, version in (("alpha_pkg", "1.0"), ("beta", "2.0")):
        info = site / f"{name}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    res = cli("scan", "--env", str(tmp_path / "venv"), "--json")
    assert res.returncode == 1, res.stderr
    assert [(f["package"], f["id"]) for f in json.loads(res.stdout)["findings"]] == [
        ("alpha-pkg", "TEST-1")
    ]
    sarif = json.loads(cli("scan", "--env", str(tmp_path / "venv"), "--format", "sarif").stdout)
    assert sarif["version"] == "2.1.0"
    [run_] = sarif["runs"]
    assert [r["ruleId"] for r in run_["results"]] == ["TEST-1"]
    assert run_["results"][0]["level"] == "error"  # critical
    assert run_["tool"]["driver"]["rules"][0]["id"] == "TEST-1"
    both = cli("scan", "x.txt", "--env", str(tmp_path))
    assert both.returncode == 2
    assert "one of them" in both.stderr

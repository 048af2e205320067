"""The JSON admin API and index-name privacy, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from tests.builders import build_wheel
from tests.conftest import Server


def test_admin_api_round_trip(server: Server, tmp_path: Path) -> None:
    srv = server
    with srv.http(srv.admin_token) as c:
        assert c.get("/health").json()["status"] == "ok"
        bad = c.post("/api/v1/indexes", json={"name": "x", "kind": "nonsense"})
        assert bad.status_code == 400
        assert "mirror, private or virtual" in bad.json()["hint"]
        r = c.post("/api/v1/indexes", json={"name": "priv", "kind": "private"})
        assert r.status_code == 201
        assert (
            c.post("/api/v1/indexes", json={"name": "priv", "kind": "private"}).status_code == 409
        )
        assert c.post("/api/v1/teams", json={"name": "t1"}).status_code == 201
        grant = {"index": "priv", "scope": "write"}
        assert c.post("/api/v1/teams/t1/grants", json=grant).status_code == 201
        tok = c.post("/api/v1/tokens", json={"index": "priv", "scope": "write", "team": "t1"})
        assert tok.status_code == 201
        writer = tok.json()["token"]
        wheel = build_wheel(tmp_path, "widget", "1.0")
    with srv.http(writer) as w:
        up = w.post(
            "/pypi/priv/",
            data={":action": "file_upload"},
            files={"content": (wheel.name, wheel.read_bytes())},
        )
        assert up.status_code == 200, up.text
        # a write token may not yank
        assert (
            w.post("/api/v1/indexes/priv/projects/widget/versions/1.0/yank", json={}).status_code
            == 403
        )
    with srv.http(srv.admin_token) as c:
        y = c.post("/api/v1/indexes/priv/projects/widget/versions/1.0/yank", json={"reason": "CVE"})
        assert y.json() == {"files": 1}
        page = c.get(
            "/pypi/priv/simple/widget/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        ).json()
        assert page["files"][0]["yanked"] == "CVE"
        c.delete("/api/v1/indexes/priv/projects/widget/versions/1.0/yank")
        page = c.get(
            "/pypi/priv/simple/widget/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
        ).json()
        assert page["files"][0]["yanked"] is False
        d = c.delete(f"/api/v1/indexes/priv/projects/widget/files/{wheel.name}")
        assert [f["filename"] for f in d.json()] == [wheel.name]
        assert c.get("/pypi/priv/simple/widget/").status_code == 404
        events = c.get("/api/v1/audit", params={"index": "priv"}).json()
        assert {"upload", "yank", "unyank", "delete"} <= {e["action"] for e in events}
        assert c.delete("/api/v1/indexes/priv").status_code == 204


def test_unknown_index_names_are_not_disclosed(server: Server) -> None:
    srv = server
    srv.cli("index", "create", "a", "--private")
    tok_a = srv.token("a")
    with srv.http() as anon:
        assert anon.get("/pypi/nope/simple/").status_code == 401
        assert anon.get("/pypi/a/simple/").status_code == 401
    with srv.http(tok_a) as c:
        assert c.get("/pypi/nope/simple/").status_code == 403
    with srv.http(srv.admin_token) as c:
        r = c.get("/pypi/nope/simple/")
        assert r.status_code == 404
        assert "no index named 'nope'" in r.text


def test_fast_path_answers_exactly_like_the_routes(sqlite_server: Server, tmp_path: Path) -> None:
    """The first request fills the caches through the Starlette routes; the next ones are
    answered by web/fast.py. Both must say the same thing, and refusals must never be cached."""
    srv = sqlite_server
    srv.cli("index", "create", "p", "--private")
    wheel = build_wheel(tmp_path, "thing", "1.0")
    reader = srv.token("p")
    with srv.http(srv.admin_token) as c:
        c.post(
            "/pypi/p/",
            data={":action": "file_upload"},
            files={"content": (wheel.name, wheel.read_bytes())},
        )
    keep = ("content-type", "etag", "vary", "cache-control", "content-encoding")
    for accept in ("text/html", "application/vnd.pypi.simple.v1+json"):
        for enc in ("identity", "gzip"):
            with srv.http(reader) as c:
                h = {"Accept": accept, "Accept-Encoding": enc}
                cold = c.get("/pypi/p/simple/thing/", headers=h)
                warm = c.get("/pypi/p/simple/thing/", headers=h)
                prefixed = c.get(f"{srv.url}/t/{reader}/pypi/p/simple/thing/", headers=h)
            assert cold.status_code == warm.status_code == prefixed.status_code == 200
            assert cold.content == warm.content == prefixed.content
            for k in keep:
                assert cold.headers.get(k) == warm.headers.get(k), k
            with srv.http(reader) as c:
                again = c.get(
                    "/pypi/p/simple/thing/", headers={**h, "If-None-Match": warm.headers["etag"]}
                )
            assert again.status_code == 304
    with srv.http() as anon:
        assert anon.get("/pypi/p/simple/thing/").status_code == 401
    import time

    other = srv.token("p", "read", "--expires", "5s")  # room for a loaded machine
    made = time.monotonic()  # the token was made before this: it expires by +5 s
    with srv.http(other) as c:
        assert c.get("/pypi/p/simple/thing/").status_code == 200
    time.sleep(max(0.0, made + 5.3 - time.monotonic()))
    with srv.http(other) as c:
        assert c.get("/pypi/p/simple/thing/").status_code == 401  # expired, even when warm
    srv.cli("token", "revoke", reader.split("_")[1])
    with srv.http(reader) as c:
        assert c.get("/pypi/p/simple/thing/").status_code == 401  # revoked, even when warm


def test_several_workers_see_uploads_and_revocations_at_once(tmp_path: Path, db_url: str) -> None:
    """With --workers 2 each process has its own caches; changes must reach both at once."""
    from tests.conftest import make_server

    srv = make_server(tmp_path / "h", db_url, workers=2)
    try:
        srv.cli("index", "create", "p", "--private")
        reader = srv.token("p")
        for version in ("1.0", "2.0"):
            wheel = build_wheel(tmp_path, "multi", version)
            # warm both workers' caches (new connections spread over the processes)
            for _ in range(8):
                with srv.http(reader) as c:
                    c.get("/pypi/p/simple/multi/")
            with srv.http(srv.admin_token) as c:
                r = c.post(
                    "/pypi/p/",
                    data={":action": "file_upload"},
                    files={"content": (wheel.name, wheel.read_bytes())},
                )
                assert r.status_code == 200, r.text
            for _ in range(8):
                with srv.http(reader) as c:
                    assert wheel.name in c.get("/pypi/p/simple/multi/").text
        srv.cli("token", "revoke", reader.split("_")[1])
        for _ in range(8):
            with srv.http(reader) as c:
                assert c.get("/pypi/p/simple/multi/").status_code == 401
    finally:
        srv.stop()

"""Teams against real servers, on SQLite and PostgreSQL: tokens belong to teams, teams are
granted indexes, and a token may act only where both it and its team's grants allow.

Setup goes through the JSON API (a request costs milliseconds, a CLI call over a second); the
CLI is used where its cross-process effect is what is tested, and in the CLI test.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from stockade.core import auth
from stockade.core.auth import Grant
from stockade.db.engine import make_sync_engine, upgrade
from stockade.errors import Forbidden
from stockade.services import repo
from stockade.types import Scope
from tests.builders import build_wheel
from tests.conftest import VENV_BIN, Server, client_env, make_server
from tests.integration.test_auth import audit_events, bearer, post_upload, token_id
from tests.integration.test_clients import installed, pip


def twine(srv: Server, index: str, token: str, wheel: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(VENV_BIN / "twine"),
            "upload",
            "--non-interactive",
            "--disable-progress-bar",
            "--repository-url",
            f"{srv.url}/pypi/{index}/",
            "-u",
            "__token__",
            "-p",
            token,
            str(wheel),
        ],
        env=client_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def api(c: httpx.Client, method: str, path: str, status: int, body: Any = None) -> Any:
    r = c.request(method, path, json=body)
    assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text}"
    return r.json() if r.content else None


def make_token(c: httpx.Client, index: str, scope: str, team: str | None = None) -> str:
    body = {"index": index, "scope": scope} | ({"team": team} if team else {})
    token: str = api(c, "POST", "/api/v1/tokens", 201, body)["token"]
    return token


def status(srv: Server, token: str, path: str) -> int:
    with srv.http(token) as c:
        return c.get(path).status_code


@pytest.fixture
def admin(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.url, headers=bearer(server.admin_token), timeout=30
    ) as client:
        yield client


def test_dev_and_prod_teams_see_only_their_indexes(
    server: Server, admin: httpx.Client, tmp_path: Path
) -> None:
    srv = server
    for name, version in (("dev", "2.0"), ("prod", "1.0")):  # the version tells them apart
        api(admin, "POST", "/api/v1/indexes", 201, {"name": name, "kind": "private"})
        wheel = build_wheel(tmp_path / name, "app", version)
        r = post_upload(admin, f"/pypi/{name}/", wheel)
        assert r.status_code == 200, r.text
        api(admin, "POST", "/api/v1/teams", 201, {"name": f"{name}-team"})
        grant = {"index": name, "scope": "write"}
        api(admin, "POST", f"/api/v1/teams/{name}-team/grants", 201, grant)
    # tokens valid on every index: only their teams tell them apart
    prod_tok = make_token(admin, "*", "write", "prod-team")
    dev_tok = make_token(admin, "*", "write", "dev-team")

    versions = {"dev": "2.0", "prod": "1.0"}
    for token, mine, theirs in ((prod_tok, "prod", "dev"), (dev_tok, "dev", "prod")):
        version = versions[mine]
        target = tmp_path / f"{mine}-ok"
        pip("install", "--index-url", srv.index_url(mine, token), "--target", str(target), "app")
        assert installed(target) == {f"app-{version}.dist-info"}
        refused = pip(
            "install",
            "--index-url",
            srv.index_url(theirs, token),
            "--target",
            str(tmp_path / f"{mine}-no"),
            "app",
            check=False,
        )
        # pip reads a refused page as "no such project"; the audit log below shows the 403s
        assert refused.returncode != 0
        assert "No matching distribution found for app" in refused.stderr
        assert not list((tmp_path / f"{mine}-no").glob("app*"))
        # the warm fast path refuses too (pip made the pages hot), and says why
        with srv.http(token) as c:
            for _ in range(2):
                assert c.get(f"/pypi/{mine}/simple/app/").status_code == 200
                r = c.get(f"/pypi/{theirs}/simple/app/")
                assert r.status_code == 403
                assert f"team '{mine}-team' of token {token_id(token)}" in r.text
                assert f"no grant for index '{theirs}'" in r.text
                assert f"stockade team grant {mine}-team {theirs} --scope read" in r.text
            r = c.get(f"/pypi/{theirs}/files/app/app-{versions[theirs]}-py3-none-any.whl")
            assert r.status_code == 403
            assert [i["name"] for i in c.get("/api/v1/indexes").json()] == [mine]

    # a read grant cannot upload, whatever the token's scope
    changed = api(
        admin, "POST", "/api/v1/teams/prod-team/grants", 200, {"index": "prod", "scope": "read"}
    )
    assert (changed["scope"], changed["previous"]) == ("read", "write")
    newer = build_wheel(tmp_path / "new", "app", "1.1")
    res = twine(srv, "prod", prod_tok, newer)
    assert res.returncode != 0
    assert "403" in res.stdout + res.stderr
    with srv.http(prod_tok) as c:
        r = post_upload(c, "/pypi/prod/", newer)
    assert r.status_code == 403
    assert "granted 'read' on index 'prod'; this needs 'write'" in r.text
    assert "stockade team grant prod-team prod --scope write" in r.text
    # the CLI grants write: the running server (which cached the token) applies it at once
    srv.cli("team", "grant", "prod-team", "prod", "--scope", "write")
    res = twine(srv, "prod", prod_tok, newer)
    assert res.returncode == 0, res.stdout + res.stderr
    # the CLI revokes the grant: the very next request is refused, even on a warm page
    assert status(srv, prod_tok, "/pypi/prod/simple/app/") == 200
    assert status(srv, prod_tok, "/pypi/prod/simple/app/") == 200
    srv.cli("team", "revoke", "prod-team", "prod")
    assert status(srv, prod_tok, "/pypi/prod/simple/app/") == 403
    assert status(srv, dev_tok, "/pypi/dev/simple/app/") == 200

    # every change and every refusal is in the audit log
    events = audit_events(srv, "team.grant", 4)
    assert {(e["detail"]["team"], e["detail"]["scope"]) for e in events} >= {
        ("prod-team", "read"),
        ("prod-team", "write"),
        ("dev-team", "write"),
    }
    revoked = audit_events(srv, "team.revoke", 1)
    assert revoked[0]["index"] == "prod" and revoked[0]["detail"]["team"] == "prod-team"
    refused_events = audit_events(srv, "refused", 9)
    by_pip = {
        (e["actor"], e["index"])
        for e in refused_events
        if e["detail"]["path"] == "/pypi/" + e["index"] + "/simple/app/"
        and "no grant for index" in e["detail"]["reason"]
    }
    assert {(token_id(prod_tok), "dev"), (token_id(dev_tok), "prod")} <= by_pip
    assert any("granted 'read' on index 'prod'" in e["detail"]["reason"] for e in refused_events)


def test_grant_changes_reach_every_server_process(tmp_path: Path, db_url: str) -> None:
    """Two servers on one home and database, each with its own token cache: a grant revoked
    through one is refused by the other on its next request, and granted back likewise."""
    a = make_server(tmp_path / "home", db_url)
    b = Server(home=a.home, db_url=db_url, env=a.env, admin_token=a.admin_token)
    try:
        b.start()
        assert a.url != b.url
        wheel = build_wheel(tmp_path, "shared", "1.0")
        with a.http(a.admin_token) as c:
            api(c, "POST", "/api/v1/indexes", 201, {"name": "p", "kind": "private"})
            assert post_upload(c, "/pypi/p/", wheel).status_code == 200
            api(c, "POST", "/api/v1/teams", 201, {"name": "t"})
            api(c, "POST", "/api/v1/teams/t/grants", 201, {"index": "p", "scope": "read"})
            reader = make_token(c, "*", "read", "t")
        page = "/pypi/p/simple/shared/"
        for srv in (a, b):  # warm both: the token and the page are cached in each process
            for _ in range(3):
                assert status(srv, reader, page) == 200
        with a.http(a.admin_token) as c:
            gone = api(c, "DELETE", "/api/v1/teams/t/grants/p", 200)
            assert gone["scope"] == "read"
        assert status(b, reader, page) == 403
        assert status(a, reader, page) == 403
        with b.http(b.admin_token) as c:
            api(c, "POST", "/api/v1/teams/t/grants", 201, {"index": "*", "scope": "read"})
        assert status(a, reader, page) == 200
        assert status(b, reader, page) == 200
        # a team is not deleted under its tokens' feet
        with b.http(b.admin_token) as c:
            r = c.delete("/api/v1/teams/t")
            assert r.status_code == 409
            assert "1 active token" in r.json()["error"]
            assert "stockade token revoke" in r.json()["hint"]
            api(c, "DELETE", f"/api/v1/tokens/{token_id(reader)}", 200)
            api(c, "DELETE", "/api/v1/teams/t", 204)
            api(c, "GET", "/api/v1/teams/t", 404)
        assert status(a, reader, page) == 401  # revoked
    finally:
        b.stop()
        a.stop()


def test_teams_api(server: Server, admin: httpx.Client) -> None:
    c = admin
    api(c, "POST", "/api/v1/indexes", 201, {"name": "p", "kind": "private"})
    bad = api(c, "POST", "/api/v1/teams", 400, {"name": "Not Valid"})
    assert "invalid team name" in bad["error"]
    made = api(c, "POST", "/api/v1/teams", 201, {"name": "dev", "description": "developers"})
    assert made == {
        **made,
        "name": "dev",
        "description": "developers",
        "grants": [],
        "tokens": {"active": 0, "total": 0},
    }
    api(c, "POST", "/api/v1/teams", 409, {"name": "dev"})
    api(c, "GET", "/api/v1/teams/nope", 404)
    missing = api(c, "POST", "/api/v1/teams/dev/grants", 404, {"index": "nope", "scope": "read"})
    assert "no index named 'nope'" in missing["error"]
    api(c, "POST", "/api/v1/teams/dev/grants", 400, {"index": "p", "scope": "root"})
    api(c, "POST", "/api/v1/teams/nope/grants", 404, {"index": "p", "scope": "read"})
    g = api(c, "POST", "/api/v1/teams/dev/grants", 201, {"index": "p", "scope": "admin"})
    assert (g["team"], g["index"], g["scope"], g["previous"]) == ("dev", "p", "admin", None)
    api(c, "POST", "/api/v1/teams/dev/grants", 201, {"index": "*", "scope": "read"})
    shown = api(c, "GET", "/api/v1/teams/dev", 200)
    assert [(x["index"], x["scope"]) for x in shown["grants"]] == [("*", "read"), ("p", "admin")]
    assert [t["name"] for t in api(c, "GET", "/api/v1/teams", 200)] == ["dev"]

    # POST /api/v1/tokens checks the team
    nope = api(c, "POST", "/api/v1/tokens", 404, {"index": "p", "team": "nope"})
    assert "no team named 'nope'" in nope["error"]
    assert "stockade team create nope" in nope["hint"]
    api(c, "POST", "/api/v1/tokens", 400, {"index": "p", "team": 5})

    # managing teams needs an admin token for every index, and a team granted admin on '*'
    p_admin = make_token(c, "p", "admin")
    team_admin = make_token(c, "*", "admin", "dev")  # dev: admin on p, read on '*'
    for token in (p_admin, team_admin):
        with httpx.Client(base_url=c.base_url, headers=bearer(token)) as other:
            r = other.get("/api/v1/teams")
            assert r.status_code == 403, r.text
    with httpx.Client(base_url=c.base_url, headers=bearer(team_admin)) as other:
        r = other.post("/api/v1/teams", json={"name": "mine"})
        assert r.status_code == 403
        assert "stockade team grant dev '*' --scope admin" in r.json()["hint"]
        # but it administers p through its grant: it lists p and makes tokens for p
        assert [i["name"] for i in other.get("/api/v1/indexes").json()] == ["p"]
        r = other.post("/api/v1/tokens", json={"index": "p", "scope": "read"})
        assert r.status_code == 201, r.text
        assert other.post("/api/v1/tokens", json={"index": "*"}).status_code == 403
    api(c, "POST", "/api/v1/teams/dev/grants", 200, {"index": "*", "scope": "admin"})
    with httpx.Client(base_url=c.base_url, headers=bearer(team_admin)) as other:
        assert other.get("/api/v1/teams").status_code == 200

    # a team with no grants reaches nothing, not even the vulnerability API
    api(c, "POST", "/api/v1/teams", 201, {"name": "empty"})
    lost = make_token(c, "*", "read", "empty")
    with httpx.Client(base_url=c.base_url, headers=bearer(lost)) as other:
        assert other.get("/api/v1/vulns").status_code == 403
        assert other.get("/api/v1/indexes").status_code == 403
        assert other.get("/pypi/p/simple/").status_code == 403
        assert other.get("/pypi/nope/simple/").status_code == 403  # no index names disclosed
    with httpx.Client(base_url=c.base_url, headers=bearer(team_admin)) as other:
        assert other.get("/api/v1/vulns").status_code == 200
        assert other.get("/pypi/nope/simple/").status_code == 404  # granted '*'

    counts = api(c, "GET", "/api/v1/teams/dev", 200)["tokens"]
    assert counts == {"active": 1, "total": 1}
    api(c, "DELETE", "/api/v1/teams/dev/grants/*", 200)
    api(c, "DELETE", "/api/v1/teams/dev/grants/*", 404)
    api(c, "DELETE", "/api/v1/teams/dev", 409)
    api(c, "DELETE", f"/api/v1/tokens/{token_id(team_admin)}", 200)
    api(c, "DELETE", "/api/v1/teams/dev", 204)
    api(c, "DELETE", "/api/v1/teams/dev", 404)


def test_team_commands(sqlite_server: Server) -> None:
    srv = sqlite_server
    srv.cli("index", "create", "p", "--private")
    made = json.loads(srv.cli("team", "create", "ops", "--description", "on call", "--json").stdout)
    assert (made["name"], made["description"], made["grants"]) == ("ops", "on call", [])
    bad = srv.cli("team", "create", "Ops Team", check=False)
    assert bad.returncode == 1
    assert "invalid team name 'Ops Team'" in bad.stderr
    dup = srv.cli("team", "create", "ops", check=False)
    assert dup.returncode == 1
    assert "already exists" in dup.stderr
    no_index = srv.cli("team", "grant", "ops", "nope", "--scope", "read", check=False)
    assert no_index.returncode == 1
    assert "no index named 'nope'" in no_index.stderr
    no_scope = srv.cli("team", "grant", "ops", "p", "--scope", "root", check=False)
    assert "read, write or admin" in no_scope.stderr
    g = json.loads(srv.cli("team", "grant", "ops", "p", "--scope", "read", "--json").stdout)
    assert (g["index"], g["scope"], g["previous"]) == ("p", "read", None)
    out = srv.cli("team", "grant", "ops", "p", "--scope", "write").stdout
    assert "write on index 'p' (was read)" in out
    token = srv.token("*", "write", "--team", "ops")
    listed = json.loads(srv.cli("team", "list", "--json").stdout)
    assert [(t["name"], t["tokens"]["active"]) for t in listed] == [("ops", 1)]
    table = srv.cli("team", "list").stdout
    assert "ops" in table and "p:write" in table
    shown = srv.cli("team", "show", "ops").stdout
    assert "1 active, 1 in all" in shown and "on call" in shown
    missing = srv.cli("team", "show", "nope", check=False)
    assert missing.returncode == 1
    assert "no team named 'nope'" in missing.stderr
    with srv.http(token) as c:
        assert c.get("/pypi/p/simple/").status_code == 200
    refused = srv.cli("team", "delete", "ops", check=False)
    assert refused.returncode == 1
    assert "still has 1 active token" in refused.stderr
    assert "stockade token list --team ops" in refused.stderr
    gone = json.loads(srv.cli("team", "revoke", "ops", "p", "--json").stdout)
    assert gone["scope"] == "write"
    again = srv.cli("team", "revoke", "ops", "p", check=False)
    assert "has no grant for index 'p'" in again.stderr
    with srv.http(token) as c:
        r = c.get("/pypi/p/simple/")
        assert r.status_code == 403
        assert "stockade team grant ops p --scope read" in r.text
    srv.cli("token", "revoke", token_id(token))
    assert json.loads(srv.cli("team", "delete", "ops", "--json").stdout) == {"deleted": "ops"}
    assert json.loads(srv.cli("team", "list", "--json").stdout) == []
    # the revoked token keeps its tag as history
    tokens = json.loads(srv.cli("token", "list", "--team", "ops", "--json").stdout)
    assert [t["id"] for t in tokens] == [token_id(token)]


# -- migration 0007 ----------------------------------------------------------------------------


def test_migration_0007_keeps_the_access_of_team_tagged_tokens(tmp_path: Path, db_url: str) -> None:
    """Tokens tagged with a team before teams existed: after the upgrade each tag is a team
    granted admin on '*', so the token's own index and scope decide, exactly as before."""
    import asyncio

    from stockade.services.runtime import Runtime
    from stockade.settings import Settings

    upgrade(db_url, "0006")
    tokens = sa.table(
        "tokens",
        sa.column("id", sa.String),
        sa.column("secret_hash", sa.LargeBinary),
        sa.column("index_name", sa.String),
        sa.column("scope", sa.String),
        sa.column("team", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    before: list[tuple[str | None, str, Scope]] = [
        ("ml", "internal", Scope.WRITE),
        ("ml", "internal", Scope.READ),  # a second token of one team: one team, not two
        ("Data Science", "*", Scope.READ),  # not a valid name today; kept as it is
        ("", "*", Scope.ADMIN),  # an empty tag never meant anything
        (None, "x", Scope.READ),
    ]
    minted: dict[str | None, str] = {}
    rows = []
    for team, index, scope in before:
        m = auth.mint()
        minted.setdefault(team, m.token)
        rows.append(
            {
                "id": m.token_id,
                "secret_hash": m.secret_hash,
                "index_name": index,
                "scope": scope.value,
                "team": team,
                "created_at": repo.utcnow(),
            }
        )
    engine = make_sync_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(tokens), rows)
        upgrade(db_url)
        with engine.connect() as conn:
            teams = sorted(conn.execute(sa.text("SELECT name FROM teams")).scalars())
            grants = sorted(
                conn.execute(sa.text("SELECT team, index_name, scope FROM team_grants")).all()
            )
        assert teams == ["Data Science", "ml"]
        assert grants == [("Data Science", "*", "admin"), ("ml", "*", "admin")]
    finally:
        engine.dispose()

    async def check() -> None:
        rt = Runtime(Settings.load(home=tmp_path / "home", database_url=db_url))
        try:
            now = repo.utcnow()
            ml = await rt.tokens.verify(minted["ml"])
            assert (ml.team, ml.grants) == ("ml", (Grant("*", Scope.ADMIN),))
            assert auth.permits(ml, index="internal", needed=Scope.WRITE, now=now)
            assert not auth.permits(ml, index="internal", needed=Scope.ADMIN, now=now)
            assert not auth.permits(ml, index="other", needed=Scope.READ, now=now)
            ds = await rt.tokens.verify(minted["Data Science"])
            assert auth.permits(ds, index="anything", needed=Scope.READ, now=now)
            assert not auth.permits(ds, index="anything", needed=Scope.WRITE, now=now)
            blank = await rt.tokens.verify(minted[""])  # an empty tag: no team, as before
            assert blank.team is None
            auth.authorize(blank, index=auth.ALL_INDEXES, needed=Scope.ADMIN, now=now)
            plain = await rt.tokens.verify(minted[None])
            assert plain.team is None and auth.permits(plain, index="x", needed=Scope.READ, now=now)
            shown = await rt.teams.show("ml")
            assert (shown.tokens_active, shown.tokens_total) == (2, 2)
            # a team that disappears from under its tokens (by hand, in the database): refused
            async with rt.sessions() as s, s.begin():
                await s.execute(sa.text("DELETE FROM team_grants WHERE team = 'ml'"))
                await s.execute(sa.text("DELETE FROM teams WHERE name = 'ml'"))
            rt.tokens.clear()
            ml = await rt.tokens.verify(minted["ml"])
            assert ml.grants is None
            with pytest.raises(Forbidden, match="team 'ml', which does not exist"):
                auth.authorize(ml, index="internal", needed=Scope.READ, now=now)
        finally:
            await rt.close()

    asyncio.run(check())

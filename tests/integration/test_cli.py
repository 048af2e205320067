"""The command line as scripts use it: spellings, --json, last-line tokens, errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import STOCKADE, Server, client_env


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STOCKADE, *args],
        env=client_env(STOCKADE_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_init_creates_defaults_and_prints_token_last(tmp_path: Path) -> None:
    home = tmp_path / "h"
    res = cli(home, "init")
    assert res.returncode == 0, res.stderr
    token = res.stdout.strip().splitlines()[-1]
    assert token.startswith("stk_")
    assert "pip install requests --index-url http://__token__:" in res.stdout
    assert (home / "stockade.toml").exists()
    names = [i["name"] for i in json.loads(cli(home, "index", "list", "--json").stdout)]
    assert names == ["internal", "main", "pypi"]
    again = cli(home, "init")
    assert again.returncode == 0
    assert "already initialized" in again.stdout
    assert "stk_" not in again.stdout  # the first token is shown once


def test_commands_without_init_fail_clearly(tmp_path: Path) -> None:
    res = cli(tmp_path / "nothing", "index", "list")
    assert res.returncode == 1
    assert "not initialized" in res.stderr
    assert "stockade init" in res.stderr
    assert res.stdout == ""


def test_index_and_token_commands(sqlite_server: Server) -> None:
    srv = sqlite_server
    made = json.loads(srv.cli("index", "create", "p", "--private", "--json").stdout)
    assert made["kind"] == "private"
    bad = srv.cli("index", "create", "x", "--private", "--mirror", "http://a/", check=False)
    assert bad.returncode != 0
    assert "exactly one" in bad.stderr
    dup = srv.cli("index", "create", "p", "--private", check=False)
    assert dup.returncode == 1
    assert "already exists" in dup.stderr
    missing = srv.cli("index", "show", "nope", check=False)
    assert missing.returncode == 1
    assert "no index named 'nope'" in missing.stderr

    no_team = srv.cli("token", "create", "--index", "p", "--team", "data", check=False)
    assert no_team.returncode == 1
    assert "no team named 'data'" in no_team.stderr
    assert "stockade team create data" in no_team.stderr
    srv.cli("team", "create", "data")
    srv.cli("team", "grant", "data", "p", "--scope", "write")
    out = srv.cli(
        "token",
        "create",
        "--index",
        "p",
        "--scope",
        "write",
        "--expires",
        "30d",
        "--team",
        "data",
        "--note",
        "CI",
    ).stdout
    token = out.strip().splitlines()[-1]
    token_id = token.split("_")[1]
    listed = json.loads(srv.cli("token", "list", "--json").stdout)
    mine = next(t for t in listed if t["id"] == token_id)
    assert (mine["scope"], mine["team"], mine["note"], mine["index"]) == (
        "write",
        "data",
        "CI",
        "p",
    )
    assert token not in json.dumps(listed)
    bad_scope = srv.cli("token", "create", "--index", "p", "--scope", "root", check=False)
    assert bad_scope.returncode == 1
    assert "read, write or admin" in bad_scope.stderr
    bad_exp = srv.cli("token", "create", "--index", "p", "--expires", "soon", check=False)
    assert "duration" in bad_exp.stderr
    as_json = json.loads(srv.cli("token", "create", "--index", "p", "--json").stdout)
    assert as_json["token"].startswith("stk_")
    srv.cli("token", "revoke", token_id)
    listed = json.loads(srv.cli("token", "list", "--index", "p", "--json").stdout)
    assert next(t for t in listed if t["id"] == token_id)["revoked_at"]
    # index created by the CLI is visible to the running server at once
    with srv.http(srv.admin_token) as c:
        assert c.get("/pypi/p/simple/").status_code == 200
        srv.cli("index", "create", "later", "--private")
        assert c.get("/pypi/later/simple/").status_code == 200
        assert anon_status(srv, "later") == 401
        updated = json.loads(
            srv.cli("index", "update", "later", "--anonymous-read", "--json").stdout
        )
        assert updated["anonymous_read"] is True
        assert anon_status(srv, "later") == 200
        srv.cli("index", "update", "later", "--no-anonymous-read")
        assert anon_status(srv, "later") == 401
    srv.cli("index", "delete", "later", "--yes")
    assert json.loads(srv.cli("index", "list", "--json").stdout)[-1]["name"] != "later"


def anon_status(srv: Server, index: str) -> int:
    with srv.http() as anon:
        return anon.get(f"/pypi/{index}/simple/").status_code

"""Environments: push every lock format, status flips with advisories and curations (one alert
naming the cause), a lock resolved against a filtered index installs with --require-hashes,
malformed files store nothing, re-evaluation touches only environments with the package."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Server, UpstreamSet
from tests.integration.test_clients import installed, pip
from tests.webhook import webhook_receiver

FIXTURES = Path(__file__).resolve().parent.parent / "unit" / "lockfiles"
FORMATS = ("requirements.txt", "pylock.toml", "uv.lock", "poetry.lock")


def advisory(ident: str, name: str, introduced: str, fixed: str) -> dict[str, Any]:
    return {
        "id": ident,
        "modified": "2024-01-01T00:00:00Z",
        "affected": [
            {
                "package": {"ecosystem": "PyPI", "name": name},
                "ranges": [
                    {"type": "ECOSYSTEM", "events": [{"introduced": introduced}, {"fixed": fixed}]}
                ],
            }
        ],
    }


def cli_json(srv: Server, *args: str) -> Any:
    return json.loads(srv.cli(*args, "--json").stdout)


def test_every_lock_format_gives_the_same_packages(server: Server) -> None:
    srv = server
    sets = {}
    for i, fmt in enumerate(FORMATS, start=1):
        made = cli_json(srv, "env", "push", "web/app", str(FIXTURES / fmt))
        assert made["version"] == i
        sets[fmt] = {(p["name"], p["version"]) for p in made["packages"]}
    assert sets["requirements.txt"]
    assert all(s == sets["requirements.txt"] for s in sets.values()), sets
    shown = cli_json(srv, "env", "show", "web/app@2")
    assert shown["kind"] == "pylock" and shown["versions"] == [1, 2, 3, 4]
    pulled = srv.cli("env", "pull", "web/app@3").stdout
    assert pulled == (FIXTURES / "uv.lock").read_text()
    listed = cli_json(srv, "env", "list")
    assert [(e["team"], e["name"], e["version"]) for e in listed] == [("web", "app", 4)]
    bom = json.loads(srv.cli("env", "sbom", "web/app@3", "--format", "cyclonedx").stdout)
    assert {(c["name"], c["version"]) for c in bom["components"]} == sets["uv.lock"]


def test_advisory_turns_it_red_with_one_alert_and_curation_green_again(
    server: Server, tmp_path: Path
) -> None:
    srv = server
    srv.cli("team", "create", "web")
    with webhook_receiver() as (url, received):
        with (srv.home / "stockade.toml").open("a") as f:
            f.write(f'\n[alert_team_webhooks]\nweb = "{url}"\n')
        # settings are read when a process starts; on PostgreSQL the server's job worker
        # re-evaluates the environments and sends the alerts
        srv.stop()
        srv.start()
        first = cli_json(srv, "env", "push", "web/app", str(FIXTURES / "requirements.txt"))
        other = tmp_path / "requirements.txt"
        other.write_text("idna==3.4\n")
        cli_json(srv, "env", "push", "web/tools", str(other))
        names = {p["name"] for p in first["packages"]}
        assert first["status"] == "green" and "jinja2" in names
        feed = tmp_path / "feed"
        feed.mkdir()
        (feed / "TEST-J.json").write_text(json.dumps(advisory("TEST-J", "jinja2", "2.0", "2.10.1")))
        srv.cli("vulndb", "import", str(feed))
        red = cli_json(srv, "env", "show", "web/app")
        assert red["status"] == "red"
        pin = next(k for k in red["problems"] if k.startswith("jinja2=="))
        assert red["problems"][pin][0]["id"] == "TEST-J"
        assert red["problems"][pin][0]["fixed_in"] == ["2.10.1"]
        assert [h["to"] for h in red["history"]] == ["red"]
        assert "TEST-J" in red["history"][0]["cause"]
        env_alerts = [a for a in received if a["event"] == "environment.status"]
        assert [(a["ref"], a["to"]) for a in env_alerts] == [("web/app@1", "red")]
        # the environment without jinja2 was not touched
        tools = cli_json(srv, "env", "show", "web/tools")
        assert tools["status"] == "green" and tools["history"] == []
        srv.cli(
            "vuln", "curate", "TEST-J", "--package", "jinja2", "--status", "not_affected",
            "--justification", "vulnerable_code_not_in_execute_path", "--reason", "unused",
        )  # fmt: skip
        green = cli_json(srv, "env", "show", "web/app")
        assert green["status"] == "green"
        assert [h["to"] for h in green["history"]] == ["red", "green"]
        assert "curation of TEST-J" in green["history"][1]["cause"]
    audited = cli_json(srv, "audit", "list", "--action", "env.status")
    assert sorted(e["outcome"] for e in audited) == ["green", "red"]


def test_lock_against_a_filtered_index_never_picks_a_blocked_version(
    server: Server, upstream: UpstreamSet, tmp_path: Path
) -> None:
    srv = server
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    feed = tmp_path / "feed"
    feed.mkdir()
    (feed / "TEST-A.json").write_text(json.dumps(advisory("TEST-A", "alpha", "1.1", "1.2")))
    srv.cli("vulndb", "import", str(feed))
    policy = tmp_path / "p.toml"
    policy.write_text('[[rules]]\nkind = "vulnerabilities"\nseverity = "any"\n')
    srv.cli("policy", "set", "up", "--file", str(policy))
    wanted = tmp_path / "requirements.in"
    wanted.write_text("beta\n")
    made = cli_json(srv, "env", "lock", "data/etl", str(wanted), "--index", "up", "--url", srv.url)
    pins = {p["name"]: p["version"] for p in made["packages"]}
    assert pins["alpha"] != "1.1" and "beta" in pins
    assert made["status"] == "green" and made["index"] == "up"
    lock = tmp_path / "locked.txt"
    srv.cli("env", "pull", "data/etl", "-o", str(lock))
    assert "--hash=sha256:" in lock.read_text()
    token = srv.token("up")
    pip(
        "install", "--require-hashes", "-r", str(lock), "--index-url", srv.index_url("up", token),
        "--target", str(tmp_path / "t"),
    )  # fmt: skip
    assert installed(tmp_path / "t") == {f"{n}-{v}.dist-info" for n, v in pins.items()}
    # a policy change that blocks a pinned version turns the bound environment red
    policy.write_text('[[rules]]\nkind = "names"\ndeny = ["beta"]\n')
    srv.cli("policy", "set", "up", "--file", str(policy))
    red = cli_json(srv, "env", "show", "data/etl")
    assert red["status"] == "red"
    assert any(p["kind"] == "policy" for ps in red["problems"].values() for p in ps)


@pytest.mark.parametrize(
    ("name", "body", "needle"),
    [
        ("requirements.txt", "alpha==1.0\nbeta=>2\n", "requirements.txt"),
        ("uv.lock", 'version = 1\n[[package]]\nname = "x"\nversion = \n', "uv.lock"),
        ("requirements.txt", "alpha>=1\n", "without an exact version"),
        ("requirements.txt", "# nothing\n", "pins no package"),
    ],
)
def test_malformed_lock_files_are_refused_and_store_nothing(
    server: Server, tmp_path: Path, name: str, body: str, needle: str
) -> None:
    srv = server
    bad = tmp_path / name
    bad.write_text(body)
    res = srv.cli("env", "push", "web/bad", str(bad), check=False)
    assert res.returncode != 0
    assert needle in res.stderr
    assert cli_json(srv, "env", "list") == []


def test_env_api_by_team_tokens(server: Server) -> None:
    srv = server
    srv.cli("team", "create", "web")
    srv.cli("team", "create", "ops")
    srv.cli("index", "create", "internal", "--private")
    srv.cli("team", "grant", "web", "internal", "--scope", "write")
    web = srv.token("internal", "write", "--team", "web")
    ops = srv.token("internal", "read", "--team", "ops")
    body = (FIXTURES / "requirements.txt").read_bytes()
    with srv.http(web) as c:
        r = c.post("/api/v1/envs/web/app", params={"filename": "requirements.txt"}, content=body)
        assert r.status_code == 201, r.text
        assert r.json()["ref"] == "web/app@1"
        assert c.get("/api/v1/envs/web/app/1/file").content == body
        assert [v["version"] for v in c.get("/api/v1/envs/web/app").json()] == [1]
        assert c.post("/api/v1/envs/web/app", content=body).status_code == 400  # no filename
    with srv.http(ops) as c:
        assert c.get("/api/v1/envs/web/app/1").status_code == 403
        assert c.get("/api/v1/envs").json() == []  # ops sees only its own team's

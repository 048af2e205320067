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


def test_conda_lock_against_a_filtered_channel_never_picks_a_blocked_record(
    server: Server, tmp_path: Path
) -> None:
    """`env lock --channel`: rattler solves environment.yml against the channel as served
    (policy-filtered); the explicit lock names token-free URLs whose bytes match their md5; a
    stricter policy later turns the stored environment red with the rule."""
    import hashlib

    from tests.conda_builders import build_conda

    srv = server
    dist = tmp_path / "dist"
    pkgs = [
        build_conda(dist, "lib", "1.0"),
        build_conda(dist, "lib", "1.5"),  # the newest allowed by app's pin, but denied
        build_conda(dist, "app", "2.0", subdir="linux-64", depends=["lib >=1.0,<2"]),
    ]
    srv.cli("conda", "channel", "create", "internal", "--private")
    srv.cli("conda", "upload", "-c", "internal", *(str(p) for p in pkgs))
    policy = tmp_path / "p.toml"
    policy.write_text('[[rules]]\nkind = "names"\ndeny = ["lib==1.5"]\n')
    srv.cli("policy", "set", "internal", "--file", str(policy))
    srv.cli("team", "create", "data")
    env_yml = tmp_path / "environment.yml"
    env_yml.write_text("name: analysis\nchannels:\n  - conda-forge\ndependencies:\n  - app\n")
    made = cli_json(
        srv, "env", "lock", "data/analysis", str(env_yml), "--channel", "internal",
        "--platform", "linux-64", "--url", srv.url,
    )  # fmt: skip
    assert made["status"] == "green", made["problems"]
    assert made["kind"] == "conda-explicit"
    assert {(p["name"], p["version"]) for p in made["packages"]} == {
        ("app", "2.0"),
        ("lib", "1.0"),
    }
    lock = srv.cli("env", "pull", "data/analysis").stdout
    assert "@EXPLICIT" in lock and "/t/" not in lock and "lib-1.5" not in lock
    urls = [line for line in lock.splitlines() if line.startswith("http")]
    assert len(urls) == 2
    token = srv.token("internal")
    host = srv.url.split("://", 1)[1]
    with srv.http() as c:
        for line in urls:
            url, md5 = line.split("#")
            assert url.startswith(f"{srv.url}/conda/internal/")
            r = c.get(url.replace(f"//{host}/", f"//{host}/t/{token}/"))
            assert r.status_code == 200 and hashlib.md5(r.content).hexdigest() == md5
    # lib 1.0 blocked too: the stored environment turns red, naming the rule
    policy.write_text('[[rules]]\nkind = "names"\ndeny = ["lib<2"]\n')
    srv.cli("policy", "set", "internal", "--file", str(policy))
    shown = cli_json(srv, "env", "show", "data/analysis")
    assert shown["status"] == "red", shown
    (problem,) = shown["problems"]["lib==1.0"]
    assert problem["kind"] == "policy" and "lib<2" in problem["message"]
    # bad input: both or neither target, a pip section, a PyPI index as channel
    both = srv.cli("env", "lock", "data/x", str(env_yml), check=False)
    assert both.returncode != 0 and "exactly one of --index" in both.stderr
    pip_yml = tmp_path / "pip.yml"
    pip_yml.write_text("dependencies:\n  - app\n  - pip:\n    - requests==2.31.0\n")
    bad = srv.cli("env", "lock", "data/x", str(pip_yml), "--channel", "internal", check=False)
    assert bad.returncode != 0 and "`pip:` section" in bad.stderr
    srv.cli("index", "create", "py", "--private")
    wrong = srv.cli("env", "lock", "data/x", str(env_yml), "--channel", "py", check=False)
    assert wrong.returncode != 0 and "not a conda channel" in wrong.stderr
    assert "data/x" not in srv.cli("env", "list").stdout

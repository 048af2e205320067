"""SBOMs through a real server (SQLite and PostgreSQL): an index as its policy serves it, what a
token and a team downloaded, the curated VEX feed, the lock-file API, `sbom scan`; and an
installed virtualenv compared with `cyclonedx-py environment`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from tests.builders import build_wheel
from tests.conftest import STOCKADE, Server, UpstreamSet, client_env
from tests.integration.test_vulndb import FEED, record, write_feed

CDX = JsonStrictValidator(SchemaVersion.V1_6)


def valid_cyclonedx(text: str) -> dict[str, Any]:
    assert CDX.validate_str(text) is None
    doc: dict[str, Any] = json.loads(text)
    return doc


def valid_spdx(text: str, tmp_path: Path, name: str = "doc.spdx.json") -> Any:
    path = tmp_path / name
    path.write_text(text)
    doc = parse_file(str(path))
    assert [m.validation_message for m in validate_full_spdx_document(doc)] == []
    return doc


def test_index_downloads_vex_and_lock_file_api(
    server: Server, upstream: UpstreamSet, tmp_path: Path
) -> None:
    feed = [*FEED, record("TEST-9", "gamma", [{"introduced": "0"}, {"fixed": "5.0"}])]
    server.cli("vulndb", "import", str(write_feed(tmp_path / "feed", feed)))
    server.cli("index", "create", "m", "--mirror", upstream.upstream.simple_url)
    policy = tmp_path / "policy.toml"
    policy.write_text('[[rules]]\nkind = "names"\ndeny = ["beta"]\n')
    server.cli("policy", "set", "m", "--file", str(policy))
    server.cli("team", "create", "data")
    server.cli("team", "grant", "data", "m", "--scope", "read")
    mine = json.loads(server.cli("token", "create", "--index", "m", "--json").stdout)
    team_tok = json.loads(
        server.cli("token", "create", "--index", "m", "--team", "data", "--json").stdout
    )
    with server.http(mine["token"]) as c:
        for project in ("alpha", "beta", "gamma"):
            assert c.get(f"/pypi/m/simple/{project}/").status_code == 200
        assert c.get("/pypi/m/files/alpha/alpha-1.1-py3-none-any.whl").status_code == 200
    with server.http(team_tok["token"]) as c:
        assert c.get("/pypi/m/files/gamma/gamma-1.0-py3-none-any.whl").status_code == 200

    # the index as its policy serves it: beta is blocked, so it is not in the SBOM
    with server.http(mine["token"]) as c:
        got = c.get("/api/v1/indexes/m/sbom", params={"format": "cyclonedx", "with_vulns": "1"})
        assert got.status_code == 200, got.text
        doc = valid_cyclonedx(got.text)
        names = {(x["name"], x["version"]) for x in doc["components"]}
        assert ("alpha", "1.1") in names and ("gamma", "1.0") in names
        assert not any(n == "beta" for n, _ in names)
        gamma = next(x for x in doc["components"] if x["name"] == "gamma")
        assert gamma["hashes"][0]["alg"] == "SHA-256"
        assert gamma["purl"] == "pkg:pypi/gamma@1.0"
        assert {v["id"] for v in doc["vulnerabilities"]} == {"TEST-9"}
        spdx = c.get("/api/v1/indexes/m/sbom", params={"format": "spdx"})
        assert {p.name for p in valid_spdx(spdx.text, tmp_path).packages} == {"alpha", "gamma"}
        assert c.get("/api/v1/indexes/nope/sbom").status_code in (403, 404)
        bad = c.get("/api/v1/indexes/m/sbom", params={"format": "xml"})
        assert bad.status_code == 400 and "cyclonedx" in bad.json()["hint"]
    assert httpx.get(f"{server.url}/api/v1/indexes/m/sbom").status_code == 401

    # downloads: of one token, of a team
    out = server.cli(
        "sbom", "create", "--downloads", "--token", mine["id"], "--since", "1d", "--format", "spdx"
    ).stdout
    packages = valid_spdx(out, tmp_path, "mine.spdx.json").packages
    assert [(p.name, p.file_name) for p in packages] == [("alpha", "alpha-1.1-py3-none-any.whl")]
    assert packages[0].checksums  # the stored file's sha256
    out = server.cli("sbom", "create", "--downloads", "--team", "data", "--since", "1h").stdout
    assert [x["name"] for x in valid_cyclonedx(out)["components"]] == ["gamma"]
    none = server.cli("sbom", "create", "--downloads", "--team", "nobody", check=False)
    assert none.returncode == 2 and "no team named 'nobody'" in none.stderr
    index_cli = server.cli("sbom", "create", "--index", "m", "--format", "spdx-tv").stdout
    assert "PackageName: gamma" in index_cli and "PackageName: beta" not in index_cli

    # the curated VEX feed
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {server.admin_token}"}
    ) as admin:
        cur = admin.post(
            "/api/v1/vulns/TEST-9/curations",
            json={
                "package": "gamma",
                "versions": "<2",
                "status": "not_affected",
                "justification": "vulnerable_code_not_in_execute_path",
                "reason": "we never call it",
            },
        )
        assert cur.status_code == 201, cur.text
    with server.http(mine["token"]) as c:
        vex = c.get("/api/v1/indexes/m/vex")
        assert vex.status_code == 200 and vex.headers["content-type"].startswith(
            "application/openvex+json"
        )
        st = vex.json()["statements"]
        assert [(s["vulnerability"]["name"], s["status"], s["justification"]) for s in st] == [
            ("TEST-9", "not_affected", "vulnerable_code_not_in_execute_path")
        ]
        assert st[0]["products"] == [{"@id": "pkg:pypi/gamma@1.0"}]  # 9.0 is not covered
        assert c.get("/api/v1/indexes/m/vex").text == vex.text  # stable while nothing changes
        # CycloneDX VEX of the index now carries the analysis
        doc = valid_cyclonedx(c.get("/api/v1/indexes/m/sbom", params={"with_vulns": "true"}).text)
        [v] = doc["vulnerabilities"]
        assert v["analysis"]["state"] == "not_affected"
        # a lock file posted to the API
        posted = c.post(
            "/api/v1/sbom",
            params={"filename": "requirements.txt", "with_vulns": "1", "reproducible": "1"},
            content=b"alpha-pkg==1.0\nbeta==3.1\nunpinned-thing>=1\n",
        )
        assert posted.status_code == 200, posted.text
        doc = valid_cyclonedx(posted.text)
        assert {v["id"] for v in doc["vulnerabilities"]} == {"TEST-1", "TEST-3"}
        again = c.post(
            "/api/v1/sbom",
            params={"filename": "requirements.txt", "with_vulns": "1", "reproducible": "1"},
            content=b"alpha-pkg==1.0\nbeta==3.1\nunpinned-thing>=1\n",
        )
        assert again.text == posted.text
        openvex = c.post(
            "/api/v1/sbom", params={"format": "openvex"}, content=b"alpha-pkg==1.0\n"
        ).json()
        assert [s["vulnerability"]["name"] for s in openvex["statements"]] == ["TEST-1"]
        broken = c.post("/api/v1/sbom", params={"filename": "uv.lock"}, content=b"version = [")
        assert broken.status_code == 400 and "uv.lock" in broken.json()["error"]
        sneaky = c.post("/api/v1/sbom", content=b"-r /etc/passwd\n")
        assert sneaky.status_code == 400

    # sbom scan: ours, and a foreign CycloneDX document
    ours = tmp_path / "ours.json"
    ours.write_text(posted.text)
    res = server.cli("sbom", "scan", str(ours), "--json", check=False)
    assert res.returncode == 1
    assert {f["id"] for f in json.loads(res.stdout)["findings"]} == {"TEST-1", "TEST-3"}
    foreign = tmp_path / "foreign.json"
    foreign.write_text(
        json.dumps(
            {
                "bomFormat": "CycloneDX",
                "specVersion": "1.5",
                "components": [{"name": "x", "purl": "pkg:pypi/gamma@1.0"}],
            }
        )
    )
    res = server.cli("sbom", "scan", str(foreign), check=False)
    assert res.returncode == 0, res.stdout + res.stderr  # curated not_affected: does not fail
    assert "not_affected" in res.stdout
    bad = server.cli("sbom", "scan", str(tmp_path / "policy.toml"), check=False)
    assert bad.returncode == 2 and "policy.toml: not JSON" in bad.stderr


def _venv(tmp_path: Path) -> Path:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    build_wheel(wheels, "alpha", "1.0", license="MIT", headers=["Author-email: A <a@x.org>"])
    build_wheel(
        wheels,
        "beta_lib",
        "2.0",
        requires_dist=["alpha>=1", 'gamma; extra == "full"'],
        headers=["License-Expression: Apache-2.0 OR MIT"],
    )
    build_wheel(
        wheels,
        "gamma",
        "3.0",
        headers=["Classifier: License :: OSI Approved :: BSD License", "Author: G"],
    )
    build_wheel(wheels, "delta", "0.1", license="Proprietary; see LICENSE.txt")
    venv = tmp_path / "venv"
    env = client_env()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--isolated",
            "--no-index",
            "--find-links",
            str(wheels),
            "beta-lib",
            "gamma",
            "delta",
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    return venv


def test_virtualenv_matches_cyclonedx_py(tmp_path: Path) -> None:
    venv = _venv(tmp_path)
    env = client_env(STOCKADE_HOME=str(tmp_path / "home"))  # never initialized: not needed
    ours_text = subprocess.run(
        [STOCKADE, "sbom", "create", "--env", str(venv), "--format", "cyclonedx"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    ours = valid_cyclonedx(ours_text)
    theirs = json.loads(
        subprocess.run(
            [
                str(Path(sys.executable).parent / "cyclonedx-py"),
                "environment",
                str(venv / "bin" / "python"),
                "--output-format",
                "JSON",
                "--spec-version",
                "1.6",
            ],
            env=dict(os.environ, PIP_CONFIG_FILE="/dev/null"),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )

    def key(c: dict[str, Any]) -> tuple[str, str]:
        return c["name"].lower().replace("_", "-"), c["version"]

    assert {key(c) for c in ours["components"]} == {key(c) for c in theirs["components"]}

    def count(doc: dict[str, Any], field: str) -> int:
        return sum(1 for c in doc["components"] if c.get(field))

    for field in ("licenses", "hashes", "purl"):
        assert count(ours, field) >= count(theirs, field), field
    by = {c["name"]: c for c in ours["components"]}
    assert by["gamma"]["licenses"][0]["license"]["id"] == "BSD-3-Clause"
    assert by["delta"]["licenses"][0]["license"]["name"].startswith("Proprietary")
    deps = {d["ref"]: d.get("dependsOn", []) for d in ours["dependencies"]}
    assert deps[by["beta-lib"]["bom-ref"]] == [by["alpha"]["bom-ref"]]  # extras not followed
    spdx = subprocess.run(
        [STOCKADE, "sbom", "create", "--env", str(venv), "--format", "spdx", "--reproducible"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    doc = valid_spdx(spdx, tmp_path)
    assert {p.name for p in doc.packages} == set(by)
    out = tmp_path / "again.json"
    subprocess.run(
        [
            *(STOCKADE, "sbom", "create", "--env", str(venv)),
            *("--format", "spdx", "--reproducible", "--output", str(out)),
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    assert out.read_text() == spdx  # byte-identical
    wheel = next((tmp_path / "wheels").glob("alpha-*.whl"))
    one = subprocess.run(
        [STOCKADE, "sbom", "create", "--wheel", str(wheel), "--format", "spdx-tv"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "PackageName: alpha" in one and "PackageChecksum: SHA256:" in one

"""``stockade inspect`` as scripts run it: files and folders, --json lines, exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.conftest import STOCKADE, client_env
from tests.unit.threats.builders import b64, sdist, setup_py, wheel


def inspect(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STOCKADE, "inspect", *args],
        env=client_env(STOCKADE_HOME=str(home)),  # never initialised: inspect needs no server
        capture_output=True,
        text=True,
        timeout=120,
    )


def fixtures(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True, exist_ok=True)
    paths = {
        "malicious": root / "evil-1.0.tar.gz",
        "suspicious": root / "hook-1.0-py3-none-any.whl",
        "clean": root / "fine-1.0-py3-none-any.whl",
    }
    paths["malicious"].write_bytes(
        sdist({"setup.py": setup_py(f"import base64\nexec(base64.b64decode('{b64('x=1')}'))")})
    )
    hook = "https://discord.com/api/webhooks/123456789012345678/" + "aB3dE5fG7h" * 6
    paths["suspicious"].write_bytes(wheel({"hook/config.py": f"URL = '{hook}'\n"}))
    paths["clean"].write_bytes(wheel({"fine/__init__.py": "def f():\n    return 1\n"}))
    return paths


def test_json_lines_and_exit_codes(tmp_path: Path) -> None:
    p = fixtures(tmp_path / "in")
    res = inspect("--json", str(tmp_path / "in"), home=tmp_path / "h")
    assert res.returncode == 1, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    by_file = {Path(x["file"]).name: x for x in lines}
    assert set(by_file) == {q.name for q in p.values()}
    assert by_file[p["malicious"].name]["verdict"] == "malicious"
    assert by_file[p["suspicious"].name]["verdict"] == "suspicious"
    assert by_file[p["clean"].name]["verdict"] == "clean"
    evil = by_file[p["malicious"].name]
    assert set(evil) >= {"file", "sha256", "verdict", "score", "findings"}
    f0 = evil["findings"][0]
    assert f0["rule"] == "exec-decoded-payload"
    assert f0["severity"] == "critical"
    assert f0["path"].endswith("setup.py")
    assert f0["line"] == 3
    assert "b64decode" in f0["snippet"]
    assert res.stderr == ""  # no progress bar when stderr is not a terminal


def test_fail_on_levels(tmp_path: Path) -> None:
    p = fixtures(tmp_path / "in")
    home = tmp_path / "h"
    assert inspect(str(p["clean"]), home=home).returncode == 0
    assert inspect(str(p["suspicious"]), home=home).returncode == 1
    assert inspect("--fail-on", "malicious", str(p["suspicious"]), home=home).returncode == 0
    assert inspect("--fail-on", "malicious", str(p["malicious"]), home=home).returncode == 1
    assert inspect("--fail-on", "never", str(p["malicious"]), home=home).returncode == 0
    bad = inspect("--fail-on", "sometimes", str(p["clean"]), home=home)
    assert bad.returncode == 2


def test_table_output(tmp_path: Path) -> None:
    p = fixtures(tmp_path / "in")
    res = inspect(str(p["malicious"]), str(p["clean"]), home=tmp_path / "h")
    assert res.returncode == 1
    assert "malicious" in res.stdout
    assert "exec-decoded-payload" in res.stdout
    assert "2 files: 1 malicious, 0 suspicious, 1 clean" in res.stdout


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    res = inspect(str(tmp_path / "nope.whl"), home=tmp_path / "h")
    assert res.returncode == 2
    assert "no such file" in res.stderr


def test_parallel_jobs(tmp_path: Path) -> None:
    fixtures(tmp_path / "in")
    res = inspect("--json", "-j", "2", str(tmp_path / "in"), home=tmp_path / "h")
    assert res.returncode == 1
    assert len(res.stdout.splitlines()) == 3

# ruff: noqa: RUF001  (lookalike letters, on purpose)
"""``stockade names check|refresh`` as scripts use them: exit codes, --json, the admin's list."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import STOCKADE, client_env


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [STOCKADE, *args],
        env=client_env(STOCKADE_HOME=str(home)),
        capture_output=True,
        text=True,
        timeout=60,
    )


def top_pypi(path: Path, rows: list[tuple[str, int]]) -> Path:
    doc: dict[str, Any] = {
        "last_update": "2026-04-01 06:34:06",
        "source": "ClickHouse",
        "rows": [{"project": p, "download_count": d} for p, d in rows],
    }
    path.write_text(json.dumps(doc), "utf-8")
    return path


def test_check_exit_codes_and_table(tmp_path: Path) -> None:
    res = cli(tmp_path, "names", "check", "reqeusts", "requests", "some-new-project")
    assert res.returncode == 1, res.stderr  # a malicious-tier finding
    assert "reqeusts" in res.stdout and "requests" in res.stdout
    assert "malicious" in res.stdout and "swap" in res.stdout
    assert "requests: popular project (#" in res.stdout
    assert "some-new-project: no lookalike of a popular project" in res.stdout

    res = cli(tmp_path, "names", "check", "reqests")
    assert res.returncode == 2, res.stdout  # suspicious only
    assert "suspicious" in res.stdout

    res = cli(tmp_path, "names", "check", "requests", "django", "some-new-project")
    assert res.returncode == 0, res.stdout
    assert res.stderr == ""


def test_check_json(tmp_path: Path) -> None:
    res = cli(tmp_path, "names", "check", "--json", "requеsts", "reqests", "pytest-xdist", "zzz")
    assert res.returncode == 1
    out = json.loads(res.stdout)
    assert [r["name"] for r in out] == ["requеsts", "reqests", "pytest-xdist", "zzz"]
    assert [r["verdict"] for r in out] == ["malicious", "suspicious", "ok", "ok"]
    homoglyph = out[0]["findings"][0]
    assert homoglyph["target"] == "requests"
    assert homoglyph["technique"] == "homoglyph"
    assert homoglyph["tier"] == "malicious"
    assert set(homoglyph) == {
        "name",
        "target",
        "technique",
        "distance",
        "target_rank",
        "target_downloads",
        "severity",
        "tier",
        "message",
    }
    assert out[2]["popular_rank"] is not None and out[2]["findings"] == []
    assert out[3]["popular_rank"] is None


def test_refresh_installs_the_admins_list(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    rows = [("zorbulator", 900_000_000)] + [(f"filler-{i:03d}", 1_000_000 - i) for i in range(120)]
    source = top_pypi(tmp_path / "top-pypi-packages.json", rows)

    res = cli(home, "names", "refresh", "--from", str(source), "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["projects"] == 121
    assert summary["first"] == "zorbulator"
    written = home / "popular_pypi.txt"
    assert summary["path"] == str(written)
    text = written.read_text("utf-8")
    assert "hugovk/top-pypi-packages" in text
    assert "last_update 2026-04-01 06:34:06" in text
    assert "\nzorbulator 900000000\n" in text

    # the refreshed list is used: a typo of its top name is flagged, of requests no longer
    res = cli(home, "names", "check", "--json", "zorbulaotr", "reqeusts")
    assert res.returncode == 1, res.stdout
    out = json.loads(res.stdout)
    assert out[0]["findings"][0]["target"] == "zorbulator"
    assert out[0]["findings"][0]["target_rank"] == 1
    assert out[1]["findings"] == []

    # --top keeps the most downloaded
    res = cli(home, "names", "refresh", "--from", str(source), "--top", "100")
    assert res.returncode == 0, res.stderr
    assert "wrote 100 popular projects" in res.stdout


def test_refresh_to_a_path_and_check_with_list(tmp_path: Path) -> None:
    rows = [("zorbulator", 900_000_000)] + [(f"filler-{i:03d}", 1_000_000 - i) for i in range(120)]
    source = top_pypi(tmp_path / "top.json", rows)
    out = tmp_path / "lists" / "popular.txt"
    res = cli(tmp_path / "nohome", "names", "refresh", "--from", str(source), "--output", str(out))
    assert res.returncode == 0, res.stderr
    assert out.is_file()
    res = cli(tmp_path / "nohome", "names", "check", "--list", str(out), "zorbulatorr")
    assert res.returncode == 1, res.stdout
    assert "zorbulator" in res.stdout


def test_errors_exit_3(tmp_path: Path) -> None:
    res = cli(tmp_path / "missing-home", "names", "refresh", "--from", str(tmp_path / "x.json"))
    assert res.returncode == 3
    assert "does not exist" in res.stderr and "stockade init" in res.stderr

    home = tmp_path / "home"
    home.mkdir()
    res = cli(home, "names", "refresh", "--from", str(tmp_path / "absent.json"))
    assert res.returncode == 3
    assert "cannot use" in res.stderr

    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": [{"project": 1}]}', "utf-8")
    res = cli(home, "names", "refresh", "--from", str(bad))
    assert res.returncode == 3
    assert "rows[0]" in res.stderr
    assert not (home / "popular_pypi.txt").exists()

    broken = tmp_path / "broken.txt"
    broken.write_text("requests many downloads\n", "utf-8")
    res = cli(home, "names", "check", "--list", str(broken), "reqeusts")
    assert res.returncode == 3
    assert "cannot read the popular-names list" in res.stderr
    assert res.stdout == ""

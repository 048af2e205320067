"""The web console at ``/ui/``: server-rendered pages over the same services as the CLI.

Security model (docs/console.md):

* Accounts are ``console_users`` (``stockade console user add``), role ``admin`` or ``viewer``.
  A login creates a server-side session (``services/console.py``); the cookie holds a random
  secret (HttpOnly, SameSite=Strict, Path=/ui, Secure over https) and expires with the session.
* Every POST carries the session's CSRF token in a hidden field; a POST without it, or with
  another, is refused with 403 before anything is read or changed. The login form has its
  own token (a cookie and a field that must match) since there is no session yet.
* A viewer can read every page and change nothing: a change checks the role on the server.
* Changes call the same services as the CLI and the JSON API, and are audit events whose
  actor is ``console:<user>``.
* Templates are Jinja2 with autoescaping on for every template; no value is marked safe. The
  Content-Security-Policy allows scripts and styles only from this server (no inline code).
"""

from __future__ import annotations

import email.parser
import email.policy
import functools
import hmac
import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from stockade import __version__
from stockade.core.auth import parse_when
from stockade.core.simple import version_key
from stockade.errors import Forbidden, InvalidRequest, NotFound, StockadeError
from stockade.services.audit import query_events
from stockade.services.console import ConsoleSession
from stockade.services.files import StoredFile
from stockade.services.repo import IndexInfo, utcnow
from stockade.services.runtime import Runtime
from stockade.services.vulndb import JUSTIFICATIONS, RATINGS, STATUSES
from stockade.types import IndexKind, canonicalize_name
from stockade.web.identity import client_addr

HERE = Path(__file__).parent
COOKIE = "stockade_console"
LOGIN_COOKIE = "stockade_console_login"
VERSIONS_PER_PAGE = 25
PROJECTS_PER_PAGE = 200
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

Handler = Callable[[Request, ConsoleSession], Awaitable[Response]]


def _when(value: object) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    text = str(value)
    return text[:19].replace("T", " ")


def _size(value: object) -> str:
    if not isinstance(value, int):
        return ""
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every template, whatever its name
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
env.filters["when"] = _when
env.filters["size"] = _size
env.globals["version"] = __version__


def rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def render(
    request: Request,
    template: str,
    sess: ConsoleSession | None,
    status: int = 200,
    **ctx: Any,
) -> HTMLResponse:
    body = env.get_template(template).render(
        user=sess.user if sess else None,
        csrf=sess.csrf if sess else "",
        path=request.url.path,
        **ctx,
    )
    return HTMLResponse(body, status, headers=SECURITY_HEADERS)


def _error_page(request: Request, sess: ConsoleSession | None, exc: StockadeError) -> Response:
    return render(
        request,
        "error.html",
        sess,
        status=exc.http_status,
        message=exc.message,
        hint=exc.hint,
        status_code=exc.http_status,
    )


async def current_session(request: Request) -> ConsoleSession | None:
    rt(request).check_invalidation()
    secret = request.cookies.get(COOKIE)
    return await rt(request).console.session(secret) if secret else None


def _to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    resp = RedirectResponse(f"/ui/login?{urlencode({'next': target})}", 303)
    resp.delete_cookie(COOKIE, path="/ui")
    return resp


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """A page any signed-in console user may read."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        sess = await current_session(request)
        if sess is None:
            return _to_login(request)
        try:
            return await handler(request, sess)
        except StockadeError as exc:
            return _error_page(request, sess, exc)

    return wrapped


async def _form(request: Request) -> FormData:
    try:
        return await request.form(max_files=0, max_fields=100, max_part_size=64 * 1024)
    except Exception as exc:
        raise InvalidRequest(f"the form could not be read: {exc}") from exc


def _csrf_ok(given: object, expected: str) -> bool:
    return isinstance(given, str) and bool(given) and hmac.compare_digest(given, expected)


def action(handler: Callable[[Request, ConsoleSession, FormData], Awaitable[Response]]) -> Any:
    """A POST that changes something: a session, its CSRF token and the admin role."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        sess = await current_session(request)
        if sess is None:
            return Response(
                "not signed in (or the session expired): sign in again at /ui/login\n",
                401,
                headers=SECURITY_HEADERS,
                media_type="text/plain",
            )
        try:
            form = await _form(request)
            if not _csrf_ok(form.get("csrf"), sess.csrf):
                raise Forbidden(
                    "the form's CSRF token is missing or wrong",
                    "reload the page and submit the form again",
                )
            if not sess.user.is_admin:
                raise Forbidden(
                    f"console user {sess.user.username!r} is a viewer",
                    "changes need an admin console account",
                )
            return await handler(request, sess, form)
        except StockadeError as exc:
            return _error_page(request, sess, exc)

    return wrapped


def _field(form: FormData, key: str) -> str | None:
    value = form.get(key)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def _back(url: str) -> Response:
    return RedirectResponse(url, 303)


# -- login and logout --------------------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    if value and value.startswith("/ui/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui/"


async def login(request: Request) -> Response:
    runtime = rt(request)
    if request.method == "GET":
        if await current_session(request) is not None:
            return _back(_safe_next(request.query_params.get("next")))
        return _login_form(request, next_url=request.query_params.get("next"))
    form = await _form(request)
    cookie_token = request.cookies.get(LOGIN_COOKIE, "")
    if not cookie_token or not _csrf_ok(form.get("csrf"), cookie_token):
        return _login_form(
            request,
            status=403,
            error="the login form expired or is not from this server: try again",
        )
    username = _field(form, "username") or ""
    password = form.get("password")
    next_url = _safe_next(_field(form, "next"))
    try:
        secret, _ = await runtime.console.login(
            username, password if isinstance(password, str) else "", client_addr(request)
        )
    except StockadeError as exc:
        return _login_form(
            request,
            status=exc.http_status,
            error=exc.one_line(),
            username=username,
            next_url=next_url,
        )
    resp = RedirectResponse(next_url, 303)
    resp.set_cookie(
        COOKIE,
        secret,
        max_age=runtime.console.ttl,
        path="/ui",
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )
    resp.delete_cookie(LOGIN_COOKIE, path="/ui/login")
    return resp


def _login_form(
    request: Request,
    *,
    status: int = 200,
    error: str | None = None,
    username: str = "",
    next_url: str | None = None,
) -> Response:
    token = secrets.token_urlsafe(32)
    resp = render(
        request,
        "login.html",
        None,
        status=status,
        login_csrf=token,
        error=error,
        username=username,
        next_url=_safe_next(next_url),
    )
    resp.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=3600,
        path="/ui/login",
        secure=_secure(request),
        httponly=True,
        samesite="strict",
    )
    return resp


async def logout(request: Request) -> Response:
    """Any signed-in user (viewers too) may end their session; the CSRF token is checked."""
    sess = await current_session(request)
    if sess is not None:
        form = await _form(request)
        if not _csrf_ok(form.get("csrf"), sess.csrf):
            return _error_page(
                request,
                sess,
                Forbidden("the form's CSRF token is missing or wrong", "reload and try again"),
            )
        await rt(request).console.logout(sess, client_addr(request))
    resp = RedirectResponse("/ui/login", 303)
    resp.delete_cookie(COOKIE, path="/ui")
    return resp


# -- indexes and projects ----------------------------------------------------------------------


@page
async def home(request: Request, sess: ConsoleSession) -> Response:
    runtime = rt(request)
    indexes = await runtime.indexes.list()
    channels = {c.name: c for c in await runtime.conda.channels()}
    pypi = [i for i in indexes if not i.kind.is_conda]
    conda = [(i, channels[i.name].subdirs if i.name in channels else ()) for i in indexes]
    conda = [(i, s) for i, s in conda if i.kind.is_conda]
    return render(request, "home.html", sess, indexes=pypi, channels=conda)


@page
async def index_page(request: Request, sess: ConsoleSession) -> Response:
    runtime = rt(request)
    index = await runtime.indexes.get(request.path_params["index"])
    policy = None
    try:
        policy = await runtime.policies.show(index.name)
    except NotFound:
        policy = None
    exceptions = await runtime.policies.exceptions(index.name)
    approvals = await runtime.policies.approvals(index.name)
    requests_ = await runtime.policies.requests(index.name)
    q = (request.query_params.get("q") or "").strip().lower()
    projects: list[str] = []
    packages: list[Any] = []
    subdirs: tuple[str, ...] = ()
    verdicts: dict[tuple[str, str], Any] = {}
    error = None
    if index.kind.is_conda:
        ch = await runtime.conda.as_channel(index)
        subdirs = ch.subdirs
        packages = await runtime.conda.packages(ch, name=q or None)
        packages = packages[:PROJECTS_PER_PAGE]
        try:
            verdicts = await runtime.conda.verdicts(ch, packages)
        except StockadeError as exc:
            error = exc.one_line()
    else:
        try:
            projects = await runtime.pages.project_list(index)
        except StockadeError as exc:
            error = exc.one_line()
        if q:
            projects = [p for p in projects if q in p]
    page_no = _int(request.query_params.get("page"), 1)
    shown = projects[(page_no - 1) * PROJECTS_PER_PAGE : page_no * PROJECTS_PER_PAGE]
    return render(
        request,
        "index.html",
        sess,
        index=index,
        policy=policy,
        exceptions=exceptions,
        approvals=approvals,
        access_requests=requests_,
        projects=shown,
        total=len(projects),
        page_no=page_no,
        pages=max(1, -(-len(projects) // PROJECTS_PER_PAGE)),
        q=q,
        error=error,
        packages=packages,
        verdicts=verdicts,
        subdirs=subdirs,
        now=utcnow(),
    )


def _int(value: str | None, default: int, lo: int = 1, hi: int = 1_000_000) -> int:
    try:
        return max(lo, min(hi, int(value))) if value else default
    except ValueError:
        return default


@page
async def project_page(request: Request, sess: ConsoleSession) -> Response:
    runtime = rt(request)
    index = await runtime.indexes.get(request.path_params["index"])
    if index.kind.is_conda:
        raise NotFound(f"{index.name!r} is a conda channel", "its packages are on the channel page")
    raw = request.path_params["project"]
    project = canonicalize_name(raw)
    if raw != project:
        return _back(f"/ui/indexes/{index.name}/projects/{project}")
    only_version = request.query_params.get("version") or None
    only_blocked = request.query_params.get("blocked") == "1"
    served = await runtime.pages.project_page(index, project)
    rows = await runtime.pages.explain(index, project, only_version)
    entries = {f.filename: f for f in (served.unfiltered or served.page).files}
    entries.update({f.filename: f for f in served.page.files if f.filename not in entries})
    if only_blocked:
        rows = [r for r in rows if not r["allowed"]]
    by_version: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_version.setdefault(r["version"] or "?", []).append(r)
    versions = sorted(by_version, key=version_key, reverse=True)
    page_no = _int(request.query_params.get("page"), 1)
    pages = max(1, -(-len(versions) // VERSIONS_PER_PAGE))
    shown = versions[(page_no - 1) * VERSIONS_PER_PAGE : page_no * VERSIONS_PER_PAGE]
    files = [f for v in shown for f in by_version[v]]
    shas = [e.sha256 for f in files if (e := entries.get(f["filename"])) and e.sha256]
    scans = await runtime.threats.reports_many(shas)  # one query per 500 files
    meta = await _metadata(runtime, index, project, by_version, only_version)
    identity = None
    if index.kind is IndexKind.MIRROR:
        try:
            identity = await runtime.identity.report(index.name, project)
        except StockadeError:
            identity = None
    blocked_count = sum(1 for r in rows if not r["allowed"])
    return render(
        request,
        "project.html",
        sess,
        index=index,
        project=project,
        versions=shown,
        by_version=by_version,
        entries=entries,
        scans=scans,
        total_versions=len(versions),
        total_files=len(rows),
        blocked_count=blocked_count,
        page_no=page_no,
        pages=pages,
        only_version=only_version,
        only_blocked=only_blocked,
        meta=meta,
        identity=identity,
        stale=served.stale,
    )


async def _metadata(
    runtime: Runtime,
    index: IndexInfo,
    project: str,
    by_version: dict[str, list[dict[str, Any]]],
    version: str | None,
) -> dict[str, Any] | None:
    """Core metadata of one file of the selected version (the first allowed wheel)."""
    if version is None or version not in by_version:
        return None
    candidates = sorted(
        by_version[version], key=lambda r: (not r["allowed"], not r["filename"].endswith(".whl"))
    )
    errors = []
    for row in candidates[:3]:
        try:
            got = await runtime.files.metadata(index, canonicalize_name(project), row["filename"])
            data = runtime.store.read_bytes(got.sha256) if isinstance(got, StoredFile) else got
        except StockadeError as exc:
            errors.append(f"{row['filename']}: {exc.message}")
            continue
        msg = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(data[: 1024**2])
        body = msg.get_payload()
        description = str(msg.get("Description") or body or "")
        return {
            "file": row["filename"],
            "fields": [
                (k, str(msg.get(k)))
                for k in (
                    "Name",
                    "Version",
                    "Summary",
                    "Author",
                    "Author-email",
                    "Maintainer",
                    "License",
                    "License-Expression",
                    "Home-page",
                    "Requires-Python",
                )
                if msg.get(k)
            ],
            "requires": [str(r) for r in msg.get_all("Requires-Dist") or []][:100],
            "urls": [str(u) for u in msg.get_all("Project-URL") or []][:20],
            "description": description[:20_000],
            "truncated": len(description) > 20_000,
        }
    return {"error": "; ".join(errors) or "no metadata"}


# -- vulnerabilities ---------------------------------------------------------------------------


@page
async def vulns_page(request: Request, sess: ConsoleSession) -> Response:
    q = request.query_params
    package = (q.get("package") or "").strip() or None
    ecosystem = q.get("ecosystem") or "PyPI"
    limit = _int(q.get("limit"), 100, 1, 2000)
    rows = await rt(request).vulns.list_advisories(
        package=package, ecosystem=ecosystem, limit=limit
    )
    return render(
        request,
        "vulns.html",
        sess,
        rows=rows,
        package=package or "",
        ecosystem=ecosystem,
        limit=limit,
    )


async def _vuln_page(
    request: Request, sess: ConsoleSession, ident: str, status: int = 200, **extra: Any
) -> Response:
    from stockade.services.response import affected_downloads

    runtime = rt(request)
    adv = await runtime.vulns.show(ident)
    downloads = None
    if request.query_params.get("downloads") == "1":  # walks download events: on demand
        await runtime.audit.flush()
        found = await affected_downloads(runtime.sessions, runtime.vulns, runtime.tokens, adv["id"])
        downloads = found["downloads"]
    ctx: dict[str, Any] = {
        "form": {},
        "error": None,
        "done": request.query_params.get("done") == "1",
    }
    ctx.update(extra)
    return render(
        request,
        "vuln.html",
        sess,
        status=status,
        adv=adv,
        downloads=downloads,
        statuses=STATUSES,
        justifications=JUSTIFICATIONS,
        ratings=RATINGS,
        **ctx,
    )


@page
async def vuln_page(request: Request, sess: ConsoleSession) -> Response:
    return await _vuln_page(request, sess, request.path_params["ident"])


@action
async def curate(request: Request, sess: ConsoleSession, form: FormData) -> Response:
    runtime = rt(request)
    ident = request.path_params["ident"]
    target = _field(form, "package") or ""
    ecosystem, _, package = target.partition("|")
    score_text = _field(form, "score")
    try:
        try:
            score = float(score_text) if score_text else None
        except ValueError as exc:
            raise InvalidRequest(f"score {score_text!r} is not a number", "e.g. 5.3") from exc
        status = _field(form, "status")
        c = await runtime.vulns.curate(
            ident,
            package=package,
            ecosystem=ecosystem or "PyPI",
            versions=_field(form, "versions"),
            status=None if status in (None, "keep") else status,
            justification=_field(form, "justification"),
            severity=_field(form, "severity"),
            score=score,
            reason=_field(form, "reason"),
            note=_field(form, "note"),
            author=sess.user.actor,
        )
    except (InvalidRequest, NotFound) as exc:
        if isinstance(exc, NotFound) and "no advisory" in exc.message:
            raise
        fields = {k: v for k, v in form.items() if k != "csrf" and isinstance(v, str)}
        return await _vuln_page(
            request, sess, ident, status=exc.http_status, form=fields, error=exc.one_line()
        )
    await runtime.curated(c, sess.user.actor, client_addr(request))
    return _back(f"/ui/vulns/{c.advisory_id}?done=1#history")


# -- threats -----------------------------------------------------------------------------------


@page
async def threats_page(request: Request, sess: ConsoleSession) -> Response:
    show_all = request.query_params.get("all") == "1"
    limit = _int(request.query_params.get("limit"), 200, 1, 2000)
    reports = await rt(request).threats.recent(limit=limit, flagged_only=not show_all)
    return render(request, "threats.html", sess, reports=reports, show_all=show_all, limit=limit)


@page
async def threat_page(request: Request, sess: ConsoleSession) -> Response:
    sha = request.path_params["sha256"].lower()
    report = await rt(request).threats.report(sha)
    if report is None:
        raise NotFound(f"no scan report for {sha}", "files are scanned when Stockade stores them")
    return render(request, "threat.html", sess, report=report)


# -- alerts and environments -------------------------------------------------------------------

ALERT_ACTIONS = ("alert.raised", "env.status", "threat.finding", "provenance.rejected")


@page
async def alerts_page(request: Request, sess: ConsoleSession) -> Response:
    """The alert feed (advisories affecting downloads, environment status changes, malware
    findings, refused provenance: audit events, newest first) and every environment's status."""
    runtime = rt(request)
    await runtime.audit.flush()
    limit = _int(request.query_params.get("limit"), 100, 1, 1000)
    events: list[dict[str, Any]] = []
    for action in ALERT_ACTIONS:
        events += [
            e
            async for e in query_events(
                runtime.sessions, action=action, limit=limit, newest_first=True
            )
        ]
    events.sort(key=lambda e: e["id"], reverse=True)
    envs = await runtime.envs.latest()
    envs.sort(key=lambda v: (v.status != "red", v.team, v.name))
    return render(request, "alerts.html", sess, events=events[:limit], envs=envs, limit=limit)


# -- tokens and teams --------------------------------------------------------------------------


@page
async def tokens_page(request: Request, sess: ConsoleSession) -> Response:
    runtime = rt(request)
    records = await runtime.tokens.list()
    now = utcnow()
    rows = []
    for rec in records:
        i = rec.info
        if i.revoked_at is not None:
            state = "revoked"
        elif i.expires_at is not None and i.expires_at <= now:
            state = "expired"
        else:
            state = "active"
        rows.append((rec, state))
    show = request.query_params.get("show", "active")
    if show == "active":
        rows = [r for r in rows if r[1] == "active"]
    return render(
        request, "tokens.html", sess, rows=rows, show=show, done=request.query_params.get("done")
    )


@action
async def revoke_token(request: Request, sess: ConsoleSession, form: FormData) -> Response:
    runtime = rt(request)
    token_id = request.path_params["token_id"]
    await runtime.tokens.revoke(token_id, actor=sess.user.actor)
    runtime.changed()
    return _back(f"/ui/tokens?{urlencode({'done': token_id})}")


@page
async def teams_page(request: Request, sess: ConsoleSession) -> Response:
    return render(request, "teams.html", sess, teams=await rt(request).teams.list())


# -- audit -------------------------------------------------------------------------------------

_AUDIT_FILTERS = ("actor", "index", "project", "action", "outcome", "since", "until")


@page
async def audit_page(request: Request, sess: ConsoleSession) -> Response:
    runtime = rt(request)
    await runtime.audit.flush()
    q = request.query_params
    filters = {k: (q.get(k) or "").strip() for k in (*_AUDIT_FILTERS, "team")}
    limit = _int(q.get("limit"), 100, 1, 1000)
    actors: set[str] | None = None
    if filters["team"]:
        await runtime.teams.show(filters["team"])
        actors = {t.info.id for t in await runtime.tokens.list(team=filters["team"])}
    if filters["actor"]:
        actors = {filters["actor"]} if actors is None else actors & {filters["actor"]}
    events = [
        e
        async for e in query_events(
            runtime.sessions,
            since=parse_when(filters["since"] or None, "since"),
            until=parse_when(filters["until"] or None, "until"),
            actors=actors,
            index=filters["index"] or None,
            project=filters["project"] or None,
            action=filters["action"] or None,
            outcome=filters["outcome"] or None,
            limit=limit,
            newest_first=True,
        )
    ]
    older = None
    if len(events) == limit:
        older = urlencode({**{k: v for k, v in filters.items() if v}, "until": events[-1]["at"]})
    verify = None
    if q.get("verify") == "1":
        verify = await runtime.audit.verify()
    return render(
        request,
        "audit.html",
        sess,
        events=events,
        filters=filters,
        limit=limit,
        older=older,
        verify=verify,
        verify_query=urlencode({**{k: v for k, v in filters.items() if v}, "verify": "1"}),
    )


# -- reports -----------------------------------------------------------------------------------


@page
async def reports_page(request: Request, sess: ConsoleSession) -> Response:
    indexes = [i for i in await rt(request).indexes.list() if not i.kind.is_conda]
    return render(request, "reports.html", sess, indexes=indexes)


_REPORT_CSP = {
    **SECURITY_HEADERS,
    # the SSDF page is self-contained: its own inline stylesheet, no script at all
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; "
        "base-uri 'none'; form-action 'none'"
    ),
}


@page
async def ssdf_report(request: Request, sess: ConsoleSession) -> Response:
    """The SSDF evidence report (services/ssdf.py, as `stockade report ssdf`), HTML or JSON."""
    from datetime import timedelta

    import orjson

    from stockade.services.ssdf import SsdfReport, render_html

    runtime = rt(request)
    q = request.query_params
    until = parse_when(q.get("to") or None, "to") or utcnow()
    since = parse_when(q.get("from") or None, "from") or until - timedelta(days=30)
    await runtime.audit.flush()
    report = await SsdfReport(runtime.sessions, runtime.audit).build(since, until)
    if q.get("format") == "json":
        name = f"ssdf-{since:%Y%m%d}-{until:%Y%m%d}.json"
        return Response(
            orjson.dumps(report, option=orjson.OPT_INDENT_2),
            headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'},
            media_type="application/json",
        )
    return HTMLResponse(render_html(report), headers=_REPORT_CSP)


_SBOM_EXT = {"cyclonedx": "cdx.json", "spdx": "spdx.json", "spdx-tv": "spdx", "openvex": "vex.json"}


@page
async def sbom_download(request: Request, sess: ConsoleSession) -> Response:
    """An index's SBOM (services/sbom.py, as ``GET /api/v1/indexes/<index>/sbom``), as a
    download; audited as ``sbom.create`` with the console user as actor."""
    import anyio

    from stockade.core.sbom.render import MEDIA_TYPES, check_format, render
    from stockade.core.sbom.spdx import Stamp
    from stockade.services.sbom import SbomService

    runtime = rt(request)
    index = await runtime.indexes.get(request.path_params["index"])
    fmt = check_format(request.query_params.get("format", "cyclonedx"))
    with_vulns = fmt == "openvex" or request.query_params.get("with_vulns") == "1"
    svc = SbomService(runtime)
    base = str(request.base_url).rstrip("/")
    bom = await svc.with_licenses(await svc.index_bom(index.name, base_url=base))
    if with_vulns:
        bom = await svc.with_vulns(bom)
    stamp = Stamp.make(bom, reproducible=False)
    text = await anyio.to_thread.run_sync(lambda: render(bom, fmt, stamp, with_vulns=with_vulns))
    runtime.audit.record(
        "sbom.create",
        actor=sess.user.actor,
        project=bom.name,
        format=fmt,
        kind=bom.kind,
        components=len(bom.components),
        vulnerabilities=len(bom.vulns),
    )
    name = f"{index.name}-sbom.{_SBOM_EXT.get(fmt, 'txt')}"
    return Response(
        text,
        headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'},
        media_type=MEDIA_TYPES[fmt],
    )


def _routes() -> list[Route | Mount]:
    return [
        Route("/", home),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/indexes/{index}", index_page),
        Route("/indexes/{index}/projects/{project}", project_page),
        Route("/vulns", vulns_page),
        Route("/vulns/{ident}", vuln_page),
        Route("/vulns/{ident}/curate", curate, methods=["POST"]),
        Route("/threats", threats_page),
        Route("/alerts", alerts_page),
        Route("/threats/{sha256}", threat_page),
        Route("/tokens", tokens_page),
        Route("/tokens/{token_id}/revoke", revoke_token, methods=["POST"]),
        Route("/teams", teams_page),
        Route("/audit", audit_page),
        Route("/reports", reports_page),
        Route("/reports/ssdf", ssdf_report),
        Route("/reports/sbom/{index}", sbom_download),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="console-static"),
    ]


async def _redirect_to_ui(request: Request) -> Response:
    return RedirectResponse("/ui/", 308)


def mount() -> list[Route | Mount]:
    """What ``create_app`` adds: ``/ui`` → ``/ui/``, and the console under ``/ui/``."""
    return [Route("/ui", _redirect_to_ui), Mount("/ui", routes=_routes())]

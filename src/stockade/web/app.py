"""The ASGI application: Simple API, file downloads, legacy uploads and the JSON admin API.

Handlers are thin: authenticate, call a service, render. Errors are StockadeError subclasses,
mapped to a status and a one-line reason by :func:`error_response`.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any

import anyio
import orjson
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Receive

from stockade import __version__
from stockade.adapters.storage import LocalBlobStore
from stockade.core import auth
from stockade.core.auth import TokenInfo
from stockade.core.provenance import MEDIA_TYPE as PROVENANCE_MEDIA
from stockade.core.simple import (
    JSON_V1,
    TEXT_HTML,
    negotiate,
    render_index_html,
    render_index_json,
    version_from_filename,
)
from stockade.errors import (
    AuthError,
    Forbidden,
    IntegrityError,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PolicyBlocked,
    StockadeError,
    Unavailable,
)
from stockade.services import repo
from stockade.services.files import StoredFile, Streaming
from stockade.services.repo import IndexInfo
from stockade.services.runtime import Runtime
from stockade.services.uploads import Digests, UploadForm
from stockade.settings import Settings
from stockade.types import IndexKind, Scope, canonicalize_name
from stockade.web import sbom_routes
from stockade.web.blobs import blob_response
from stockade.web.fast import FastPages
from stockade.web.identity import TokenPrefixMiddleware, client_addr, credentials
from stockade.web.metrics import Metrics, RequestMetrics

log = logging.getLogger("stockade.web")
GZIP_MIN = 1024
OCTET = "application/octet-stream"


def rt(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def error_response(exc: StockadeError, *, json: bool = False) -> Response:
    headers = {}
    if exc.http_status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="Stockade", charset="UTF-8"'
    elif isinstance(exc, Unavailable):
        headers["Retry-After"] = str(exc.retry_after)
    if json:
        body = orjson.dumps({"error": exc.message, "hint": exc.hint})
        return Response(body, exc.http_status, headers, media_type="application/json")
    return Response(exc.one_line() + "\n", exc.http_status, headers, media_type="text/plain")


async def identify(request: Request) -> TokenInfo | None:
    runtime = rt(request)
    runtime.check_invalidation()
    cred = credentials(request)
    if cred is None:
        return None
    if cred == "":
        raise AuthError("the Authorization header is malformed", "use Basic or Bearer")
    return await runtime.tokens.verify(cred)


async def authorized_index(
    request: Request, name: str, needed: Scope
) -> tuple[IndexInfo, TokenInfo | None]:
    runtime = rt(request)
    token: TokenInfo | None = None
    try:
        token = await identify(request)
        found = await runtime.indexes.find(name)
        if found is None:
            # Do not reveal which index names exist to callers who may not see them.
            if token is None:
                auth.authorize(None, index=name, needed=needed, now=repo.utcnow())
            elif token.index_name != auth.ALL_INDEXES or token.team is not None:
                auth.authorize(token, index=name, needed=needed, now=repo.utcnow())
            raise NotFound(f"no index named {name!r}", "check the URL: /pypi/<index>/simple/")
        index = found
        auth.authorize(
            token,
            index=index.name,
            needed=needed,
            now=repo.utcnow(),
            anonymous_read=index.anonymous_read,
        )
    except (AuthError, Forbidden) as exc:
        runtime.audit.record(
            "refused",
            actor=token.id if token else None,
            index=name,
            outcome="refused",
            client=client_addr(request),
            reason=exc.message,
            path=request.url.path,
            needed=needed.value,
        )
        raise
    return index, token


def _pypi_only(index: IndexInfo) -> IndexInfo:
    """PyPI routes serve PyPI indexes; a conda channel lives under /conda/."""
    if index.kind.is_conda:
        raise NotFound(
            f"{index.name!r} is a conda channel, not a PyPI index",
            f"conda clients use /conda/{index.name}/ (e.g. -c <server>/t/<token>/conda/"
            f"{index.name})",
        )
    return index


def _accepts_gzip(request: Request) -> bool:
    return "gzip" in request.headers.get("accept-encoding", "")


def _etag_matches(request: Request, *etags: str) -> bool:
    inm = request.headers.get("if-none-match")
    if not inm:
        return False
    given = {t.strip().removeprefix("W/") for t in inm.split(",")}
    return "*" in given or any(e in given for e in etags)


# -- Simple API --------------------------------------------------------------------------------


async def simple_index(request: Request) -> Response:
    index, _ = await authorized_index(request, request.path_params["index"], Scope.READ)
    _pypi_only(index)
    ctype = negotiate(request.headers.get("accept"), request.query_params.get("format"))
    if ctype is None:
        return Response("no acceptable content type\n", 406, media_type="text/plain")
    projects = await rt(request).pages.project_list(index)
    body = render_index_json(projects) if ctype == JSON_V1 else render_index_html(projects)
    return Response(body, headers={"Vary": "Accept"}, media_type=ctype)


async def simple_project(request: Request) -> Response:
    name = request.path_params["index"]
    raw = request.path_params["project"]
    project = canonicalize_name(raw)
    if raw != project or not request.url.path.endswith("/"):
        index, _ = await authorized_index(request, name, Scope.READ)
        target = f"../{project}/" if request.url.path.endswith("/") else f"{project}/"
        if request.url.query:
            target += "?" + request.url.query
        return Response(status_code=301, headers={"Location": target})
    index, _ = await authorized_index(request, name, Scope.READ)
    _pypi_only(index)
    ctype = negotiate(request.headers.get("accept"), request.query_params.get("format"))
    if ctype is None:
        return Response("no acceptable content type\n", 406, media_type="text/plain")
    served = await rt(request).pages.project_page(index, project)
    rendered = served.render(ctype)
    gz_tag = rendered.etag[:-1] + '-gz"'
    headers = {
        "ETag": rendered.etag,
        "Vary": "Accept, Accept-Encoding",
        "Cache-Control": "private, max-age=60",
    }
    if served.stale:
        headers["Warning"] = '110 - "Response is Stale"'
        headers["X-Stockade-Stale"] = served.stale.encode("ascii", "replace").decode()[:200]
    if _etag_matches(request, rendered.etag, gz_tag):
        return Response(status_code=304, headers=headers)
    body = rendered.body
    if len(body) >= GZIP_MIN and _accepts_gzip(request):
        body = rendered.gzipped()
        headers["Content-Encoding"] = "gzip"
        headers["ETag"] = gz_tag
    media = ctype if ctype != TEXT_HTML else "text/html; charset=utf-8"
    return Response(body, headers=headers, media_type=media)


# -- files -------------------------------------------------------------------------------------


async def download(request: Request) -> Response:
    index, token = await authorized_index(request, request.path_params["index"], Scope.READ)
    _pypi_only(index)
    project = canonicalize_name(request.path_params["project"])
    filename = request.path_params["filename"]
    runtime = rt(request)
    actor = token.id if token else None
    if filename.endswith(".metadata"):
        got = await runtime.files.metadata(index, project, filename[: -len(".metadata")])
        if isinstance(got, bytes):
            return Response(got, media_type="application/octet-stream")
        return await blob_response(runtime.store, got.sha256, media_type=OCTET)
    try:
        result = await runtime.files.open(index, project, filename)
        response = await _file_response(runtime, result, filename)
    except PolicyBlocked as exc:
        request.app.state.metrics.blocked(exc.rules)
        runtime.audit.record(
            "download",
            actor=actor,
            index=index.name,
            project=project,
            filename=filename,
            outcome="blocked",
            client=client_addr(request),
            rules=exc.rules,
            team=token.team if token else None,
        )
        if exc.requestable:
            version = version_from_filename(filename)
            await runtime.policies.note_request(index.name, project, version, actor)
        raise
    except StockadeError as exc:
        runtime.audit.record(
            "download",
            actor=actor,
            index=index.name,
            project=project,
            filename=filename,
            outcome="error",
            client=client_addr(request),
            reason=exc.message,
            team=token.team if token else None,
        )
        raise
    runtime.audit.record(
        "download",
        actor=actor,
        index=index.name,
        project=project,
        filename=filename,
        client=client_addr(request),
        team=token.team if token else None,
    )
    return response


async def provenance_document(request: Request) -> Response:
    """PEP 740: a file's provenance object, served only once verified (mirrors: fetched from
    the upstream and verified on the first request; private: the upload's attestations)."""
    index, _ = await authorized_index(request, request.path_params["index"], Scope.READ)
    _pypi_only(index)
    project = canonicalize_name(request.path_params["project"])
    filename = request.path_params["filename"]
    runtime = rt(request)
    entry, origin = await runtime.files.entry(index, project, filename, blocked_ok=True)
    if entry.provenance is None:
        raise NotFound(f"{filename} has no provenance on index {index.name!r}")
    rec = await runtime.provenance.ensure(origin, project, entry)
    if rec is not None and not rec.verified:
        raise IntegrityError(
            f"provenance of {filename} failed verification: {rec.reason}; not served",
            "the upstream's file or provenance is not what its publisher signed; alert security",
        )
    doc = await runtime.provenance.document(origin.name, filename) if rec is not None else None
    if doc is None:
        raise NotFound(f"no verified provenance is stored for {filename}")
    return Response(
        doc,
        media_type=PROVENANCE_MEDIA,
        headers={"Cache-Control": "private, max-age=3600"},
    )


async def _file_response(
    runtime: Runtime, result: StoredFile | Streaming, filename: str
) -> Response:
    """Stored: sendfile, a presigned redirect or a stream (storage errors raise here, before
    the download is audited as served); still arriving from upstream: stream it as it comes."""
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if isinstance(result, StoredFile):
        headers["ETag"] = f'"{result.sha256}"'
        headers["Cache-Control"] = "private, max-age=31536000, immutable"
        accel = _accel_redirect(runtime, result.sha256)
        if accel is not None:  # nginx in front sends the bytes (sendfile from the blob folder)
            headers["X-Accel-Redirect"] = accel
            return Response(headers=headers, media_type=OCTET)
        return await blob_response(
            runtime.store,
            result.sha256,
            media_type=OCTET,
            headers=headers,
            filename=filename,
            redirect=True,
        )
    assert isinstance(result, Streaming)
    headers["Content-Length"] = str(result.size)
    return StreamingResponse(result.fetch.open_reader(), headers=headers, media_type=OCTET)


def _accel_redirect(runtime: Runtime, sha256: str) -> str | None:
    """The internal nginx location of a stored blob when ``accel_redirect`` is set (see
    ``stockade deploy nginx --blobs``), else None."""
    prefix = runtime.settings.accel_redirect
    if not prefix or not isinstance(runtime.store, LocalBlobStore):
        return None
    rel = runtime.store.path_for(sha256).relative_to(runtime.store.root)
    return prefix.rstrip("/") + "/" + rel.as_posix()


# -- uploads (legacy API) ----------------------------------------------------------------------


def _capped(receive: Receive, cap: int) -> Receive:
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > cap:
                raise PayloadTooLarge(
                    f"upload body exceeds max_upload_size ({cap} bytes)",
                    "raise max_upload_size in stockade.toml if this file is legitimate",
                )
        return message

    return wrapped


async def upload(request: Request) -> Response:
    runtime = rt(request)
    cap = runtime.settings.max_upload_size
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise PayloadTooLarge(
            f"upload of {declared} bytes exceeds max_upload_size ({cap} bytes)",
            "raise max_upload_size in stockade.toml if this file is legitimate",
        )
    index, token = await authorized_index(request, request.path_params["index"], Scope.WRITE)
    _pypi_only(index)
    capped = Request(request.scope, _capped(request.receive, cap))
    try:
        form = await capped.form(max_files=1, max_fields=500, max_part_size=4 * 1024**2)
    except (MultiPartException, ClientDisconnect, HTTPException) as exc:
        raise InvalidRequest(
            f"the upload body is not a valid multipart form: {exc}",
            "the connection may have been cut; retry the upload",
        ) from exc
    try:
        action = form.get(":action")
        if action not in ("file_upload", None):
            raise InvalidRequest(f"unsupported :action {action!r}", "only file_upload is supported")
        content = form.get("content")
        if not isinstance(content, UploadFile) or not content.filename:
            raise InvalidRequest(
                "the form has no complete 'content' file part (was the body cut short?)",
                "upload with twine; retry if the connection was interrupted",
            )

        def field(key: str) -> str | None:
            v = form.get(key)
            return v if isinstance(v, str) and v else None

        fields = UploadForm(
            filename=content.filename,
            name=field("name"),
            version=field("version"),
            sha256_digest=field("sha256_digest"),
            md5_digest=field("md5_digest"),
            blake2_256_digest=field("blake2_256_digest"),
            attestations=field("attestations"),
        )
        writer = runtime.store.open_writer()
        digests = Digests()
        try:
            while chunk := await content.read(256 * 1024):
                writer.write(chunk)
                digests.update(chunk)
        except BaseException:
            writer.abort()
            raise
        d = digests.result()
        try:
            info = await runtime.uploads.accept(
                index,
                fields,
                writer,
                actor=token.id if token else None,
                md5=d["md5"],
                blake2=d["blake2"],
            )
            runtime.changed()  # other workers drop their cached pages of this index
        except StockadeError as exc:
            runtime.audit.record(
                "upload",
                actor=token.id if token else None,
                index=index.name,
                filename=fields.filename,
                outcome="rejected",
                client=client_addr(request),
                reason=exc.message,
            )
            raise
    finally:
        await form.close()
    return Response(f"OK: stored {info.filename} ({info.sha256})\n", media_type="text/plain")


# -- JSON admin API ----------------------------------------------------------------------------


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, media_type="application/json")


async def _body(request: Request) -> dict[str, Any]:
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    return data


async def _admin(request: Request, index: str = auth.ALL_INDEXES) -> TokenInfo:
    token = await identify(request)
    if token is None:
        raise AuthError("this endpoint needs an admin token", "send it as a Bearer token")
    auth.authorize(token, index=index, needed=Scope.ADMIN, now=repo.utcnow())
    return token


async def api_indexes(request: Request) -> Response:
    runtime = rt(request)
    if request.method == "GET":
        token = await identify(request)
        now = repo.utcnow()
        auth.authorize_any(token, needed=Scope.READ, now=now)
        items = [
            i
            for i in await runtime.indexes.list()
            if auth.permits(token, index=i.name, needed=Scope.READ, now=now)
        ]
        return _json([i.as_dict() for i in items])
    token = await _admin(request)
    data = await _body(request)
    try:
        kind = IndexKind(str(data.get("kind", "")))
    except ValueError as exc:
        raise InvalidRequest(
            f"unknown index kind {data.get('kind')!r}", "use mirror, private or virtual"
        ) from exc
    info = await runtime.indexes.create(
        str(data.get("name", "")),
        kind,
        upstream_url=data.get("upstream"),
        members=list(data.get("members") or []),
        anonymous_read=bool(data.get("anonymous_read", False)),
        description=data.get("description"),
    )
    runtime.audit.record("index.create", actor=token.id, index=info.name, kind=kind.value)
    runtime.changed()
    return _json(info.as_dict(), 201)


async def api_index(request: Request) -> Response:
    runtime = rt(request)
    name = request.path_params["index"]
    if request.method == "GET":
        index, _ = await authorized_index(request, name, Scope.READ)
        return _json(index.as_dict())
    token = await _admin(request)
    await runtime.indexes.delete(name)
    runtime.audit.record("index.delete", actor=token.id, index=name)
    runtime.changed()
    return Response(status_code=204)


async def api_tokens(request: Request) -> Response:
    runtime = rt(request)
    if request.method == "GET":
        token = await _admin(request)
        records = await runtime.tokens.list()
        return _json([r.as_dict() for r in records])
    data = await _body(request)
    index = str(data.get("index", ""))
    token = await _admin(request, index or auth.ALL_INDEXES)
    scope = _scope(data.get("scope", "read"))
    team = data.get("team")
    if team is not None and not isinstance(team, str):
        raise InvalidRequest("team must be a team's name", "see GET /api/v1/teams")
    secret, rec = await runtime.tokens.create(
        index=index,
        scope=scope,
        expires=data.get("expires"),
        team=team,
        note=data.get("note"),
        created_by=token.id,
    )
    return _json({**rec.as_dict(), "token": secret}, 201)


def _scope(value: Any) -> Scope:
    try:
        return Scope(str(value))
    except ValueError as exc:
        raise InvalidRequest("scope must be read, write or admin") from exc


async def api_teams(request: Request) -> Response:
    runtime = rt(request)
    token = await _admin(request)
    if request.method == "GET":
        return _json([t.as_dict() for t in await runtime.teams.list()])
    data = await _body(request)
    description = data.get("description")
    team = await runtime.teams.create(
        str(data.get("name", "")),
        description=str(description) if description is not None else None,
        actor=token.id,
    )
    return _json(team.as_dict(), 201)


async def api_team(request: Request) -> Response:
    runtime = rt(request)
    token = await _admin(request)
    name = request.path_params["team"]
    if request.method == "GET":
        return _json((await runtime.teams.show(name)).as_dict())
    await runtime.teams.delete(name, actor=token.id)
    return Response(status_code=204)


async def api_team_grants(request: Request) -> Response:
    """POST {"index": NAME or "*", "scope": read|write|admin}: create or change a grant."""
    runtime = rt(request)
    token = await _admin(request)
    data = await _body(request)
    made, previous = await runtime.teams.grant(
        request.path_params["team"],
        str(data.get("index", "")),
        _scope(data.get("scope", "")),
        actor=token.id,
    )
    return _json(
        {**made.as_dict(), "previous": previous.value if previous else None},
        201 if previous is None else 200,
    )


async def api_team_grant(request: Request) -> Response:
    runtime = rt(request)
    token = await _admin(request)
    gone = await runtime.teams.revoke_grant(
        request.path_params["team"], request.path_params["index"], actor=token.id
    )
    return _json(gone.as_dict())


async def api_token(request: Request) -> Response:
    runtime = rt(request)
    token = await _admin(request)
    rec = await runtime.tokens.revoke(request.path_params["token_id"], actor=token.id)
    runtime.changed("tokens")
    return _json(rec.as_dict())


async def api_yank(request: Request) -> Response:
    runtime = rt(request)
    name = request.path_params["index"]
    index, token = await authorized_index(request, name, Scope.ADMIN)
    data = await _body(request) if request.method == "POST" else {}
    n = await runtime.uploads.yank(
        index,
        request.path_params["project"],
        request.path_params["version"],
        reason=data.get("reason"),
        yanked=request.method == "POST",
        actor=token.id if token else None,
    )
    runtime.changed()
    return _json({"files": n})


async def api_file(request: Request) -> Response:
    runtime = rt(request)
    index, token = await authorized_index(request, request.path_params["index"], Scope.ADMIN)
    doomed = await runtime.uploads.delete(
        index,
        request.path_params["project"],
        filename=request.path_params["filename"],
        actor=token.id if token else None,
    )
    runtime.changed()
    return _json([f.as_dict() for f in doomed])


async def api_audit(request: Request) -> Response:
    """Audit events, newest first: ?limit=&since=&until=&actor=&team=&index=&project=&action=&
    outcome= (since/until: a duration back such as 7d, or an ISO date)."""
    from stockade.core.auth import parse_when as when
    from stockade.services.audit import query_events

    await _admin(request)
    runtime = rt(request)
    await runtime.audit.flush()
    q = request.query_params
    try:
        limit = min(int(q.get("limit", "100")), 10_000)
    except ValueError:
        raise InvalidRequest("limit must be a number", "?limit=100") from None
    actors = await runtime.tokens.actor_ids(
        runtime.teams, q.get("team") or None, q.get("actor") or None
    )
    events = [
        e
        async for e in query_events(
            runtime.sessions,
            since=when(q.get("since"), "since"),
            until=when(q.get("until"), "until"),
            actors=actors,
            index=q.get("index"),
            project=q.get("project"),
            action=q.get("action"),
            outcome=q.get("outcome"),
            limit=limit,
            newest_first=True,
        )
    ]
    return _json(events)


async def api_jobs(request: Request) -> Response:
    """Background jobs, newest first: ?status=queued|running|done|failed|cancelled&task=&limit=
    (each with its attempts and the last failed attempt's error)."""
    await _admin(request)
    q = request.query_params
    try:
        limit = min(int(q.get("limit", "100")), 10_000)
    except ValueError:
        raise InvalidRequest("limit must be a number", "?limit=100") from None
    found = await rt(request).jobs.find(
        status=q.get("status") or None, task=q.get("task") or None, limit=limit
    )
    return _json([j.as_dict() for j in found])


async def api_audit_verify(request: Request) -> Response:
    """The audit hash chain and checkpoints checked now: {"ok", "first_break", …}."""
    await _admin(request)
    runtime = rt(request)
    await runtime.audit.flush()
    return _json((await runtime.audit.verify()).as_dict())


async def api_audit_segments(request: Request) -> Response:
    """Audit segments archived to storage by retention, oldest first."""
    await _admin(request)
    archive = rt(request).audit.archive
    return _json([seg.as_dict() for seg in (await archive.segments() if archive else [])])


async def api_report_ssdf(request: Request) -> Response:
    """NIST SSDF evidence for ?from=&to= (dates or durations back; default the last 30 days),
    as JSON or, with ?format=html, a page."""
    from datetime import timedelta

    from stockade.core.auth import parse_when
    from stockade.services.ssdf import SsdfReport, render_html

    await _admin(request)
    runtime = rt(request)
    q = request.query_params
    until = parse_when(q.get("to"), "to") or repo.utcnow()
    since = parse_when(q.get("from"), "from") or until - timedelta(days=30)
    report = await SsdfReport(runtime.sessions, runtime.audit).build(since, until)
    if q.get("format") == "html":
        return Response(render_html(report), media_type="text/html; charset=utf-8")
    return _json(report)


async def api_vuln_downloads(request: Request) -> Response:
    """Who downloaded versions an advisory affects (vulnerability response)."""
    from stockade.services.response import affected_downloads

    await _admin(request)
    runtime = rt(request)
    await runtime.audit.flush()
    found = await affected_downloads(
        runtime.sessions, runtime.vulns, runtime.tokens, request.path_params["ident"]
    )
    return _json(found)


async def _reader(request: Request) -> TokenInfo:
    token = await identify(request)
    auth.authorize_any(token, needed=Scope.READ, now=repo.utcnow())
    assert token is not None
    return token


async def api_vulns(request: Request) -> Response:
    await _reader(request)
    q = request.query_params
    rows = await rt(request).vulns.list_advisories(
        package=q.get("package"),
        ecosystem=q.get("ecosystem", "PyPI"),
        limit=min(int(q.get("limit", "100")), 10_000),
    )
    return _json(rows)


async def api_vuln(request: Request) -> Response:
    await _reader(request)
    return _json(await rt(request).vulns.show(request.path_params["ident"]))


async def api_vuln_query(request: Request) -> Response:
    await _reader(request)
    q = request.query_params
    name, version = q.get("name"), q.get("version")
    if not name or not version:
        raise InvalidRequest("name and version are required", "?name=jinja2&version=2.10")
    findings = await rt(request).vulns.query(q.get("ecosystem", "PyPI"), name, version)
    return _json([f.as_dict() for f in findings])


async def api_curate(request: Request) -> Response:
    token = await _admin(request)
    runtime = rt(request)
    data = await _body(request)
    score = data.get("score")
    c = await runtime.vulns.curate(
        request.path_params["ident"],
        package=str(data.get("package", "")),
        ecosystem=str(data.get("ecosystem", "PyPI")),
        versions=data.get("versions"),
        status=data.get("status"),
        justification=data.get("justification"),
        severity=data.get("severity"),
        score=float(score) if score is not None else None,
        reason=data.get("reason"),
        note=data.get("note"),
        author=str(data.get("author") or token.id),
    )
    await runtime.curated(c, token.id)
    return _json(c.as_dict(), 201)


async def _policy_text(request: Request) -> str:
    """A policy document: the raw TOML body, or JSON {"text": "..."}."""
    raw = await request.body()
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest(f"request body is not JSON: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("text"), str):
            raise InvalidRequest('a JSON body must be {"text": "<policy TOML>"}')
        return str(data["text"])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidRequest("a policy document must be UTF-8 TOML") from exc


async def api_policy(request: Request) -> Response:
    """GET the policy in force; PUT a new version (TOML body; a malformed one changes nothing)."""
    runtime = rt(request)
    name = request.path_params["index"]
    if request.method == "GET":
        index, _ = await authorized_index(request, name, Scope.READ)
        version = request.query_params.get("version")
        shown = await runtime.policies.show(index.name, int(version) if version else None)
        return _json(shown.as_dict())
    index, token = await authorized_index(request, name, Scope.ADMIN)
    text = await _policy_text(request)
    author = token.id if token else None
    made = await runtime.policies.set(index.name, text, author)
    runtime.audit.record("policy.set", actor=author, index=index.name, version=made.version)
    runtime.changed()
    await runtime.policy_changed(index.name, made.version)
    return _json(made.as_dict(), 201)


async def api_policy_history(request: Request) -> Response:
    index, _ = await authorized_index(request, request.path_params["index"], Scope.READ)
    return _json([v.as_dict() for v in await rt(request).policies.history(index.name)])


async def api_policy_explain(request: Request) -> Response:
    """Per file of ?project= (and &version=): allowed or blocked, by which rule and data."""
    index, _ = await authorized_index(request, request.path_params["index"], Scope.READ)
    project = request.query_params.get("project")
    if not project:
        raise InvalidRequest("project is required", "?project=requests&version=2.19.0")
    if index.kind.is_conda:
        conda = rt(request).conda
        ch = await conda.as_channel(index)
        return _json(await conda.explain(ch, project, request.query_params.get("version")))
    rows = await rt(request).pages.explain(
        index, canonicalize_name(project), request.query_params.get("version")
    )
    return _json(rows)


async def api_policy_test(request: Request) -> Response:
    """POST a draft policy; get what it would change (nothing is stored)."""
    from stockade.core.policy import parse_policy
    from stockade.services.policy_check import compare

    runtime = rt(request)
    index, _ = await authorized_index(request, request.path_params["index"], Scope.ADMIN)
    draft = parse_policy(await _policy_text(request))
    if index.kind.is_conda:
        report = await runtime.conda.draft_report(await runtime.conda.as_channel(index), draft)
        return _json(report.as_dict())
    report = await compare(runtime.pages, runtime.policies, index, draft)
    return _json(report.as_dict())


async def api_policy_exceptions(request: Request) -> Response:
    """GET the exceptions of an index; POST {"requirement", "reason", "expires"} to add one."""
    runtime = rt(request)
    name = request.path_params["index"]
    if request.method == "GET":
        index, _ = await authorized_index(request, name, Scope.READ)
        return _json([e.as_dict() for e in await runtime.policies.exceptions(index.name)])
    index, token = await authorized_index(request, name, Scope.ADMIN)
    data = await _body(request)
    author = token.id if token else None
    made = await runtime.policies.allow(
        index.name,
        str(data.get("requirement", "")),
        reason=str(data.get("reason") or ""),
        expires=data.get("expires"),
        author=author,
    )
    runtime.audit.record(
        "policy.exception",
        actor=author,
        index=index.name,
        project=made.project,
        specifier=made.specifier,
        reason=made.reason,
        expires_at=made.expires_at.isoformat() if made.expires_at else None,
    )
    runtime.changed()
    return _json(made.as_dict(), 201)


async def api_policy_exception(request: Request) -> Response:
    """DELETE an exception (it ends now; the record stays)."""
    runtime = rt(request)
    name = request.path_params["index"]
    index, token = await authorized_index(request, name, Scope.ADMIN)
    ident = request.path_params["exception_id"]
    if not ident.isdigit():
        raise NotFound(f"no policy exception {ident!r}")
    existing = {e.id for e in await runtime.policies.exceptions(index.name)}
    if int(ident) not in existing:
        raise NotFound(f"index {index.name!r} has no policy exception {ident}")
    made = await runtime.policies.revoke_exception(int(ident))
    runtime.audit.record(
        "policy.exception_revoke",
        actor=token.id if token else None,
        index=index.name,
        project=made.project,
        exception=made.id,
    )
    runtime.changed()
    return _json(made.as_dict())


async def api_policy_requests(request: Request) -> Response:
    """Projects users asked for that the index's allow-list refused (?all=1: approved too)."""
    index, _ = await authorized_index(request, request.path_params["index"], Scope.ADMIN)
    pending_only = request.query_params.get("all") not in ("1", "true")
    items = await rt(request).policies.requests(index.name, pending_only=pending_only)
    return _json([i.as_dict() for i in items])


async def api_policy_approvals(request: Request) -> Response:
    """GET the approvals of an index; POST {"requirement", "reason"} to approve."""
    runtime = rt(request)
    name = request.path_params["index"]
    if request.method == "GET":
        index, _ = await authorized_index(request, name, Scope.READ)
        return _json([a.as_dict() for a in await runtime.policies.approvals(index.name)])
    index, token = await authorized_index(request, name, Scope.ADMIN)
    data = await _body(request)
    author = token.id if token else None
    made = await runtime.policies.approve(
        index.name,
        str(data.get("requirement", "")),
        reason=data.get("reason"),
        author=author,
    )
    runtime.audit.record(
        "policy.approve",
        actor=author,
        index=index.name,
        project=made.project,
        specifier=made.specifier,
        reason=made.reason,
    )
    runtime.changed()
    return _json(made.as_dict(), 201)


async def api_policy_approval(request: Request) -> Response:
    """DELETE an approval (the project leaves the allow-list; the record stays)."""
    runtime = rt(request)
    index, token = await authorized_index(request, request.path_params["index"], Scope.ADMIN)
    ident = request.path_params["approval_id"]
    known = {a.id for a in await runtime.policies.approvals(index.name)}
    if not ident.isdigit() or int(ident) not in known:
        raise NotFound(f"index {index.name!r} has no approval {ident!r}")
    made = await runtime.policies.revoke_approval(int(ident))
    runtime.audit.record(
        "policy.approval_revoke",
        actor=token.id if token else None,
        index=index.name,
        project=made.project,
        approval=made.id,
    )
    runtime.changed()
    return _json(made.as_dict())


async def api_scan_report(request: Request) -> Response:
    """The malware scanner's verdict on a stored file, by sha256 (any token)."""
    await _reader(request)
    sha = request.path_params["sha256"].lower()
    got = await rt(request).threats.report(sha)
    if got is None:
        raise NotFound(f"no scan report for {sha}", "files are scanned when Stockade stores them")
    return _json(got.as_dict())


async def api_provenance(request: Request) -> Response:
    """PEP 740 provenance of a project's files (``?verify=1`` verifies what is pending)."""
    index, _ = await authorized_index(request, request.path_params["index"], Scope.READ)
    _pypi_only(index)
    runtime = rt(request)
    served = await runtime.pages.project_page(
        index, canonicalize_name(request.path_params["project"])
    )
    verify = request.query_params.get("verify") in ("1", "true", "yes")
    page = served.unfiltered or served.page
    return _json(await runtime.provenance.report(index.name, page, verify=verify))


async def api_identity(request: Request) -> Response:
    """Publishers, owners and author-impersonation findings of a project on a mirror index."""
    index, _ = await authorized_index(request, request.path_params["index"], Scope.READ)
    if index.kind is not IndexKind.MIRROR:
        raise InvalidRequest(
            f"index {index.name!r} is a {index.kind.value} index",
            "identities are recorded for mirror indexes; ask the mirror",
        )
    project = canonicalize_name(request.path_params["project"])
    return _json(await rt(request).identity.report(index.name, project))


async def _env_token(request: Request, team: str | None, needed: Scope) -> TokenInfo:
    """Environments belong to teams: a token of the team with the scope, or an admin token
    on every index (no team)."""
    token = await identify(request)
    now = repo.utcnow()
    if token is None or token.revoked_at is not None or token.is_expired(now):
        raise AuthError("a valid token is required", "send a team token (basic auth __token__)")
    if (
        token.team is None
        and token.index_name == auth.ALL_INDEXES
        and token.scope.allows(Scope.ADMIN)
    ):
        return token
    if team is not None and token.team == team and token.scope.allows(needed):
        return token
    raise Forbidden(
        f"token {token.id} may not {needed.value} environments of team {team!r}",
        "use a token of that team (stockade token create --team TEAM) or an admin token",
    )


async def api_envs(request: Request) -> Response:
    """GET the newest version of every environment the token may see (?team=)."""
    runtime = rt(request)
    team = request.query_params.get("team")
    token = await identify(request)
    if token is not None and token.team is not None:
        team = token.team  # a team token sees its team's environments only
    await _env_token(request, team, Scope.READ)
    return _json([v.as_dict(packages=False) for v in await runtime.envs.latest(team)])


async def api_env(request: Request) -> Response:
    """GET the versions of TEAM/NAME; POST a lock file (?filename=&index=&note=) as the next
    version."""
    runtime = rt(request)
    team, name = request.path_params["team"], request.path_params["name"]
    ref = f"{team}/{name}"
    if request.method == "GET":
        await _env_token(request, team, Scope.READ)
        return _json([v.as_dict(packages=False) for v in await runtime.envs.versions(ref)])
    token = await _env_token(request, team, Scope.WRITE)
    q = request.query_params
    filename = q.get("filename")
    if not filename:
        raise InvalidRequest(
            "filename is required (it tells the format)", "?filename=uv.lock or requirements.txt"
        )
    from stockade.core.lockfiles import MAX_FILE_SIZE

    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_FILE_SIZE:
            raise PayloadTooLarge(
                f"the lock file exceeds {MAX_FILE_SIZE} bytes", "push the lock file, not an archive"
            )
    made = await runtime.envs.push(
        ref, filename, bytes(body), index=q.get("index"), author=token.id, note=q.get("note")
    )
    await runtime.audit.flush()
    return _json(made.as_dict(), 201)


async def api_env_version(request: Request) -> Response:
    """GET one version with its packages, problems and status history."""
    runtime = rt(request)
    team, name = request.path_params["team"], request.path_params["name"]
    await _env_token(request, team, Scope.READ)
    ref = f"{team}/{name}@{request.path_params['version']}"
    got = await runtime.envs.get(ref)
    return _json({**got.as_dict(), "history": await runtime.envs.history(ref)})


async def api_env_file(request: Request) -> Response:
    """GET the stored lock file of a version, byte for byte."""
    runtime = rt(request)
    team, name = request.path_params["team"], request.path_params["name"]
    await _env_token(request, team, Scope.READ)
    got, body = await runtime.envs.pull(f"{team}/{name}@{request.path_params['version']}")
    return Response(
        body,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{got.filename}"'},
    )


_INCLUDE_OPTS = ("-r", "--requirement", "-c", "--constraint")


async def api_scan(request: Request) -> Response:
    """POST a lock file's bytes (``?filename=`` names its format); get the findings."""
    import tempfile
    from pathlib import Path

    from stockade.core.lockfiles import read_inventory

    await _reader(request)
    filename = Path(request.query_params.get("filename", "requirements.txt")).name
    body = await request.body()
    if len(body) > 16 * 1024**2:
        raise PayloadTooLarge("a lock file over 16 MB", "split it or scan with the CLI")
    text = body.decode("utf-8", errors="replace")
    if any(line.strip().startswith(_INCLUDE_OPTS) for line in text.splitlines()):
        raise InvalidRequest(
            "uploaded requirements may not include other files (-r/-c)",
            "inline the included files, or scan locally with `stockade scan`",
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / (filename or "requirements.txt")
        path.write_bytes(body)
        inv = await anyio.to_thread.run_sync(read_inventory, path)
    found = await rt(request).vulns.query_many(
        (p.ecosystem, p.name, p.version or "") for p in inv.pins
    )
    findings = [f for fs in found.values() for f in fs]
    return _json(
        {
            "kind": inv.kind,
            "scanned": len(inv.pins),
            "findings": [f.as_dict() for f in findings],
            "unpinned": [
                {"package": p.name, "ecosystem": p.ecosystem, "spec": p.spec, "source": p.source}
                for p in inv.unpinned
            ],
            "warnings": list(inv.warnings),
        }
    )


async def root(request: Request) -> Response:
    return Response(
        f"Stockade {__version__}\nSimple API: /pypi/<index>/simple/\n", media_type="text/plain"
    )


async def health(request: Request) -> Response:
    return _json({"status": "ok", "version": __version__})


def create_app(settings: Settings) -> Any:
    holder: list[Runtime] = []
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime = Runtime(settings)
        app.state.runtime = runtime
        metrics.runtime = runtime
        metrics.instrument(runtime.http)
        holder.append(runtime)
        runtime.start()
        try:
            async with metrics.syncing():
                yield
        finally:
            holder.clear()
            await runtime.close()

    async def on_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StockadeError)
        return error_response(exc, json=request.url.path.startswith("/api/"))

    async def on_db_down(request: Request, exc: Exception) -> Response:
        """The database went away (restart, failover, network): fail fast with 503. The pool
        replaces broken connections (pre-ping), so service resumes when it is back."""
        if isinstance(exc, DBAPIError) and not (
            exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)
        ):
            raise exc  # a real bug (constraint, SQL): the server-error middleware answers 500
        logging.getLogger("stockade.web").warning("database unavailable: %s", exc)
        return error_response(
            Unavailable(
                "the database is unavailable; nothing was changed",
                "retry in a few seconds; operators: check PostgreSQL (`stockade` recovers "
                "by itself when it is back)",
            ),
            json=request.url.path.startswith("/api/"),
        )

    routes: list[BaseRoute] = [
        Route("/", root),
        Route("/health", health),
        Route("/pypi/{index}/simple/", simple_index),
        Route("/pypi/{index}/simple", simple_index),
        Route("/pypi/{index}/simple/{project}/", simple_project),
        Route("/pypi/{index}/simple/{project}", simple_project),
        Route("/pypi/{index}/files/{project}/{filename}", download),
        Route("/pypi/{index}/integrity/{project}/{filename}/provenance", provenance_document),
        Route("/pypi/{index}/", upload, methods=["POST"]),
        Route("/pypi/{index}/legacy/", upload, methods=["POST"]),
        Route("/pypi/{index}", upload, methods=["POST"]),
        Route("/api/v1/indexes", api_indexes, methods=["GET", "POST"]),
        Route("/api/v1/indexes/{index}", api_index, methods=["GET", "DELETE"]),
        Route("/api/v1/tokens", api_tokens, methods=["GET", "POST"]),
        Route("/api/v1/tokens/{token_id}", api_token, methods=["DELETE"]),
        Route("/api/v1/teams", api_teams, methods=["GET", "POST"]),
        Route("/api/v1/teams/{team}", api_team, methods=["GET", "DELETE"]),
        Route("/api/v1/teams/{team}/grants", api_team_grants, methods=["POST"]),
        Route("/api/v1/teams/{team}/grants/{index}", api_team_grant, methods=["DELETE"]),
        Route(
            "/api/v1/indexes/{index}/projects/{project}/versions/{version}/yank",
            api_yank,
            methods=["POST", "DELETE"],
        ),
        Route(
            "/api/v1/indexes/{index}/projects/{project}/files/{filename}",
            api_file,
            methods=["DELETE"],
        ),
        Route("/api/v1/indexes/{index}/policy", api_policy, methods=["GET", "PUT"]),
        Route("/api/v1/indexes/{index}/policy/history", api_policy_history),
        Route("/api/v1/indexes/{index}/policy/explain", api_policy_explain),
        Route("/api/v1/indexes/{index}/policy/test", api_policy_test, methods=["POST"]),
        Route(
            "/api/v1/indexes/{index}/policy/exceptions",
            api_policy_exceptions,
            methods=["GET", "POST"],
        ),
        Route(
            "/api/v1/indexes/{index}/policy/exceptions/{exception_id}",
            api_policy_exception,
            methods=["DELETE"],
        ),
        Route("/api/v1/indexes/{index}/policy/requests", api_policy_requests),
        Route(
            "/api/v1/indexes/{index}/policy/approvals",
            api_policy_approvals,
            methods=["GET", "POST"],
        ),
        Route(
            "/api/v1/indexes/{index}/policy/approvals/{approval_id}",
            api_policy_approval,
            methods=["DELETE"],
        ),
        Route("/api/v1/scans/{sha256}", api_scan_report),
        Route("/api/v1/indexes/{index}/identity/{project}", api_identity),
        Route("/api/v1/indexes/{index}/provenance/{project}", api_provenance),
        Route("/api/v1/audit", api_audit),
        Route("/api/v1/audit/verify", api_audit_verify),
        Route("/api/v1/audit/segments", api_audit_segments),
        Route("/api/v1/jobs", api_jobs),
        Route("/api/v1/envs", api_envs),
        Route("/api/v1/envs/{team}/{name}", api_env, methods=["GET", "POST"]),
        Route("/api/v1/envs/{team}/{name}/{version:int}", api_env_version),
        Route("/api/v1/envs/{team}/{name}/{version:int}/file", api_env_file),
        Route("/api/v1/reports/ssdf", api_report_ssdf),
        Route("/api/v1/vulns", api_vulns),
        Route("/api/v1/vulns/query", api_vuln_query),
        Route("/api/v1/vulns/{ident}", api_vuln),
        Route("/api/v1/vulns/{ident}/downloads", api_vuln_downloads),
        Route("/api/v1/vulns/{ident}/curations", api_curate, methods=["POST"]),
        Route("/api/v1/scan", api_scan, methods=["POST"]),
        *sbom_routes.ROUTES,
    ]
    from stockade.web import console, ops
    from stockade.web.conda import routes as conda_routes  # it imports this module

    routes.extend(conda_routes)
    routes.extend(ops.routes)  # /-/healthz, /-/readyz, /-/metrics
    routes.extend(console.mount())  # the web console at /ui/
    from stockade.web.tuf_routes import ROUTES as tuf_routes  # it imports this module

    routes.extend(tuf_routes)
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            StockadeError: on_error,
            DBAPIError: on_db_down,
            PoolTimeout: on_db_down,
        },
    )
    app.state.metrics = metrics
    fast = FastPages(RequestMetrics(app, metrics), holder)
    metrics.fast = fast
    return TokenPrefixMiddleware(fast)


__all__ = ["NotFound", "create_app"]


def app_from_env() -> Any:
    """Factory for ``uvicorn --factory`` (each worker process builds its own app, and sets
    up its own logging: spawned workers do not inherit the parent's handlers)."""
    settings = Settings.load()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(levelname)s [{os.getpid()}] %(name)s: %(message)s",
    )
    return create_app(settings)

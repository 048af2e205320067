"""conda channel routes: ``/conda/<channel>/…`` (repodata, CEP-16 shards, packages) and
``/api/v1/conda/…`` (channels, uploads). Authorization is the indexes' (a channel is an index)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from stockade.core import auth
from stockade.core.conda import repodata as rd
from stockade.core.conda import trust as rd_trust
from stockade.core.conda.names import check_subdir, parse_filename, parse_subdirs
from stockade.core.ports import BlobStore
from stockade.errors import (
    BlobMissing,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    PolicyBlocked,
    StockadeError,
)
from stockade.services import repo
from stockade.services.conda import CHANNELDATA, CURRENT, CondaChannel, ServedDoc
from stockade.services.files import StoredFile, Streaming
from stockade.types import Scope
from stockade.web.app import (
    _accepts_gzip,
    _admin,
    _body,
    _capped,
    _etag_matches,
    _json,
    authorized_index,
    identify,
    rt,
)
from stockade.web.blobs import blob_response
from stockade.web.identity import client_addr

JSON = "application/json"
OCTET = "application/octet-stream"


async def _channel(request: Request, needed: Scope) -> tuple[CondaChannel, str | None]:
    index, token = await authorized_index(request, request.path_params["channel"], needed)
    return await rt(request).conda.as_channel(index), token.id if token else None


async def _blob(
    request: Request, sha: str, media: str, headers: dict[str, str], filename: str | None = None
) -> Response:
    """``filename``: a package file, which may be a presigned redirect (S3)."""
    return await blob_response(
        rt(request).store,
        sha,
        media_type=media,
        headers=headers,
        filename=filename,
        redirect=filename is not None,
    )


async def _serve(
    request: Request, ch: CondaChannel, get: Callable[[], Awaitable[ServedDoc]], form: str
) -> Response:
    """``form``: ``json`` (gzip when accepted), ``zst`` or ``shards`` (the CEP-16 index).

    A document this process remembers may have been replaced by another process (an upload,
    a removal, a yank from the CLI or another worker) that deleted its old blobs: the document
    is then looked up again (the new one is whole: documents are switched in one UPDATE once
    every blob is written). A local blob is opened before the response starts, so a deletion
    after that point cannot cut the body short (POSIX keeps an open file readable)."""
    for attempt in range(3):
        doc = await get()
        got = _doc_form(request, doc, form)
        if isinstance(got, Response):
            return got
        sha, media, headers = got
        try:
            return await _doc_response(rt(request).store, sha, media, headers)
        except (FileNotFoundError, BlobMissing):
            if attempt == 2:
                raise
            rt(request).conda.forget(ch.name)
    raise AssertionError("unreachable")


def _doc_form(
    request: Request, doc: ServedDoc, form: str
) -> Response | tuple[str, str, dict[str, str]]:
    """A 304, or the blob to send with its media type and headers."""
    headers = {"Cache-Control": "private, max-age=60", "Vary": "Accept-Encoding"}
    if doc.stale:
        headers["Warning"] = '110 - "Response is Stale"'
        headers["X-Stockade-Stale"] = doc.stale.encode("ascii", "replace").decode()[:200]
    if form == "json":
        sha = doc.json
        etag = f'"{sha[:32]}"'
        gz_tag = f'"{sha[:32]}-gz"'
        if _etag_matches(request, etag, gz_tag):
            return Response(status_code=304, headers={**headers, "ETag": etag})
        if doc.gz is not None and _accepts_gzip(request):
            headers.update({"ETag": gz_tag, "Content-Encoding": "gzip"})
            return doc.gz, JSON, headers
        headers["ETag"] = etag
        return sha, JSON, headers
    sha_opt = doc.zst if form == "zst" else doc.shards
    if sha_opt is None:
        raise NotFound("this channel serves no such file", "fetch repodata.json instead")
    etag = f'"{sha_opt[:32]}"'
    headers["ETag"] = etag
    if _etag_matches(request, etag):
        return Response(status_code=304, headers=headers)
    return sha_opt, OCTET, headers


async def _doc_response(
    store: BlobStore, sha: str, media: str, headers: dict[str, str]
) -> Response:
    path = store.local_path(sha)
    if path is None:
        return await blob_response(store, sha, media_type=media, headers=headers)
    f = await anyio.to_thread.run_sync(path.open, "rb")  # FileNotFoundError: replaced
    try:
        size = os.fstat(f.fileno()).st_size
    except BaseException:
        f.close()
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            while chunk := await anyio.to_thread.run_sync(f.read, 1024 * 1024):
                yield chunk
        finally:
            f.close()

    return StreamingResponse(
        body(), media_type=media, headers={**headers, "Content-Length": str(size)}
    )


async def channeldata(request: Request) -> Response:
    ch, _ = await _channel(request, Scope.READ)
    return await _serve(request, ch, lambda: rt(request).conda.channeldata(ch), "json")


async def subdir_file(request: Request) -> Response:
    ch, actor = await _channel(request, Scope.READ)
    subdir = request.path_params["subdir"]
    filename = request.path_params["filename"]
    conda = rt(request).conda
    if filename in (rd.REPODATA, CURRENT):
        return await _serve(request, ch, lambda: conda.repodata(ch, subdir, filename), "json")
    if filename == rd.REPODATA + ".zst":
        return await _serve(request, ch, lambda: conda.repodata(ch, subdir), "zst")
    if filename == rd.SHARDS_INDEX:
        return await _serve(request, ch, lambda: conda.repodata(ch, subdir), "shards")
    if filename.startswith(("repodata", "current_repodata")):
        raise NotFound(
            f"{subdir}/{filename} is not offered",
            "Stockade serves repodata.json (gzip), repodata.json.zst and CEP-16 shards",
        )
    return await _package(request, ch, actor, subdir, filename)


async def _package(
    request: Request, ch: CondaChannel, actor: str | None, subdir: str, filename: str
) -> Response:
    runtime = rt(request)
    detail: dict[str, Any] = {"client": client_addr(request)}
    parsed = parse_filename(filename)
    detail["project"] = parsed.name if parsed else None
    try:
        got = await runtime.conda.open_package(ch, subdir, filename)
        response = await _package_response(request, got, filename)
    except PolicyBlocked as exc:
        runtime.audit.record(
            "download",
            actor=actor,
            index=ch.name,
            filename=f"{subdir}/{filename}",
            outcome="blocked",
            rules=exc.rules,
            **detail,
        )
        raise
    except StockadeError as exc:
        runtime.audit.record(
            "download",
            actor=actor,
            index=ch.name,
            filename=f"{subdir}/{filename}",
            outcome="error",
            reason=exc.message,
            **detail,
        )
        raise
    runtime.audit.record(
        "download", actor=actor, index=ch.name, filename=f"{subdir}/{filename}", **detail
    )
    return response


async def _package_response(
    request: Request, got: StoredFile | Streaming, filename: str
) -> Response:
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if isinstance(got, StoredFile):
        headers["ETag"] = f'"{got.sha256}"'
        headers["Cache-Control"] = "private, max-age=31536000, immutable"
        return await _blob(request, got.sha256, OCTET, headers, filename)
    assert isinstance(got, Streaming)
    headers["Content-Length"] = str(got.size)
    return StreamingResponse(got.fetch.open_reader(), headers=headers, media_type=OCTET)


async def shard(request: Request) -> Response:
    ch, _ = await _channel(request, Scope.READ)
    subdir = check_subdir(request.path_params["subdir"])
    name = request.path_params["shard"]
    sha = name.removesuffix(".msgpack.zst").lower()
    if not name.endswith(".msgpack.zst") or not await rt(request).conda.shard_allowed(
        ch, subdir, sha
    ):
        raise NotFound(
            f"{subdir}/shards/{name} is not a current shard of conda channel {ch.name!r}",
            "fetch repodata_shards.msgpack.zst again: shards change as packages are published",
        )
    headers = {"ETag": f'"{sha}"', "Cache-Control": "private, max-age=31536000, immutable"}
    if _etag_matches(request, f'"{sha}"'):
        return Response(status_code=304, headers=headers)
    return await _blob(request, sha, OCTET, headers)


async def trust_metadata(request: Request) -> Response:
    """conda content trust metadata of a signed channel: ``<N>.root.json`` (every version, for
    root chaining; a 404 ends conda's walk) and ``key_mgr.json``."""
    ch, _ = await _channel(request, Scope.READ)
    if ch.signed_at is None:
        raise NotFound(
            f"conda channel {ch.name!r} is not signed",
            f"an admin turns signing on with `stockade conda trust init {ch.name}`",
        )
    version = request.path_params.get("version")
    name = rd_trust.KEY_MGR_FILE if version is None else f"{version}.root.json"
    body = await rt(request).conda_trust.document(name)
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=60"}
    if _etag_matches(request, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=JSON, headers=headers)


# -- API ---------------------------------------------------------------------------------------


async def api_channels(request: Request) -> Response:
    conda = rt(request).conda
    if request.method == "GET":
        token = await identify(request)
        now = repo.utcnow()
        auth.authorize_any(token, needed=Scope.READ, now=now)
        items = [
            c.as_dict()
            for c in await conda.channels()
            if auth.permits(token, index=c.name, needed=Scope.READ, now=now)
        ]
        return _json(items)
    token = await _admin(request)
    data = await _body(request)
    kind = str(data.get("kind", ""))
    if kind not in ("mirror", "private"):
        raise InvalidRequest(
            f"unknown conda channel kind {data.get('kind')!r}", 'use "mirror" or "private"'
        )
    raw_subdirs = data.get("subdirs") or []
    if isinstance(raw_subdirs, str):
        raw_subdirs = [raw_subdirs]
    if not isinstance(raw_subdirs, list):
        raise InvalidRequest('"subdirs" must be a list', '["noarch", "linux-64"]')
    subdirs = parse_subdirs(",".join(str(s) for s in raw_subdirs)) if raw_subdirs else []
    ch = await conda.create_channel(
        str(data.get("name", "")),
        mirror=data.get("upstream") if kind == "mirror" else None,
        subdirs=subdirs,
        private=kind == "private",
        anonymous_read=bool(data.get("anonymous_read", False)),
        description=data.get("description"),
    )
    kind_value = ch.index.kind.value
    rt(request).audit.record("index.create", actor=token.id, index=ch.name, kind=kind_value)
    rt(request).changed()
    return _json(ch.as_dict(), 201)


async def api_packages(request: Request) -> Response:
    """GET the packages a channel stores (?subdir=&name=); POST a package (multipart ``file``,
    optional ``subdir`` field that must agree with the package's info/index.json)."""
    runtime = rt(request)
    if request.method == "GET":
        ch, _ = await _channel(request, Scope.READ)
        subdir = request.query_params.get("subdir")
        items = await runtime.conda.packages(ch, subdir, request.query_params.get("name"))
        return _json([p.as_dict() for p in items])
    cap = runtime.settings.max_upload_size
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise PayloadTooLarge(
            f"upload of {declared} bytes exceeds max_upload_size ({cap} bytes)",
            "raise max_upload_size in stockade.toml if this file is legitimate",
        )
    ch, actor = await _channel(request, Scope.WRITE)
    capped = Request(request.scope, _capped(request.receive, cap))
    try:
        form = await capped.form(max_files=1, max_fields=10, max_part_size=1024**2)
    except (MultiPartException, ClientDisconnect, HTTPException) as exc:
        raise InvalidRequest(
            f"the upload body is not a valid multipart form: {exc}",
            "send the package as multipart field 'file' (curl -F file=@pkg.conda)",
        ) from exc
    try:
        content = form.get("file")
        if not isinstance(content, UploadFile) or not content.filename:
            raise InvalidRequest(
                "the form has no complete 'file' part (was the body cut short?)",
                "send the package as multipart field 'file' (curl -F file=@pkg.conda)",
            )
        want = form.get("subdir")
        filename = content.filename.rsplit("/", 1)[-1]
        writer = runtime.store.open_writer()
        md5 = hashlib.md5(usedforsecurity=False)
        try:
            while chunk := await content.read(256 * 1024):
                writer.write(chunk)
                md5.update(chunk)
        except BaseException:
            writer.abort()
            raise
        try:
            info = await runtime.conda.upload(
                ch,
                filename,
                writer,
                md5=md5.hexdigest(),
                actor=actor,
                subdir=want if isinstance(want, str) and want else None,
            )
        except StockadeError as exc:
            runtime.audit.record(
                "upload",
                actor=actor,
                index=ch.name,
                filename=filename,
                outcome="rejected",
                client=client_addr(request),
                reason=exc.message,
            )
            raise
    finally:
        await form.close()
    return _json(info.as_dict(), 201)


async def api_package(request: Request) -> Response:
    """DELETE a package of a private channel (admin on the channel)."""
    ch, actor = await _channel(request, Scope.ADMIN)
    p = request.path_params
    got = await rt(request).conda.remove(ch, p["filename"], subdir=p["subdir"], actor=actor)
    return _json(got.as_dict())


async def api_yank(request: Request) -> Response:
    """POST .../yank {"reason"} or .../unyank (admin on the channel)."""
    ch, actor = await _channel(request, Scope.ADMIN)
    p = request.path_params
    undo = request.url.path.endswith("/unyank")
    reason = None
    if not undo and await request.body():
        data = await _body(request)
        reason = str(data["reason"]) if data.get("reason") else None
    got = await rt(request).conda.yank(
        ch, p["filename"], subdir=p["subdir"], reason=reason, actor=actor, undo=undo
    )
    return _json(got.as_dict())


routes = [
    Route("/conda/{channel}/" + CHANNELDATA, channeldata),
    Route("/conda/{channel}/" + rd_trust.KEY_MGR_FILE, trust_metadata),
    Route("/conda/{channel}/{version:int}.root.json", trust_metadata),
    Route("/conda/{channel}/{subdir}/shards/{shard}", shard),
    Route("/conda/{channel}/{subdir}/{filename}", subdir_file),
    Route("/api/v1/conda/channels", api_channels, methods=["GET", "POST"]),
    Route("/api/v1/conda/{channel}/packages", api_packages, methods=["GET", "POST"]),
    Route("/api/v1/conda/{channel}/packages/{subdir}/{filename}", api_package, methods=["DELETE"]),
    Route("/api/v1/conda/{channel}/packages/{subdir}/{filename}/yank", api_yank, methods=["POST"]),
    Route(
        "/api/v1/conda/{channel}/packages/{subdir}/{filename}/unyank", api_yank, methods=["POST"]
    ),
]

"""SBOM and VEX endpoints of the JSON API (see docs/http-api.md):

* ``POST /api/v1/sbom?format=&filename=&with_vulns=&reproducible=`` -- body: a lock file;
* ``GET /api/v1/indexes/<index>/sbom?format=&with_vulns=&reproducible=`` -- read on the index;
* ``GET /api/v1/indexes/<index>/vex`` -- the curated decisions as OpenVEX, read on the index.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stockade.core.lockfiles import read_inventory
from stockade.core.sbom.model import Bom, from_inventory
from stockade.core.sbom.openvex import to_openvex
from stockade.errors import InvalidRequest, PayloadTooLarge
from stockade.services.sbom import SbomService
from stockade.types import Scope

MAX_BODY = 16 * 1024**2
_INCLUDE_OPTS = ("-r", "--requirement", "-c", "--constraint")
_TRUE = ("1", "true", "yes", "on")
# core.sbom.render (spdx-tools, cyclonedx-python-lib) is imported on first use: ~1 s at start-up
OPENVEX_AND_SBOM = ("spdx", "spdx-tv", "cyclonedx", "openvex")


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in _TRUE


async def _respond(request: Request, bom: Bom, svc: SbomService) -> Response:
    from stockade.core.sbom.render import MEDIA_TYPES, check_format, render
    from stockade.core.sbom.spdx import Stamp

    fmt = check_format(request.query_params.get("format", "cyclonedx"))
    with_vulns = fmt == "openvex" or _flag(request, "with_vulns")
    bom = await svc.with_licenses(bom)
    if with_vulns:
        bom = await svc.with_vulns(bom)
    stamp = Stamp.make(bom, reproducible=_flag(request, "reproducible"))
    text = await anyio.to_thread.run_sync(lambda: render(bom, fmt, stamp, with_vulns=with_vulns))
    from stockade.web.app import identify, rt

    token = await identify(request)
    rt(request).audit.record(  # SSDF PS.3.2 evidence: provenance data produced and shared
        "sbom.create",
        actor=token.id if token else None,
        project=bom.name,
        format=fmt,
        kind=bom.kind,
        components=len(bom.components),
        vulnerabilities=len(bom.vulns),
    )
    return Response(text, media_type=MEDIA_TYPES[fmt])


async def api_sbom(request: Request) -> Response:
    """POST a lock file's bytes (``?filename=`` names its format); get its SBOM."""
    from stockade.web.app import _reader, rt

    await _reader(request)
    if request.query_params.get("format", "cyclonedx") not in OPENVEX_AND_SBOM:
        from stockade.core.sbom.render import check_format

        check_format(request.query_params["format"])
    filename = Path(request.query_params.get("filename", "requirements.txt")).name
    body = await request.body()
    if len(body) > MAX_BODY:
        raise PayloadTooLarge("a lock file over 16 MB", "split it or use `stockade sbom create`")
    text = body.decode("utf-8", errors="replace")
    if any(line.strip().startswith(_INCLUDE_OPTS) for line in text.splitlines()):
        raise InvalidRequest(
            "uploaded requirements may not include other files (-r/-c)",
            "inline the included files, or use `stockade sbom create` locally",
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / (filename or "requirements.txt")
        path.write_bytes(body)
        inv = await anyio.to_thread.run_sync(lambda: read_inventory(path, details=True))
    return await _respond(request, from_inventory(inv, filename), SbomService(rt(request)))


async def api_index_sbom(request: Request) -> Response:
    """What an index serves now (its policy applied), as an SBOM."""
    from stockade.web.app import authorized_index, rt

    index, _ = await authorized_index(request, request.path_params["index"], Scope.READ)
    svc = SbomService(rt(request))
    base = str(request.base_url).rstrip("/")
    return await _respond(request, await svc.index_bom(index.name, base_url=base), svc)


async def api_index_vex(request: Request) -> Response:
    """The experts' curated decisions as an OpenVEX feed, stable per index."""
    from stockade.web.app import authorized_index, rt

    index, _ = await authorized_index(request, request.path_params["index"], Scope.READ)
    statements, last = await SbomService(rt(request)).vex_statements(index.name)
    newest = max((s.timestamp or "" for s in statements), default="")
    base = str(request.base_url).rstrip("/")
    # Stable while nothing changes: the time and version are those of the newest curation.
    text = to_openvex(
        statements,
        doc_id=f"{base}/api/v1/indexes/{index.name}/vex",
        author=f"Stockade index {index.name}",
        created=dt.datetime.fromisoformat(newest)
        if newest
        else dt.datetime.fromtimestamp(0, dt.UTC),
        version=max(1, last),
    )
    return Response(text, media_type="application/openvex+json")


ROUTES = [
    Route("/api/v1/sbom", api_sbom, methods=["POST"]),
    Route("/api/v1/indexes/{index}/sbom", api_index_sbom),
    Route("/api/v1/indexes/{index}/vex", api_index_vex),
]

"""TUF metadata and targets of a signed PyPI index (see docs/http-api.md), read on the index:

* ``GET /pypi/<index>/tuf/<version>.<role>.json`` -- root, targets, snapshot, the bins;
* ``GET /pypi/<index>/tuf/timestamp.json`` -- the newest timestamp (never cached);
* ``GET /pypi/<index>/tuf/root.json`` -- the newest root (bootstrap only over a trusted path);
* ``GET /pypi/<index>/tuf/targets/simple/<project>/<sha256>.index.html`` (and ``.index.json``)
  -- a project page exactly as signed;
* ``GET /pypi/<index>/tuf/targets/files/<project>/<sha256>.<filename>`` -- a file, through the
  same download path as ``/files/`` (policy, audit, mirror fetch-through).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stockade.types import Scope
from stockade.web.app import _pypi_only, authorized_index, download, rt
from stockade.web.blobs import blob_response


async def tuf_metadata(request: Request) -> Response:
    index, _ = await authorized_index(request, request.path_params["index"], Scope.READ)
    _pypi_only(index)
    name = request.path_params["name"]
    data = await rt(request).tuf.metadata(index, name)
    versioned = name[:1].isdigit()
    cache = "private, max-age=31536000, immutable" if versioned else "no-cache"
    return Response(data, media_type="application/json", headers={"Cache-Control": cache})


async def tuf_target(request: Request) -> Response:
    index, _ = await authorized_index(request, request.path_params["index"], Scope.READ)
    _pypi_only(index)
    runtime = rt(request)
    kind, project, name = await runtime.tuf.target(index, request.path_params["path"])
    if kind == "files":
        request.scope["path_params"] = {"index": index.name, "project": project, "filename": name}
        return await download(request)
    media = "application/vnd.pypi.simple.v1+json" if request.url.path.endswith(".json") else (
        "text/html; charset=utf-8"
    )  # fmt: skip
    headers = {"Cache-Control": "private, max-age=31536000, immutable"}
    return await blob_response(runtime.store, name, media_type=media, headers=headers)


ROUTES = [
    Route("/pypi/{index}/tuf/targets/{path:path}", tuf_target, methods=["GET", "HEAD"]),
    Route("/pypi/{index}/tuf/{name}", tuf_metadata, methods=["GET", "HEAD"]),
]

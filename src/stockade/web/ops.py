"""Operations endpoints: ``/-/healthz`` (the process answers), ``/-/readyz`` (database
reachable, schema at the newest migration, storage writable) and ``/-/metrics`` (Prometheus).
None needs credentials and none reveals data beyond counts: keep ``/-/`` off the public
internet with the reverse proxy if counts are sensitive to you."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from stockade import __version__
from stockade.services.health import readiness
from stockade.services.runtime import Runtime
from stockade.web.metrics import CONTENT_TYPE, Metrics

_NO_STORE = {"Cache-Control": "no-store"}


async def healthz(request: Request) -> Response:
    body = orjson.dumps({"status": "ok", "version": __version__})
    return Response(body, headers=_NO_STORE, media_type="application/json")


async def readyz(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    ok, checks = await readiness(runtime)
    body = orjson.dumps({"status": "ready" if ok else "not ready", "checks": checks})
    return Response(body, 200 if ok else 503, _NO_STORE, media_type="application/json")


async def metrics(request: Request) -> Response:
    m: Metrics = request.app.state.metrics
    return Response(m.render(), headers=_NO_STORE, media_type=CONTENT_TYPE)


routes = [
    Route("/-/healthz", healthz),
    Route("/-/readyz", readyz),
    Route("/-/metrics", metrics),
]

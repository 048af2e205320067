"""A pure-ASGI fast path for warm project-page hits.

``GET /pypi/<index>/simple/<project>/`` is most of an index's traffic (every resolver step of
every install). When everything it needs is already in this process — the index definition, a
verified token, a fresh rendered page — the answer needs no routing, no request object and no
I/O beyond one ``stat`` for cross-process invalidation. Anything else (cold caches, errors,
redirects, query strings, stale pages) falls through to the regular Starlette routes, which
produce the same answer more slowly, so the two paths cannot disagree on decisions: the fast
path only ever answers 200 or 304 after the same ``authorize()`` call. A team token's grants
are part of its cached record, so team checks cost no I/O here either.
"""

from __future__ import annotations

import base64
import binascii

from starlette.types import ASGIApp, Receive, Scope, Send

from stockade.core import auth
from stockade.core.simple import TEXT_HTML, negotiate
from stockade.errors import StockadeError
from stockade.services import repo
from stockade.services.repo import TokenRecord
from stockade.services.runtime import Runtime
from stockade.types import Scope as TokenScope
from stockade.web.identity import TOKEN_KEY

GZIP_MIN = 1024
_MAX_MEMO = 4096


class FastPages:
    def __init__(self, app: ASGIApp, runtime: list[Runtime]) -> None:
        self.app = app
        self._runtime = runtime  # filled by the lifespan
        self._accept: dict[bytes, str | None] = {}
        self._basic: dict[bytes, str | None] = {}
        # Plain counters for /-/metrics (web/metrics.py folds them in when scraped).
        self.page_requests = 0  # requests shaped like a project page
        self.served = 0  # answered here with 200
        self.not_modified = 0  # answered here with 304

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._runtime or not await self._try(scope, send):
            await self.app(scope, receive, send)

    def _credentials(self, authorization: bytes | None, scope: Scope) -> str | None:
        token = scope.get(TOKEN_KEY)
        if token:
            return str(token)
        if authorization is None:
            return None
        if authorization in self._basic:
            return self._basic[authorization]
        scheme, _, value = authorization.partition(b" ")
        result: str | None = None
        if scheme.lower() == b"basic":
            try:
                user, _, pw = base64.b64decode(value.strip(), validate=True).decode().partition(":")
                result = pw or user
            except (binascii.Error, UnicodeDecodeError):
                result = None
        elif scheme.lower() == b"bearer":
            result = value.strip().decode("latin-1")
        if len(self._basic) > _MAX_MEMO:
            self._basic.clear()
        self._basic[authorization] = result
        return result

    async def _try(self, scope: Scope, send: Send) -> bool:
        if scope["method"] not in ("GET", "HEAD") or scope.get("query_string"):
            return False
        path: str = scope["path"]
        parts = path.split("/")
        # ['', 'pypi', index, 'simple', project, '']
        if len(parts) != 6 or parts[1] != "pypi" or parts[3] != "simple" or parts[5] != "":
            return False
        self.page_requests += 1
        index_name, project = parts[2], parts[4]
        runtime = self._runtime[0]
        runtime.check_invalidation()
        index = runtime.indexes.cached(index_name)
        served = runtime.pages.cached(index_name, project) if index is not None else None
        if index is None or served is None or served.stale:
            return False
        accept = authorization = inm = None
        gzip_ok = False
        for key, value in scope["headers"]:
            if key == b"accept":
                accept = value
            elif key == b"authorization":
                authorization = value
            elif key == b"accept-encoding":
                gzip_ok = b"gzip" in value
            elif key == b"if-none-match":
                inm = value
        cred = self._credentials(authorization, scope)
        token = None
        rec: TokenRecord | None = None
        if cred is not None:
            rec = runtime.tokens.cached(cred)
            if rec is None:
                return False
            token = rec.info
        try:
            auth.authorize(
                token,
                index=index.name,
                needed=TokenScope.READ,
                now=repo.utcnow(),
                anonymous_read=index.anonymous_read,
            )
        except StockadeError:
            return False  # the slow path answers and audits the refusal
        if rec is not None:
            runtime.tokens.note_use(rec)
        if accept is None:
            ctype: str | None = TEXT_HTML
        elif accept in self._accept:
            ctype = self._accept[accept]
        else:
            ctype = negotiate(accept.decode("latin-1"))
            if len(self._accept) > _MAX_MEMO:
                self._accept.clear()
            self._accept[accept] = ctype
        if ctype is None:
            return False
        rendered = served.render(ctype)
        gz_tag = rendered.etag[:-1] + '-gz"'
        media = b"text/html; charset=utf-8" if ctype == TEXT_HTML else ctype.encode()
        headers = [
            (b"content-type", media),
            (b"vary", b"Accept, Accept-Encoding"),
            (b"cache-control", b"private, max-age=60"),
        ]
        if inm is not None:
            given = {t.strip().removeprefix(b"W/") for t in inm.split(b",")}
            if rendered.etag.encode() in given or gz_tag.encode() in given or b"*" in given:
                headers.append((b"etag", rendered.etag.encode()))
                await send({"type": "http.response.start", "status": 304, "headers": headers})
                await send({"type": "http.response.body", "body": b""})
                self.not_modified += 1
                return True
        body = rendered.body
        if gzip_ok and len(body) >= GZIP_MIN:
            body = rendered.gzipped()
            headers.append((b"content-encoding", b"gzip"))
            headers.append((b"etag", gz_tag.encode()))
        else:
            headers.append((b"etag", rendered.etag.encode()))
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )
        self.served += 1
        return True

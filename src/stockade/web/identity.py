"""Credentials from a request: ``/t/<token>/`` prefix, HTTP basic (any user) or Bearer."""

from __future__ import annotations

import base64
import binascii

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN_KEY = "stockade.token"  # noqa: S105 - a scope key, not a secret


class TokenPrefixMiddleware:
    """Strip ``/t/<token>`` from the path (the conda convention) and remember the token.

    The scope is changed in place so that access logs never show the token. Links Stockade
    renders are relative, so the prefix survives in every link a client follows.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path.startswith("/t/"):
                token, sep, rest = path[3:].partition("/")
                scope[TOKEN_KEY] = token
                scope["path"] = "/" + rest if sep else "/"
                scope["raw_path"] = scope["path"].encode()
                scope["stockade.prefix"] = f"/t/{token}"
        await self.app(scope, receive, send)


def credentials(request: Request) -> str | None:
    token = request.scope.get(TOKEN_KEY)
    if token:
        return str(token)
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ""
        user, _, password = decoded.partition(":")
        return password or user
    if scheme in ("bearer", "token"):
        return value
    return ""


def client_addr(request: Request) -> str | None:
    return request.client.host if request.client else None

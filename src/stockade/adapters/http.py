"""The one httpx client factory: timeouts, user agent, connection limits, trust store.

TLS trusts the system store (OpenSSL's default paths) plus ``ca_bundle`` / ``SSL_CERT_FILE`` when
given, so a company's TLS-inspecting proxy CA works as it does for pip. Standard proxy variables
(``HTTPS_PROXY``, ``NO_PROXY``) are honoured.
"""

from __future__ import annotations

import os
import ssl

import httpx

from stockade import __version__

USER_AGENT = f"stockade/{__version__}"


def tls_context(ca_bundle: str | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    for extra in (ca_bundle, os.environ.get("SSL_CERT_FILE")):
        if extra and os.path.exists(extra):
            ctx.load_verify_locations(cafile=extra)
    return ctx


def make_client(timeout: float, ca_bundle: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        headers={"User-Agent": USER_AGENT},
        follow_redirects=True,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        verify=tls_context(ca_bundle),
        trust_env=True,
    )

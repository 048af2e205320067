"""The one httpx client factory: timeouts, user agent, connection limits."""

from __future__ import annotations

import httpx

from stockade import __version__

USER_AGENT = f"stockade/{__version__} (+https://github.com/stockade)"


def make_client(timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        headers={"User-Agent": USER_AGENT},
        follow_redirects=True,
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        trust_env=False,
    )

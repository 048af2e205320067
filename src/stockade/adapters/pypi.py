"""An upstream PEP 503/691 simple index, fetched one project at a time (never the full list)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from stockade.core.simple import (
    HTML_V1,
    JSON_V1,
    ProjectPage,
    parse_html_page,
    parse_json_page,
)
from stockade.errors import PayloadTooLarge, UpstreamError, UpstreamUnavailable
from stockade.types import NormalizedName

ACCEPT = f"{JSON_V1}, {HTML_V1};q=0.2, text/html;q=0.1"


@dataclass(frozen=True, slots=True)
class PageFetch:
    status: str  # "ok" | "not_modified" | "not_found"
    page: ProjectPage | None = None
    etag: str | None = None
    last_modified: str | None = None


class UpstreamIndex:
    """Fetch project pages from one upstream simple index."""

    def __init__(self, client: httpx.AsyncClient, simple_url: str, max_page_size: int) -> None:
        self.client = client
        self.simple_url = simple_url if simple_url.endswith("/") else simple_url + "/"
        self.max_page_size = max_page_size

    def project_url(self, project: NormalizedName) -> str:
        return f"{self.simple_url}{project}/"

    async def fetch_page(
        self, project: NormalizedName, etag: str | None = None, last_modified: str | None = None
    ) -> PageFetch:
        url = self.project_url(project)
        headers = {"Accept": ACCEPT}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        try:
            async with self.client.stream("GET", url, headers=headers) as resp:
                if resp.status_code == 304:
                    return PageFetch("not_modified", etag=etag, last_modified=last_modified)
                if resp.status_code == 404:
                    return PageFetch("not_found")
                if resp.status_code != 200:
                    raise UpstreamUnavailable(
                        f"upstream answered {resp.status_code} for {url}",
                        "check the mirror's upstream URL or try again later",
                    )
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > self.max_page_size:
                        raise PayloadTooLarge(
                            f"upstream page {url} exceeds {self.max_page_size} bytes",
                            "raise max_page_size if this upstream is trusted",
                        )
                ctype = resp.headers.get("content-type", "").split(";")[0].strip().lower()
                final_url = str(resp.url)
                try:
                    if ctype == JSON_V1 or ctype.endswith("+json") or ctype == "application/json":
                        page = parse_json_page(bytes(body), final_url, project)
                    else:
                        page = parse_html_page(bytes(body), final_url, project)
                except (ValueError, KeyError, TypeError) as exc:
                    raise UpstreamError(f"upstream page {url} is malformed: {exc}") from exc
                return PageFetch(
                    "ok",
                    page=page,
                    etag=resp.headers.get("etag"),
                    last_modified=resp.headers.get("last-modified"),
                )
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(
                f"cannot reach upstream {url}: {type(exc).__name__}: {exc}",
                "check the network and the mirror's upstream URL",
            ) from exc

    async def fetch_document(self, url: str, cap: int) -> bytes:
        """A small document the upstream links from its pages (a PEP 740 provenance object),
        at most ``cap`` bytes. UpstreamUnavailable when it cannot be had."""
        try:
            async with self.client.stream("GET", url, headers={"Accept": "application/json"}) as r:
                if r.status_code != 200:
                    raise UpstreamUnavailable(
                        f"upstream answered {r.status_code} for {url}",
                        "try again later; nothing that depends on it is served meanwhile",
                    )
                body = bytearray()
                async for chunk in r.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > cap:
                        raise PayloadTooLarge(f"{url} exceeds {cap} bytes")
                return bytes(body)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(
                f"cannot reach upstream {url}: {type(exc).__name__}: {exc}",
                "check the network and the mirror's upstream URL",
            ) from exc

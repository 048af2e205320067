"""Prometheus metrics for ``/-/metrics`` (prometheus-client).

What is counted, and where:

* ``stockade_http_requests_total{route,method,status}``: every request. The Starlette routes are
  counted by :class:`RequestMetrics` (route = the endpoint's name, ``unmatched`` for a 404 no
  route took); the fast path (``web/fast.py``) only increments plain ``int`` attributes, which
  :meth:`Metrics.sync` folds in at each scrape and every few seconds (route ``simple_project``).
* ``stockade_page_cache_total{result}``: project-page requests the fast path answered from this
  process's rendered-page cache (``hit``) or passed on to the routes (``miss``: cold or stale
  page, unknown token, refusal…).
* ``stockade_upstream_request_seconds{host}`` and ``stockade_upstream_errors_total{host,kind}``:
  every request to an upstream (PyPI, conda, OSV, PyPI JSON API), timed to its response headers;
  errors are transport failures and 5xx answers. Measured by wrapping the transports of the one
  shared httpx client.
* ``stockade_policy_blocks_total{rule}``: downloads refused by a policy, by rule kind.
* ``stockade_jobs{queue}``: work queued in this process at scrape time (audit events waiting
  for the batch writer, background malware scans, identity lookups, mirror fetches in flight).

Processes: by default each worker process keeps its own values and a scrape sees the process
that answered it (run ``--workers 1`` or scrape each worker). When ``PROMETHEUS_MULTIPROC_DIR``
is set (an empty directory, before the server starts), prometheus-client's multiprocess mode
aggregates the counters and histograms of every worker; ``stockade_jobs`` is then per process
(labelled ``pid``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import httpx
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
)
from prometheus_client import generate_latest as _generate
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from stockade.services.runtime import Runtime
    from stockade.web.fast import FastPages

CONTENT_TYPE = CONTENT_TYPE_LATEST
_RULE_KIND = re.compile(r"\(([a-z_-]+)\)")
_MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"
# No *_created series: they double the output and nobody graphs them.
disable_created_metrics()  # type: ignore[no-untyped-call]


class Metrics:
    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(_MULTIPROC))
        # Our own registry: several apps in one process (tests) must not collide. In
        # multiprocess mode the values live in files and a scrape collects those instead.
        self.registry = CollectorRegistry(auto_describe=True)
        reg = None if self.multiprocess else self.registry
        self.requests = Counter(
            "stockade_http_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=reg,
        )
        self.page_cache = Counter(
            "stockade_page_cache",
            "project-page requests answered from the in-process page cache (hit) or not (miss)",
            ["result"],
            registry=reg,
        )
        self.upstream_seconds = Histogram(
            "stockade_upstream_request_seconds",
            "requests to upstream indexes and feeds, time to response headers",
            ["host"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
            registry=reg,
        )
        self.upstream_errors = Counter(
            "stockade_upstream_errors",
            "upstream requests that failed (transport error) or answered 5xx",
            ["host", "kind"],
            registry=reg,
        )
        self.blocks = Counter(
            "stockade_policy_blocks",
            "downloads refused by an index policy, by rule kind",
            ["rule"],
            registry=reg,
        )
        self.fast: FastPages | None = None
        self.runtime: Runtime | None = None
        self._synced = (0, 0, 0)
        if not self.multiprocess:
            self.registry.register(_Jobs(self, per_pid=False))

    # -- feeding ---------------------------------------------------------------------------

    def blocked(self, rules: Iterable[str]) -> None:
        kinds = {m.group(1) for r in rules if (m := _RULE_KIND.search(r))} or {"unknown"}
        for kind in kinds:
            self.blocks.labels(kind).inc()

    def sync(self) -> None:
        """Fold the fast path's plain counters into the Prometheus ones."""
        fast = self.fast
        if fast is None:
            return
        now = (fast.page_requests, fast.served, fast.not_modified)
        before, self._synced = self._synced, now
        requests, served, not_modified = (a - b for a, b in zip(now, before, strict=True))
        if served:
            self.requests.labels("simple_project", "GET", "200").inc(served)
        if not_modified:
            self.requests.labels("simple_project", "GET", "304").inc(not_modified)
        if served + not_modified:
            self.page_cache.labels("hit").inc(served + not_modified)
        if requests - served - not_modified > 0:
            self.page_cache.labels("miss").inc(requests - served - not_modified)

    @contextlib.asynccontextmanager
    async def syncing(self, every: float = 5.0) -> AsyncIterator[None]:
        """In multiprocess mode, fold the fast path's counters in every few seconds (a scrape
        reaches one process; the others' counts must already be in the shared files)."""
        if not self.multiprocess:
            yield
            return

        async def loop() -> None:
            while True:
                await asyncio.sleep(every)
                self.sync()

        task = asyncio.create_task(loop(), name="metrics-sync")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.sync()

    def instrument(self, client: httpx.AsyncClient) -> None:
        """Time every upstream request of ``client`` (all its transports, proxies included)."""
        transport = getattr(client, "_transport", None)
        if isinstance(transport, httpx.AsyncBaseTransport) and not isinstance(transport, _Metered):
            client._transport = _Metered(transport, self)
        mounts = getattr(client, "_mounts", None)
        if isinstance(mounts, dict):
            for pattern, mounted in list(mounts.items()):
                if isinstance(mounted, httpx.AsyncBaseTransport) and not isinstance(
                    mounted, _Metered
                ):
                    mounts[pattern] = _Metered(mounted, self)

    # -- scraping --------------------------------------------------------------------------

    def render(self) -> bytes:
        self.sync()
        if not self.multiprocess:
            return _generate(self.registry)
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        registry.register(_Jobs(self, per_pid=True))
        return _generate(registry)


class _Metered(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host or "unknown"
        start = time.perf_counter()
        try:
            response = await self._inner.handle_async_request(request)
        except httpx.TransportError as exc:
            self._metrics.upstream_errors.labels(host, type(exc).__name__).inc()
            raise
        finally:
            self._metrics.upstream_seconds.labels(host).observe(time.perf_counter() - start)
        if response.status_code >= 500:
            self._metrics.upstream_errors.labels(host, f"http_{response.status_code}").inc()
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _Metered:
        await self._inner.__aenter__()
        return self

    async def __aexit__(self, *args: Any) -> None:
        await self._inner.__aexit__(*args)


def _depth(obj: object, attr: str) -> int:
    """The size of a service's internal queue (read-only; 0 when the service has none)."""
    got = getattr(obj, attr, None)
    try:
        return len(got) if got is not None else 0
    except TypeError:
        return 0


class _Jobs(Collector):
    def __init__(self, metrics: Metrics, *, per_pid: bool) -> None:
        self._metrics = metrics
        self._per_pid = per_pid

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        labels = ["queue", "pid"] if self._per_pid else ["queue"]
        family = GaugeMetricFamily(
            "stockade_jobs",
            "work queued or running in the background in this process",
            labels=labels,
        )
        rt = self._metrics.runtime
        if rt is not None:
            pid = str(os.getpid())
            for queue, obj, attr in (
                ("audit_events", rt.audit, "_queue"),
                ("malware_scans", rt.threats, "_inflight"),
                ("identity_lookups", rt.identity, "_tasks"),
                ("mirror_fetches", rt.files, "_inflight"),
            ):
                values = [queue, pid] if self._per_pid else [queue]
                family.add_metric(values, _depth(obj, attr))
        yield family


class RequestMetrics:
    """Counts requests that reach the Starlette routes, by endpoint name and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            endpoint = scope.get("endpoint")
            route = getattr(endpoint, "__name__", None) or "unmatched"
            self.metrics.requests.labels(route, scope["method"], str(status)).inc()

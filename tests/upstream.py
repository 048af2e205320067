"""A controllable fake PyPI ("upstream") on 127.0.0.1, served from a background thread.

Serves a tree written by :func:`tests.builders.write_simple_tree`::

    with Upstream(root) as up:
        up.simple_url            # http://127.0.0.1:PORT/simple/
        up.tamper("alpha-1.0-py3-none-any.whl")
        up.down = True; up.down_mode = "reset"
        up.count("/files/alpha")

Routes: ``/simple/`` and ``/simple/<project>/`` (PEP 503 HTML or PEP 691 JSON by
``Accept``), ``/files/<filename>`` (octet-stream), and any file the test writes under
``root/pypi/`` or ``root/integrity/`` (JSON API answers, PEP 740 provenance) as JSON.
``/simple`` and ``/simple/<project>`` redirect (301) to the slash form, non-normalised project
names redirect to the normalised one, unknown projects/files are 404.
"""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import socket
import struct
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Literal, NamedTuple
from urllib.parse import unquote, urlsplit

from packaging.utils import canonicalize_name

from .builders import extend_simple_tree

__all__ = [
    "HTML_TYPE",
    "JSON_TYPE",
    "V1_HTML_TYPE",
    "Headers",
    "RecordedRequest",
    "Upstream",
    "negotiate",
]

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
V1_HTML_TYPE = "application/vnd.pypi.simple.v1+html"
HTML_TYPE = "text/html"
_LATEST_JSON = "application/vnd.pypi.simple.latest+json"
_LATEST_HTML = "application/vnd.pypi.simple.latest+html"

DownMode = Literal["503", "reset", "hang"]
_DOWN_MODES: tuple[str, ...] = ("503", "reset", "hang")


# --------------------------------------------------------------------------- negotiation


def _parse_accept(accept: str) -> list[tuple[str, float]]:
    ranges: list[tuple[str, float]] = []
    for part in accept.split(","):
        pieces = [p.strip() for p in part.split(";")]
        media = pieces[0].lower()
        if not media:
            continue
        q = 1.0
        for param in pieces[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        ranges.append((media, q))
    return ranges


def _match(
    offer: str, aliases: Sequence[str], ranges: Sequence[tuple[str, float]]
) -> tuple[float, int, int]:
    """(q, specificity, -position) of the most specific range matching ``offer``."""
    best: tuple[float, int, int] | None = None
    main = offer.split("/")[0]
    for pos, (media, q) in enumerate(ranges):
        if media == offer or media in aliases:
            spec = 3
        elif media == f"{main}/*":
            spec = 2
        elif media == "*/*":
            spec = 1
        else:
            continue
        cand = (q, spec, -pos)
        if best is None or cand[1] > best[1] or (cand[1] == best[1] and cand[2] > best[2]):
            best = cand
    return best if best is not None else (0.0, 0, 0)


def negotiate(accept: str | None, *, json_enabled: bool = True) -> str:
    """Pick the representation for a simple-API page.

    Returns :data:`JSON_TYPE`, :data:`V1_HTML_TYPE` or :data:`HTML_TYPE`.  The
    highest q wins; ties go to the range listed first (so ``v1+json, text/html``
    is JSON); wildcard-only / missing / unsatisfiable Accept gives ``text/html``.
    """
    if not accept:
        return HTML_TYPE
    ranges = _parse_accept(accept)
    offers: list[tuple[str, tuple[str, ...]]] = [
        (HTML_TYPE, ()),
        (V1_HTML_TYPE, (_LATEST_HTML,)),
    ]
    if json_enabled:
        offers.append((JSON_TYPE, (_LATEST_JSON,)))
    best_type = HTML_TYPE
    best_key: tuple[float, int, int] = (0.0, 0, 0)
    for offer, aliases in offers:
        q, spec, neg_pos = _match(offer, aliases, ranges)
        if q <= 0:
            continue
        # Higher q first; then an explicitly named type over a wildcard match;
        # then whichever the client listed first.
        key = (q, 1 if spec == 3 else 0, neg_pos)
        if key > best_key:
            best_type, best_key = offer, key
    return best_type


# --------------------------------------------------------------------------- records


class Headers(dict[str, str]):
    """A plain ``dict`` of request headers with case-insensitive lookup (keys stored lower-case)."""

    def __init__(self, items: Mapping[str, str] | Sequence[tuple[str, str]] = ()) -> None:
        super().__init__()
        pairs = items.items() if isinstance(items, Mapping) else items
        for key, value in pairs:
            lk = key.lower()
            self[lk] = f"{self[lk]}, {value}" if lk in self else value

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __setitem__(self, key: str, value: str) -> None:
        super().__setitem__(key.lower(), value)

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(key.lower(), default)


class RecordedRequest(NamedTuple):
    """One request as received: unpacks as ``(method, path, headers)``."""

    method: str
    path: str
    headers: Headers


@dataclass(frozen=True)
class _Slow:
    delay_s: float
    chunk_size: int | None
    chunk_delay_s: float


@dataclass(frozen=True)
class _Fail:
    status: int
    remaining: int | None  # None = forever


# --------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "FakeUpstream/1.0"
    sys_version = ""

    # -- plumbing --------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.server.upstream._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.upstream._track(self.connection, add=False)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._dispatch(head=False)

    def do_HEAD(self) -> None:
        self._dispatch(head=True)

    def do_POST(self) -> None:
        self._dispatch(head=False)

    def do_PUT(self) -> None:
        self._dispatch(head=False)

    def do_DELETE(self) -> None:
        self._dispatch(head=False)

    # -- dispatch --------------------------------------------------------------

    def _dispatch(self, *, head: bool) -> None:
        up = self.server.upstream
        up._record(RecordedRequest(self.command, self.path, Headers(list(self.headers.items()))))
        try:
            self._route(up, head=head)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _route(self, up: Upstream, *, head: bool) -> None:
        down, mode = up._down_state()
        if down:
            if mode == "503":
                self._simple(503, b"upstream is down\n", extra={"Retry-After": "1"}, head=head)
            else:
                if mode == "hang":
                    up._wait_while_hanging()
                self._abort()
            return

        path = unquote(urlsplit(self.path).path)
        fail = up._take_failure(path)
        if fail is not None:
            self._simple(fail, f"injected failure {fail}\n".encode(), head=head)
            return
        if self.command not in ("GET", "HEAD"):
            self._simple(405, b"method not allowed\n", extra={"Allow": "GET, HEAD"}, head=head)
            return

        if path == "/simple":
            self._redirect("/simple/", head=head)
        elif path == "/simple/":
            self._page(up, up.root / "simple", path, head=head)
        elif path.startswith("/simple/"):
            rest = path[len("/simple/") :]
            project = rest.rstrip("/")
            if not project or "/" in project:
                self._simple(404, b"not found\n", head=head)
                return
            canonical = canonicalize_name(project)
            if canonical != project:
                self._redirect(f"/simple/{canonical}/", head=head)
            elif not rest.endswith("/"):
                self._redirect(f"/simple/{project}/", head=head)
            elif (up.root / "simple" / project / "index.html").is_file():
                self._page(up, up.root / "simple" / project, path, head=head)
            else:
                self._simple(404, b"no such project\n", head=head)
        elif path.startswith("/files/"):
            filename = path[len("/files/") :]
            target = up.root / "files" / filename
            if (
                not filename
                or "/" in filename
                or "\\" in filename
                or filename.startswith(".")
                or not target.is_file()
            ):
                self._simple(404, b"no such file\n", head=head)
                return
            self._content(
                up,
                keys=(filename, path),
                body=target.read_bytes(),
                content_type="application/octet-stream",
                mtime=target.stat().st_mtime,
                head=head,
            )
        elif path.startswith(("/pypi/", "/integrity/")):  # JSON API and PEP 740 provenance
            target = up.root / path.strip("/")
            if ".." in path.split("/") or not target.is_file():
                self._simple(404, b"not found\n", head=head)
                return
            self._content(
                up,
                keys=(path,),
                body=target.read_bytes(),
                content_type="application/json",
                mtime=target.stat().st_mtime,
                head=head,
            )
        else:
            self._simple(404, b"not found\n", head=head)

    # -- responses -------------------------------------------------------------

    def _page(self, up: Upstream, directory: Path, path: str, *, head: bool) -> None:
        chosen = negotiate(self.headers.get("Accept"), json_enabled=up.json_enabled)
        source = directory / ("index.json" if chosen == JSON_TYPE else "index.html")
        self._content(
            up,
            keys=(path,),
            body=source.read_bytes(),
            content_type=chosen,
            mtime=source.stat().st_mtime,
            head=head,
            extra={"Vary": "Accept"},
        )

    def _simple(
        self,
        status: int,
        body: bytes,
        *,
        head: bool,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _redirect(self, location: str, *, head: bool) -> None:
        self._simple(301, b"moved\n", head=head, extra={"Location": location})

    def _abort(self) -> None:
        """Drop the connection without a response (RST where the OS allows)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()

    def _not_modified(self, etag: str, last_modified: str, mtime: float) -> bool:
        inm = self.headers.get("If-None-Match")
        if inm is not None:
            tags = [t.strip() for t in inm.split(",")]
            return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)
        ims = self.headers.get("If-Modified-Since")
        if ims is not None:
            try:
                since = email.utils.parsedate_to_datetime(ims).timestamp()
            except (TypeError, ValueError):
                return False
            return int(mtime) <= since
        return False

    def _content(
        self,
        up: Upstream,
        *,
        keys: Collection[str],
        body: bytes,
        content_type: str,
        mtime: float,
        head: bool,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        tamper, truncate_at, slow = up._knobs_for(keys)
        if tamper and body:
            mid = len(body) // 2
            body = body[:mid] + bytes([body[mid] ^ 0xFF]) + body[mid + 1 :]
        etag = f'"{hashlib.sha256(body).hexdigest()}"'
        last_modified = email.utils.formatdate(mtime, usegmt=True)

        if self._not_modified(etag, last_modified, mtime):
            self.send_response(304)
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", last_modified)
            for key, value in (extra or {}).items():
                self.send_header(key, value)
            self.end_headers()
            return

        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_modified)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if head:
            return

        if slow is not None and slow.delay_s > 0:
            up._sleep(slow.delay_s)
        if truncate_at is not None:
            body = body[: int(len(body) * truncate_at)]
            self.close_connection = True
        if slow is not None and slow.chunk_size:
            for start in range(0, len(body), slow.chunk_size):
                if start:
                    up._sleep(slow.chunk_delay_s)
                self.wfile.write(body[start : start + slow.chunk_size])
        else:
            self.wfile.write(body)
        if truncate_at is not None:
            # Make sure the peer sees EOF right after the short body.
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_WR)


# --------------------------------------------------------------------------- public API


class Upstream:
    """Fake upstream index serving ``root`` (see :func:`tests.builders.write_simple_tree`).

    The server starts in ``__init__``; use as a context manager or call
    :meth:`close`.  All knobs are thread-safe and take effect for the next
    request.  Knob keys are matched exactly against either the bare filename of
    a ``/files/`` request or the full request path (e.g. ``"/simple/alpha/"``).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._requests: list[RecordedRequest] = []
        self._conns: set[socket.socket] = set()
        self._down = False
        self._down_mode: DownMode = "503"
        self._tampered: set[str] = set()
        self._truncated: dict[str, float] = {}
        self._slowed: dict[str, _Slow] = {}
        self._failures: dict[str, _Fail] = {}
        #: Set False to behave like an HTML-only (pre PEP 691) index.
        self.json_enabled = True
        self._server = _Server(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"upstream-{self.port}",
            daemon=True,
        )
        self._thread.start()

    # -- addresses -------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def simple_url(self) -> str:
        return f"{self.url}/simple/"

    @property
    def files_url(self) -> str:
        return f"{self.url}/files/"

    # -- lifecycle -------------------------------------------------------------

    def __enter__(self) -> Upstream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving, drop open connections and join the server thread (idempotent)."""
        if self._closing.is_set():
            return
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)

    # -- content ---------------------------------------------------------------

    def add_files(
        self,
        files: Sequence[Path],
        *,
        yanked: Mapping[str, str] | None = None,
        with_metadata: Collection[str] = frozenset(),
        requires_python: Mapping[str, str] | None = None,
        base_files_url: str | None = None,
    ) -> None:
        """Publish more files (see :func:`tests.builders.extend_simple_tree`)."""
        extend_simple_tree(
            self.root,
            files,
            yanked=yanked,
            with_metadata=with_metadata,
            requires_python=requires_python,
            base_files_url=base_files_url,
        )

    # -- knobs -----------------------------------------------------------------

    @property
    def down(self) -> bool:
        with self._lock:
            return self._down

    @down.setter
    def down(self, value: bool) -> None:
        with self._lock:
            self._down = bool(value)

    @property
    def down_mode(self) -> DownMode:
        """``"503"`` (default), ``"reset"`` (close without response) or ``"hang"``
        (hold the connection open without answering until ``down`` is cleared or
        the server closes, then drop it)."""
        with self._lock:
            return self._down_mode

    @down_mode.setter
    def down_mode(self, value: DownMode) -> None:
        if value not in _DOWN_MODES:
            raise ValueError(f"down_mode must be one of {_DOWN_MODES}, not {value!r}")
        with self._lock:
            self._down_mode = value

    def tamper(self, key: str) -> None:
        """Serve ``key`` with its middle byte flipped (same length; pages keep the old hash)."""
        with self._lock:
            self._tampered.add(key)

    def truncate(self, key: str, at_fraction: float = 0.5) -> None:
        """Advertise the full Content-Length but close after ``at_fraction`` of the body."""
        if not 0.0 <= at_fraction < 1.0:
            raise ValueError("at_fraction must be in [0, 1)")
        with self._lock:
            self._truncated[key] = at_fraction

    def slow(
        self,
        key: str,
        delay_s: float,
        *,
        chunk_size: int | None = None,
        chunk_delay_s: float = 0.0,
    ) -> None:
        """Sleep ``delay_s`` after the headers, before the body; with ``chunk_size``
        also send the body in chunks with ``chunk_delay_s`` between them."""
        with self._lock:
            self._slowed[key] = _Slow(delay_s, chunk_size, chunk_delay_s)

    def fail(self, key: str, status: int = 500, times: int | None = None) -> None:
        """Answer ``status`` (empty-ish text body) for ``key``; ``times=None`` = until reset.

        Here ``key`` is matched against the request path *and* its last segment.
        """
        with self._lock:
            self._failures[key] = _Fail(status, times)

    def reset(self) -> None:
        """Clear every knob (down, tamper, truncate, slow, fail, json_enabled). Keeps requests."""
        with self._lock:
            self._down = False
            self._down_mode = "503"
            self._tampered.clear()
            self._truncated.clear()
            self._slowed.clear()
            self._failures.clear()
            self.json_enabled = True

    # -- request log -----------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Snapshot of every request received so far: ``(method, path, headers)`` tuples."""
        with self._lock:
            return list(self._requests)

    def count(self, path_substring: str, method: str | None = None) -> int:
        """Number of requests whose raw path contains ``path_substring``."""
        with self._lock:
            return sum(
                1
                for r in self._requests
                if path_substring in r.path and (method is None or r.method == method)
            )

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- internals used by the handler ----------------------------------------

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(req)

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _down_state(self) -> tuple[bool, DownMode]:
        with self._lock:
            return self._down, self._down_mode

    def _wait_while_hanging(self) -> None:
        while not self._closing.wait(0.02):
            down, mode = self._down_state()
            if not down or mode != "hang":
                return

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._closing.wait(seconds)
        else:
            time.sleep(0)

    def _knobs_for(self, keys: Collection[str]) -> tuple[bool, float | None, _Slow | None]:
        with self._lock:
            tamper = any(k in self._tampered for k in keys)
            truncate = next((self._truncated[k] for k in keys if k in self._truncated), None)
            slow = next((self._slowed[k] for k in keys if k in self._slowed), None)
        return tamper, truncate, slow

    def _take_failure(self, path: str) -> int | None:
        keys = (path, path.rstrip("/").rsplit("/", 1)[-1])
        with self._lock:
            for key in keys:
                fail = self._failures.get(key)
                if fail is None:
                    continue
                if fail.remaining is not None:
                    if fail.remaining <= 0:
                        continue
                    self._failures[key] = _Fail(fail.status, fail.remaining - 1)
                return fail.status
        return None

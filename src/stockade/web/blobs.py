"""Responses that send a stored blob: the one way every route serves bytes from the BlobStore.

- a local store: ``FileResponse`` (sendfile, Range, as before);
- S3 with ``storage_presign_downloads`` and a route that allows it (package files): a 302 to a
  short-lived presigned URL, so the bytes go from the bucket straight to the client;
- otherwise a streamed body. The store is asked for the first chunk before the response
  starts, so an unreachable store is a clean 503 (``StorageUnavailable``) and a missing object
  a 404, never a 200 that breaks off.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from starlette.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from stockade.core.ports import BlobStore


async def blob_response(
    store: BlobStore,
    sha256: str,
    *,
    media_type: str,
    headers: dict[str, str] | None = None,
    filename: str | None = None,
    redirect: bool = False,
) -> Response:
    """``redirect``: a presigned redirect is acceptable (only for immutable package files whose
    headers carry nothing the client needs, e.g. no Content-Encoding)."""
    headers = dict(headers or {})
    path = store.local_path(sha256)
    if path is not None:
        return FileResponse(path, media_type=media_type, headers=headers, stat_result=None)
    if redirect:
        url = store.presigned_url(sha256, filename=filename, media_type=media_type)
        if url is not None:
            # The URL expires: the redirect itself must not be cached.
            return RedirectResponse(url, 302, headers={"Cache-Control": "no-store"})
    body = await _primed(store.stream(sha256))
    headers["Content-Length"] = str(await anyio.to_thread.run_sync(store.size, sha256))
    return StreamingResponse(body, media_type=media_type, headers=headers)


async def _primed(stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Pull the first chunk now (errors raise here, before any response byte), then the rest."""
    try:
        first: bytes | None = await anext(stream)
    except StopAsyncIteration:
        first = None
    except BaseException:
        await _close(stream)
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            if first:
                yield first
            if first is not None:
                async for chunk in stream:
                    yield chunk
        finally:
            await _close(stream)

    return body()


async def _close(stream: AsyncIterator[bytes]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()

"""Streaming response bodies under ASGI without holding them whole in memory.

Under ASGI (how the portal is served) Django buffers a synchronous iterator completely before
sending it, so synchronous chunks are handed over one at a time from a worker thread instead.
Under WSGI (the test client) the iterator is streamed as is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import IO

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse

CHUNK = 256 * 1024


def stream_body(request: HttpRequest, chunks: Iterator[bytes], *, thread_sensitive: bool = True):
    """`chunks` as a body Django streams under ASGI too. thread_sensitive: each step runs in the
    request's own thread (needed when the chunks come from a database cursor)."""
    return one_by_one(chunks, thread_sensitive=thread_sensitive) if isinstance(request, ASGIRequest) else chunks


async def one_by_one(chunks: Iterator[bytes], *, thread_sensitive: bool = True) -> AsyncIterator[bytes]:
    step = sync_to_async(next, thread_sensitive=thread_sensitive)
    try:
        while (chunk := await step(chunks, None)) is not None:
            yield chunk
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            await sync_to_async(close, thread_sensitive=thread_sensitive)()


def _file_chunks(handle: IO[bytes]) -> Iterator[bytes]:
    try:
        while chunk := handle.read(CHUNK):
            yield chunk
    finally:
        handle.close()


def file_download(request: HttpRequest, handle: IO[bytes], *, filename: str, size: int | None = None):
    """An attachment streamed from an open file, chunk by chunk."""
    response = StreamingHttpResponse(
        stream_body(request, _file_chunks(handle), thread_sensitive=False), content_type="application/octet-stream"
    )
    safe = filename.replace('"', "").replace("\\", "").replace("\n", "").replace("\r", "") or "download"
    response["Content-Disposition"] = f'attachment; filename="{safe}"'
    response["X-Content-Type-Options"] = "nosniff"
    if size is not None:
        response["Content-Length"] = str(size)
    return response

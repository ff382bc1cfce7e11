"""Streaming responses that fail cleanly: the first chunk is produced (decrypted) before the
status line is sent, so a broken blob or a refused key is an error answer, not a truncated 200."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import StreamingResponse

from api.metrics import REQUEST_BEGUN, AppMetrics
from node.readback import primed

if TYPE_CHECKING:
    from node.runtime import NodeRuntime
    from node.services.archives import ContentStream

logger = logging.getLogger(__name__)


Observer = Callable[[float, float | None, int], None]
"""Called once a timed stream ends: seconds to the first byte, to the last byte (None when the
client went away first) and the bytes handed to the server."""


def timed(chunks: Iterable[bytes], begun: float, observe: Observer) -> Iterator[bytes]:
    """``chunks`` primed (see ``primed``), timed from ``begun`` (a ``time.perf_counter()``):
    the first byte is when the first chunk is ready to send; the last byte is when the server
    asks for more after sending the last chunk. ``observe`` is called once, at the end."""
    body = primed(chunks)
    first = time.perf_counter() - begun

    def observed() -> Iterator[bytes]:
        sent = 0
        last: float | None = None
        try:
            for chunk in body:
                sent += len(chunk)
                yield chunk
            last = time.perf_counter() - begun
        finally:
            observe(first, last, sent)

    return observed()


def content_response(
    request: Request,
    runtime: NodeRuntime,
    stream: ContentStream,
    purpose: str,
    headers: dict[str, str] | None = None,
) -> StreamingResponse:
    """One opened version (``ArchiveService.open_content``: policy checked, ACCESS committed) as
    a download, for the API's content route and the console's alike: timed from the request's
    start, then counted in the metrics and recorded by ``ReportService.record_read`` (retrieval
    time, the tier read from, and the last access the idle-time tier policy reads). The record
    is best effort: the read already happened, so a failure there is logged, never raised."""
    begun = getattr(request.state, REQUEST_BEGUN, None)
    if not isinstance(begun, float):
        begun = time.perf_counter()
    metrics: AppMetrics | None = getattr(request.app.state, "metrics", None)

    def observe(first: float, last: float | None, sent: int) -> None:
        try:
            if metrics is not None:
                metrics.content_reads.labels(stream.record_class, purpose).inc()
                metrics.content_first_byte.labels(stream.record_class).observe(first)
                if last is not None:
                    metrics.content_last_byte.labels(stream.record_class).observe(last)
            runtime.reports.record_read(
                archive_id=stream.archive_id,
                version=stream.version,
                record_class=stream.record_class,
                purpose=purpose,
                first_byte_seconds=first,
                last_byte_seconds=last,
                bytes_sent=sent,
            )
        except Exception:  # timing is best effort: the read already happened
            logger.warning("content read timing not recorded", exc_info=True)

    answer_headers = dict(headers or {})
    answer_headers.update(
        {
            "Content-Length": str(stream.size),
            "Content-Disposition": content_disposition(stream.filename),
            "X-Archive-Version": str(stream.version),
        }
    )
    return StreamingResponse(
        timed(stream.chunks, begun, observe), media_type=stream.media_type, headers=answer_headers
    )


def content_disposition(filename: str | None) -> str:
    """Always an attachment; the stored file name (if any) in RFC 5987 form."""
    if not filename:
        return "attachment"
    return f"attachment; filename*=UTF-8''{quote(filename, safe='')}"

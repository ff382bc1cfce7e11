"""Streaming responses that fail cleanly: the first chunk is produced (decrypted) before the
status line is sent, so a broken blob or a refused key is an error answer, not a truncated 200."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator


def primed(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """``chunks`` with its first item already computed (raises now if that fails)."""
    iterator = iter(chunks)
    first = next(iterator, b"")

    def body() -> Iterator[bytes]:
        if first:
            yield first
        yield from iterator

    return body()


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

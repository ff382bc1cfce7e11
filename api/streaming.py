"""Streaming responses that fail cleanly: the first chunk is produced (decrypted) before the
status line is sent, so a broken blob or a refused key is an error answer, not a truncated 200."""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def primed(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """``chunks`` with its first item already computed (raises now if that fails)."""
    iterator = iter(chunks)
    first = next(iterator, b"")

    def body() -> Iterator[bytes]:
        if first:
            yield first
        yield from iterator

    return body()

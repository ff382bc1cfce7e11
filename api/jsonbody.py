"""JSON request bodies are checked before anything parses them: UTF-8 text that nests at most
``MAX_JSON_DEPTH`` deep, or ``400`` with ``invalid_encoding`` / ``json_too_deep``.

Python's JSON decoder recurses once per ``[`` or ``{``; a small body of 100,000 brackets is enough
to exhaust a thread's C stack and kill the process (see ``api.server`` for the second line of
defence). ``JsonBodyMiddleware`` therefore reads each JSON body (already bounded by
``api.limits``), checks it here without recursion, and only then hands it on to the route, so one
rule covers FastAPI's body parameters, ``/verify`` and any route added later. Only the multipart
upload routes are exempt (their bodies are streamed to disk; their one JSON field, the metadata,
is parsed by pydantic's own depth-limited parser).

The checks are linear in the body size and never recurse:

- encoding (RFC 8259 §8.1: JSON exchanged between systems is UTF-8 without a byte-order mark): a
  BOM, a NUL byte (UTF-16/32 text is full of them, JSON text never has one), invalid UTF-8 and an
  escaped lone surrogate (``"\\ud800"``, which no UTF-8 store can hold) and an escaped NUL
  (``"\\u0000"``, which PostgreSQL text cannot hold, and no field of this API needs) are
  ``invalid_encoding``;
- depth: strings are skipped (an unterminated one runs to the end, as it would for a parser), then
  brackets are counted.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable, Iterator
from itertools import accumulate
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from api.limits import has_body
from node.errors import InputError

MAX_JSON_DEPTH = 32
"""Deepest nesting of objects and arrays in any JSON body. The deepest legitimate body is a proof
bundle, which the proof format caps at 8 levels (docs/proof-format.md §3); every other body nests
at most 3. Four times the bundle's cap leaves room for future formats while staying far below
anything that strains a stack."""

INLINE_CHECK_BYTES = 256 * 1024
"""Bodies up to this size are checked on the event loop; larger ones in a worker thread."""

_BOMS = (b"\xef\xbb\xbf", b"\xfe\xff", b"\xff\xfe")  # UTF-8, UTF-16 BE/LE (and UTF-32 LE)
_BRACKETS = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')
_DEPTH_STEP = [0] * 256
_DEPTH_STEP[ord("[")] = 1
_DEPTH_STEP[ord("]")] = -1
SCAN_CHUNK_BYTES = 128 * 1024
"""The scan works in slices of this size, so the thread running it releases the GIL between
slices and a large hostile body cannot stall the event loop for long."""
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
"""A candidate ``\\uD800``–``\\uDFFF`` escape (possibly only text after an escaped backslash)."""
_NUL_ESCAPE = re.compile(rb"\\u0000")
"""A candidate ``\\u0000`` escape (possibly only text after an escaped backslash)."""


class JsonBodyError(InputError):
    """A JSON request body was refused before parsing."""

    code = "malformed_json"


class JsonTooDeepError(JsonBodyError):
    """Objects and arrays nest deeper than ``MAX_JSON_DEPTH``."""

    code = "json_too_deep"


class InvalidEncodingError(JsonBodyError):
    """The body is not UTF-8 JSON text (BOM, NUL, invalid UTF-8, lone surrogate)."""

    code = "invalid_encoding"


def json_depth(
    data: bytes, *, stop_above: int | None = None, chunk_bytes: int = SCAN_CHUNK_BYTES
) -> int:
    """How deep objects and arrays nest in ``data`` (brackets inside strings do not count); the
    scan stops early once the depth passes ``stop_above``.

    Exact for JSON text; for anything else never less than what a parser reaches before it fails
    (an unterminated string runs to the end, as it does for a parser).
    """
    depth = deepest = 0
    in_string = False
    for piece in _slices(data, chunk_bytes):
        unescaped = piece.replace(b"\\\\", b"").replace(b'\\"', b"")  # left to right, as a lexer
        # Only quotes and brackets matter now. A pair of adjacent quotes is an empty string or a
        # string's end right before the next one's start: dropping it moves no bracket into or out
        # of a string, and leaves only strings that hold brackets for the split below.
        structure = unescaped.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
        parts = structure.split(b'"')
        outside = b"".join(parts[1::2] if in_string else parts[0::2])
        if len(parts) % 2 == 0:  # an odd number of quotes: the string state flips
            in_string = not in_string
        brackets = outside.translate(_BRACKETS, _NOT_BRACKETS)
        if brackets:
            running = list(accumulate(map(_DEPTH_STEP.__getitem__, brackets), initial=depth))
            depth = running[-1]
            deepest = max(deepest, max(running))
        if stop_above is not None and deepest > stop_above:
            break
    return deepest


def _slices(data: bytes, chunk_bytes: int = SCAN_CHUNK_BYTES) -> Iterator[bytes]:
    """``data`` in slices of about ``chunk_bytes`` that never split an escape: a slice never ends
    with an odd number of backslashes (every slice starts outside a run of backslashes or after an
    even number of them, so pairs line up as a lexer pairs them)."""
    start, size = 0, len(data)
    while start < size:
        end = min(start + chunk_bytes, size)
        if end < size:
            piece = data[start:end]
            trailing = len(piece) - len(piece.rstrip(b"\\"))
            if trailing % 2:  # the last backslash escapes the next byte: keep them together
                end = end - 1 if end - 1 > start else start + 2
        yield data[start:end]
        start = end


def check_json_body(data: bytes, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse ``data`` unless it is UTF-8 text nesting at most ``max_depth`` deep.

    Syntax is left to the route's parser, which after this check cannot recurse deeply.
    """
    if data.startswith(_BOMS):
        raise InvalidEncodingError("JSON bodies must be UTF-8 without a byte-order mark")
    if b"\x00" in data:
        raise InvalidEncodingError("JSON bodies must be UTF-8 (the body holds NUL bytes)")
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        for piece in _slices(data):
            decoder.decode(piece)
            offset += len(piece)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise InvalidEncodingError(
            f"JSON bodies must be UTF-8 (invalid byte sequence near offset {offset + exc.start})"
        ) from None
    if json_depth(data, stop_above=max_depth) > max_depth:
        raise JsonTooDeepError(f"objects and arrays may nest at most {max_depth} levels deep")
    if _SURROGATE_ESCAPE.search(data) and _any_string(data, _unencodable):
        raise InvalidEncodingError("the body escapes a lone UTF-16 surrogate (\\ud800-\\udfff)")
    if _NUL_ESCAPE.search(data) and _any_string(data, _holds_nul):
        raise InvalidEncodingError(
            "the body escapes a NUL character (\\u0000), which no text field can hold"
        )


def _any_string(data: bytes, test: Callable[[str], bool]) -> bool:
    """Whether a string (value or key) of the document passes ``test``. Only called for the rare
    body that contains a candidate escape at all; the depth check has made parsing it safe."""
    try:
        document = json.loads(data)
    except ValueError:
        return False  # not JSON: the route's parser reports it
    return any(test(text) for text in _strings(document))


def _holds_nul(text: str) -> bool:
    return "\x00" in text


def _strings(document: Any) -> Iterator[str]:
    stack = [document]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            yield from item.keys()
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _unencodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class JsonBodyMiddleware:
    """Reads each JSON request body, refuses it (400, JSON error shape) unless ``check_json_body``
    passes, and replays it to the app. ``streamed(method, path)`` names the requests whose bodies
    are not JSON and must not be buffered (multipart uploads).

    Sits inside ``BodyLimitMiddleware`` (so the body read here is already bounded) and inside the
    authentication gate (so only authenticated callers get this far on key-protected routes).
    """

    def __init__(self, app: ASGIApp, streamed: Callable[[str, str], bool]) -> None:
        self.app = app
        self.streamed = streamed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or self.streamed(scope["method"], scope["path"])
            or not has_body(scope)
        ):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: nobody to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            if len(body) > INLINE_CHECK_BYTES:
                await run_in_threadpool(check_json_body, body)
            else:
                check_json_body(body)
        except JsonBodyError as exc:
            await error_response(400, exc.code, exc.message)(scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` once, then defers to the server (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay

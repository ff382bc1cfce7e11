"""The JSON body check (``api.jsonbody``) against references: the depth it measures is exact for
valid JSON and never less than what a recursive parser reaches on any text, whatever the slice
size of the scan; its encoding rules refuse BOMs, NUL bytes, invalid UTF-8 and lone surrogates and
accept everything valid UTF-8 JSON may contain."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.jsonbody import (
    MAX_JSON_DEPTH,
    InvalidEncodingError,
    JsonTooDeepError,
    check_json_body,
    json_depth,
)

TRICKY_TEXT = st.text(alphabet=st.sampled_from('ab"\\[]{}:,é\U0001f600\n/'), max_size=8)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TRICKY_TEXT,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(TRICKY_TEXT, children, max_size=4)
    ),
    max_leaves=30,
)
CHUNKS = st.integers(min_value=1, max_value=64)


def nesting(value: Any) -> int:
    """Structural depth of a decoded JSON value."""
    if isinstance(value, list):
        return 1 + max((nesting(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((nesting(item) for item in value.values()), default=0)
    return 0


def parser_reach(data: bytes) -> int:
    """The deepest a recursive-descent parser can get in ``data`` before it stops: a byte-by-byte
    lexer that tracks strings and escapes and stops at a backslash outside a string (where every
    JSON parser fails)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:
        if in_string:
            if escaped:
                escaped = False
            elif byte == ord("\\"):
                escaped = True
            elif byte == ord('"'):
                in_string = False
        elif byte == ord('"'):
            in_string = True
        elif byte == ord("\\"):
            break
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES, ensure_ascii=st.booleans(), chunk=CHUNKS)
def test_depth_of_valid_json_is_exact(value: Any, ensure_ascii: bool, chunk: int) -> None:
    data = json.dumps(value, ensure_ascii=ensure_ascii).encode()
    assert json_depth(data, chunk_bytes=chunk) == nesting(value)


@settings(max_examples=500, deadline=None)
@given(
    data=st.binary(max_size=64)
    | st.text(alphabet=st.sampled_from('[]{}"\\ a:,'), max_size=80).map(str.encode),
    chunk=CHUNKS,
)
def test_depth_never_undercounts_what_a_parser_reaches(data: bytes, chunk: int) -> None:
    assert json_depth(data, chunk_bytes=chunk) >= parser_reach(data)


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 40 + b"1" + b"}" * 40,
        b'["\\\\"' + b"," + b"[" * 40,  # an escaped backslash closes the string before the brackets
        b"[" * 33,  # unclosed
    ],
)
def test_too_deep(data: bytes) -> None:
    with pytest.raises(JsonTooDeepError) as refused:
        check_json_body(data)
    assert refused.value.code == "json_too_deep"


@pytest.mark.parametrize(
    "data",
    [
        b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH,
        b'{"a": "' + b"[" * 10_000 + b'"}',  # brackets inside a string do not count
        b'{"a": "\\"' + b"{" * 10_000 + b'"}',  # nor after an escaped quote
        b'{"emoji": "\\ud83d\\ude00", "text": "\xc3\xa9\xf0\x9f\x98\x80"}',
        b'{"not an escape": "\\\\ud800"}',  # an escaped backslash, then plain text
        b'{"not a NUL": "\\\\u0000"}',  # an escaped backslash, then plain text
        b'{"truncated": [',  # syntax is the route's business
        b"",
    ],
)
def test_accepted(data: bytes) -> None:
    check_json_body(data)


@pytest.mark.parametrize(
    "data",
    [
        '{"a": 1}'.encode("utf-16"),
        '{"a": 1}'.encode("utf-16-be"),
        '{"a": 1}'.encode("utf-32"),
        b'\xef\xbb\xbf{"a": 1}',
        b'{"a": "\x00"}',
        b'{"a": "\xff"}',
        b'{"a": "\xc3"}',  # truncated sequence
        b'{"a": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8 (CESU)
        b'{"a": "\\ud800"}',
        b'{"a": "\\udc00\\ud800"}',  # low before high is no pair
        b'{"\\ud83d": 1}',
        b'{"a": "x\\u0000y"}',  # an escaped NUL: no text column can hold it
        b'{"a": ["ok", {"b": "\\u0000"}]}',
        b'{"\\u0000": 1}',
    ],
)
def test_invalid_encoding(data: bytes) -> None:
    with pytest.raises(InvalidEncodingError) as refused:
        check_json_body(data)
    assert refused.value.code == "invalid_encoding"
    assert refused.value.message  # a human message, never the input itself

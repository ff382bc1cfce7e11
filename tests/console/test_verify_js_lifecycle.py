"""The browser verifier's lifecycle rules (``api/web/static/verify-events.js``) against the
reference (``anchoring.lifecycle.apply``), case by case: every ``apply`` call that the lifecycle
tests (``tests/anchoring/test_lifecycle.py``) make — legal steps and refusals — is recorded with
the events that led to its state, replayed in Node.js through the browser's code, and must give
the same outcome: accepted, or refused with the same failure code (``illegal_transition``,
``prev_mismatch``, ``time_order``, ``break_glass_unopened``). Every recorded event must also pass the browser's §4 schema
and canonical-bytes check."""

from __future__ import annotations

import base64
import inspect
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from anchoring import lifecycle
from anchoring.errors import (
    BreakGlassWindowError,
    EventTimeOrderError,
    LifecycleError,
    PrevHashMismatchError,
)
from anchoring.events import canonical_bytes
from tests.anchoring import test_lifecycle

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("js") / "lifecycle_replay.mjs"
MODULE = ROOT / "api" / "web" / "static" / "verify-events.js"
NODE = shutil.which("node")


def _code(error: LifecycleError) -> str:
    if isinstance(error, PrevHashMismatchError):
        return "prev_mismatch"
    if isinstance(error, EventTimeOrderError):
        return "time_order"
    if isinstance(error, BreakGlassWindowError):
        return "break_glass_unopened"
    return "illegal_transition"


def _record(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Run every test of test_lifecycle.py that takes no arguments, recording each apply call."""
    paths: dict[int, list[str]] = {}
    keep: list[Any] = []  # states stay alive, so their ids are never reused
    cases: list[dict[str, Any]] = []
    real_apply = lifecycle.apply

    def recording_apply(state: Any, event: Any, **kw: Any) -> Any:
        path = [] if state is None else paths.get(id(state))
        raw = base64.b64encode(canonical_bytes(event)).decode()
        try:
            new = real_apply(state, event, **kw)
        except LifecycleError as exc:
            if path is not None:
                cases.append({"path": path, "event": raw, "expected": _code(exc)})
            raise
        if path is not None:
            cases.append({"path": path, "event": raw, "expected": "ok"})
            paths[id(new)] = [*path, raw]
            keep.append(new)
        return new

    monkeypatch.setattr(test_lifecycle, "apply", recording_apply)
    for name, function in vars(test_lifecycle).items():
        if name.startswith("test_") and not inspect.signature(function).parameters:
            function()
    return cases


@pytest.mark.skipif(NODE is None, reason="needs Node.js (make install provides it)")
def test_browser_lifecycle_rules_agree_with_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    cases = _record(monkeypatch)
    expected = [c.pop("expected") for c in cases]
    assert len(cases) > 200
    assert {
        "ok",
        "illegal_transition",
        "prev_mismatch",
        "time_order",
        "break_glass_unopened",
    } <= set(expected)
    result = subprocess.run(
        [str(NODE), str(SCRIPT), str(MODULE)],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    seen = json.loads(result.stdout)
    differences = [
        (i, want, got)
        for i, (want, got) in enumerate(zip(expected, seen, strict=True))
        if want != got
    ]
    assert differences == [], differences[:10]


_ODD_VALUES: tuple[Any, ...] = (
    None,
    True,
    0,
    -1,
    2**53,
    "",
    "x",
    "0x" + "ab" * 20,
    "ab" * 32,
    "AB" * 32,
    "2026-02-30T00:00:00Z",
    "0999-01-01T00:00:00Z",
    "2026-01-01T00:00:00.000000Z",
    "2026-01-01",
    "01HZY3Z4Q8Q1V6S9N0M5K2J3H4",
    [],
    {},
)


def _mutations(event: dict[str, Any]) -> list[bytes]:
    """Variants of one valid event: each field (and each ``data`` field) removed or replaced by
    odd values, an unknown field added, addresses in lower case, non-canonical layouts."""
    out: list[bytes] = []

    def dump(value: Any, **kw: Any) -> bytes:
        options: dict[str, Any] = {"sort_keys": True, "separators": (",", ":"), **kw}
        return json.dumps(value, **options).encode()

    for scope in ("", "data"):
        target = event["data"] if scope else event
        for key in list(target):
            for value in (*_ODD_VALUES, "__delete__"):
                copy = json.loads(json.dumps(event))
                place = copy["data"] if scope else copy
                if value == "__delete__":
                    del place[key]
                else:
                    place[key] = value
                out.append(dump(copy))
            if isinstance(target[key], str) and target[key].startswith("0x"):
                copy = json.loads(json.dumps(event))
                (copy["data"] if scope else copy)[key] = target[key].lower()
                out.append(dump(copy))
        copy = json.loads(json.dumps(event))
        (copy["data"] if scope else copy)["extra"] = 1
        out.append(dump(copy))
    out.append(json.dumps(event, sort_keys=True).encode())  # spaces
    out.append(json.dumps(event, separators=(",", ":")).encode())  # key order as written
    out.append(dump(event)[:-1] + b',"v":1}')  # duplicate key
    out.append(dump(event).replace(b'"v":1', b'"v":1.0'))
    out.append(dump(event, ensure_ascii=True).replace(b'"type"', b'"\\u0074ype"'))
    return out


@pytest.mark.skipif(NODE is None, reason="needs Node.js (make install provides it)")
def test_browser_event_schema_agrees_with_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    from anchoring.errors import EventFormatError
    from anchoring.events import EventType, parse_event
    from tests.anchoring.test_events import document, encode

    recorded = {c["event"] for c in _record(monkeypatch)}
    # one sample of every one of the 30 types (tests/anchoring/test_events.py), then the
    # events the lifecycle tests logged
    every_type = [encode(document(event_type)) for event_type in EventType]
    samples: list[bytes] = []
    seen_types: set[str] = set()
    for raw in [*(base64.b64encode(b).decode() for b in every_type), *sorted(recorded)]:
        event = json.loads(base64.b64decode(raw))
        if event["type"] in seen_types:
            continue
        seen_types.add(event["type"])
        samples += [base64.b64decode(raw), *_mutations(event)]
    expected = []
    for sample in samples:
        try:
            parse_event(sample)
            expected.append("ok")
        except EventFormatError:
            expected.append("event_invalid")
    assert len(seen_types) == len(EventType) == 30
    assert expected.count("ok") >= len(seen_types)
    result = subprocess.run(
        [str(NODE), str(SCRIPT.with_name("schema_check.mjs")), str(MODULE)],
        input=json.dumps([base64.b64encode(s).decode() for s in samples]),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    seen = json.loads(result.stdout)
    differences = [
        (samples[i][:300], want, got)
        for i, (want, got) in enumerate(zip(expected, seen, strict=True))
        if want != got
    ]
    assert differences == [], differences[:5]

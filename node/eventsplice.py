"""Canonical bytes of many events of one type, made by splicing values into a template's text.

Bulk paths (fixity audits) log thousands of events that differ from one validated template only
in a few fields: log index, archive id, prev, and some ``data`` fields. The RFC 8785 text of
such an event is the template's with those values replaced: key order depends on key names, not
values, so the text around them is fixed. Splicing is several times cheaper than serialising
each event (``canonical_bytes``). The first rendering is checked against ``canonical_bytes`` of
the template, so a change in the event schema cannot slip through; values are encoded as the
canonical encoder encodes them (JSON strings, decimal integers, ``true``/``false``, ``null``).

Only values this node produced and already knows to be valid may be spliced in (hashes it
computed, its own ids and indexes): nothing here validates them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from anchoring.events import Event, canonical_bytes, event_to_json, jcs
from node.errors import NodeError

_json_string = json.encoder.encode_basestring

SpliceValue = str | int | bool | None


def _encode(value: SpliceValue) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return _json_string(value)


class SplicedEvent:
    """The canonical bytes of events equal to ``template`` but for ``fields``: top-level names
    (``log_index``) or ``data.<name>``; ``render`` takes their values in that order."""

    def __init__(self, template: Event, fields: Sequence[str]) -> None:
        self.fields = tuple(fields)
        document = event_to_json(template)
        sentinels = {name: f"\x01{name}\x01" for name in self.fields}
        current = []
        for name in self.fields:
            head, _, rest = name.partition(".")
            target = document[head] if rest else document
            key = rest or head
            if not isinstance(target, dict) or key not in target:
                raise NodeError(f"no field {name} to splice", code="encoding_mismatch")
            current.append(target[key])
            target[key] = sentinels[name]
        text = jcs(document).decode("utf-8")
        located = sorted((text.index(json.dumps(mark)), name) for name, mark in sentinels.items())
        self._order = tuple(self.fields.index(name) for _, name in located)
        self._parts: list[str] = []
        start = 0
        for position, name in located:
            self._parts.append(text[start:position])
            start = position + len(json.dumps(sentinels[name]))
        self._tail = text[start:]
        if self.render(*current) != canonical_bytes(template):
            raise NodeError(
                "spliced event bytes differ from canonical_bytes", code="encoding_mismatch"
            )

    def render(self, *values: SpliceValue) -> bytes:
        """The canonical bytes of the template with ``values`` (in the order of ``fields``)."""
        encoded = [_encode(value) for value in values]
        pieces: list[str] = []
        for part, slot in zip(self._parts, self._order, strict=True):
            pieces.append(part)
            pieces.append(encoded[slot])
        pieces.append(self._tail)
        return "".join(pieces).encode("utf-8")

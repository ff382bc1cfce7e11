"""The bulk-ingest encoder splices values into a template's canonical text; for any index,
archive, actor and prev it must produce exactly ``canonical_bytes`` of the event itself."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from anchoring.events import AccessData, AccessEvent, AccessScope, Purpose, canonical_bytes
from node.services.archives import _AccessBytes

HOSPITAL = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
ULID_CHARS = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
hex64 = st.text(alphabet="0123456789abcdef", min_size=64, max_size=64)
ulids = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from("01234567"),
    st.text(alphabet=ULID_CHARS, min_size=25, max_size=25),
)
actors = hex64 | st.sampled_from([HOSPITAL, "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"])


@given(
    purpose=st.sampled_from(list(Purpose)),
    scope=st.sampled_from(list(AccessScope)),
    index=st.integers(min_value=0, max_value=2**53 - 1),
    archive_id=ulids,
    actor=actors,
    prev=hex64,
)
@settings(max_examples=300, deadline=None)
def test_spliced_bytes_equal_canonical_bytes(
    purpose: Purpose, scope: AccessScope, index: int, archive_id: str, actor: str, prev: str
) -> None:
    template = AccessEvent(
        hospital=HOSPITAL,
        log_index=0,
        archive_id="01JDQ0000000000000000000AA",
        actor="e" * 64,
        time=datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC),
        prev="f" * 64,
        data=AccessData(purpose=purpose, scope=scope, break_glass=False),
    )
    encoder = _AccessBytes(template)
    event = template.model_copy(
        update={"log_index": index, "archive_id": archive_id, "actor": actor, "prev": prev}
    )
    assert encoder.render(index, archive_id, actor, prev) == canonical_bytes(event)

"""The ``archivechain.proof/v1`` document: deterministic serialisation, and a strict bounded parser
whose every refusal names the offending field."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

from anchoring import bundle as bundle_module
from anchoring.bundle import (
    BUNDLE_FORMAT,
    MAX_PROOF_LENGTH,
    BundleCheckpoint,
    BundleEntry,
    CustodyClaim,
    ProofBundle,
    bundle_to_json,
    dump_bundle,
    parse_bundle,
)
from anchoring.chainview import CustodyState
from anchoring.errors import AnchoringError, BundleFormatError, NotABundleError
from anchoring.events import MAX_EVENT_BYTES
from anchoring.ids import ZERO_ADDRESS

A = "0x90F8bf6A479f320ead074411a4B0e7944Ea8c9C1"
B = "0xFFcf8FDEE72ac11b5c542428B35EEF5769C409f0"
NOTARY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
ARCHIVE = "01HZY3Z4Q8Q1V6S9N0M5K2J3H4"


def sample_bundle(custody: bool = True) -> ProofBundle:
    def entry(hospital: str, index: int, size: int, event: bytes) -> BundleEntry:
        return BundleEntry(
            hospital=hospital,
            log_index=index,
            event=event,
            proof=tuple(bytes([i]) * 32 for i in range(3)),
            checkpoint=BundleCheckpoint(hospital, 2, size, b"\xab" * 32),
        )

    return ProofBundle(
        chain_id=31337,
        notary=NOTARY,
        archive_id=ARCHIVE,
        entries=(
            entry(A, 5, 8, b'{"type":"CREATE"}'),
            entry(B, 0, 7, '{"type":"ACCESS","x":"\u00e9"}'.encode()),
        ),
        custody=CustodyClaim(B, CustodyState.ARCHIVED, False, "cd" * 32) if custody else None,
    )


def sample_document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(dump_bundle(sample_bundle()))
    return document


def refusal(document: Any, **limits: int) -> BundleFormatError:
    raw = document if isinstance(document, bytes | str) else json.dumps(document)
    with pytest.raises(BundleFormatError) as caught:
        parse_bundle(raw, **limits)
    error = caught.value
    assert isinstance(error, AnchoringError)
    assert isinstance(error, ValueError)
    assert error.code == "bundle_invalid"
    assert error.field is not None
    assert str(error).startswith(f"{error.field}: ")
    return error


# ------------------------------------------------------------------------------------------
# Round trip and determinism


def test_dump_then_parse_round_trips_exact_event_bytes() -> None:
    original = sample_bundle()
    raw = dump_bundle(original)
    parsed = parse_bundle(raw)
    assert parsed == original
    assert parsed.entries[1].event == '{"type":"ACCESS","x":"\u00e9"}'.encode()
    assert parse_bundle(raw.decode()) == original  # str input too
    assert parse_bundle(json.dumps(json.loads(raw), indent=2)) == original  # any JSON layout
    assert parse_bundle(dump_bundle(sample_bundle(custody=False))).custody is None


def test_dump_is_deterministic_canonical_json() -> None:
    raw = dump_bundle(sample_bundle())
    assert raw == dump_bundle(sample_bundle())
    document = json.loads(raw)
    assert list(document) == sorted(document)
    assert b" " not in raw
    assert document["format"] == BUNDLE_FORMAT
    entry = document["entries"][0]
    assert entry["event"] == base64.b64encode(b'{"type":"CREATE"}').decode()
    assert entry["proof"][1] == "01" * 32
    assert entry["checkpoint"] == {"hospital": A, "index": 2, "size": 8, "root": "ab" * 32}
    assert document["custody"] == {
        "custodian": B,
        "state": "ARCHIVED",
        "on_hold": False,
        "commitment": "cd" * 32,
    }
    assert bundle_to_json(sample_bundle()) == document


def test_dump_refuses_hashes_of_the_wrong_length() -> None:
    broken = sample_bundle()
    bad_entry = BundleEntry(A, 0, b"{}", (b"\x00" * 31,), broken.entries[0].checkpoint)
    with pytest.raises(BundleFormatError, match=r"entries\[1\]"):
        dump_bundle(ProofBundle(1, NOTARY, ARCHIVE, (broken.entries[0], bad_entry)))


def test_zero_custodian_is_allowed_in_a_claim_for_unregistered_archives() -> None:
    document = sample_document()
    document["custody"] = {
        "custodian": ZERO_ADDRESS,
        "state": "NONE",
        "on_hold": False,
        "commitment": None,
    }
    claim = parse_bundle(json.dumps(document)).custody
    assert claim == CustodyClaim(ZERO_ADDRESS, CustodyState.NONE, False, None)


# ------------------------------------------------------------------------------------------
# Refusals, each naming its field

Mutation = Callable[[dict[str, Any]], Any]


def _set(path: list[Any], value: Any) -> Mutation:
    def mutate(document: dict[str, Any]) -> None:
        target: Any = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: list[Any]) -> Mutation:
    def mutate(document: dict[str, Any]) -> None:
        target: Any = document
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


REFUSALS: list[tuple[str, Mutation, str, str]] = [
    (
        "unknown version",
        _set(["format"], "archivechain.proof/v2"),
        "format",
        "a proof bundle of format archivechain.proof/v2, which this verifier does not read",
    ),
    ("no format", _delete(["format"]), "(document)", 'a JSON object without a "format" field'),
    ("format number", _set(["format"], 1), "format", '"format" is not a string'),
    ("unknown top field", _set(["signature"], "x"), "signature", "unknown field"),
    ("missing notary", _delete(["notary"]), "notary", "missing"),
    ("chain id text", _set(["chain_id"], "31337"), "chain_id", "must be an integer"),
    ("chain id bool", _set(["chain_id"], True), "chain_id", "must be an integer"),
    ("chain id zero", _set(["chain_id"], 0), "chain_id", "between 1 and"),
    ("chain id huge", _set(["chain_id"], 2**64), "chain_id", "between 1 and"),
    ("notary lower", _set(["notary"], NOTARY.lower()), "notary", "EIP-55"),
    ("archive id", _set(["archive_id"], "not-a-ulid"), "archive_id", "ULID"),
    ("entries object", _set(["entries"], {}), "entries", "JSON array"),
    ("entries empty", _set(["entries"], []), "entries", "at least one"),
    ("entry not object", _set(["entries", 1], "x"), "entries[1]", "JSON object"),
    ("entry extra", _set(["entries", 1, "note"], "x"), "entries[1].note", "unknown field"),
    ("entry missing", _delete(["entries", 0, "proof"]), "entries[0].proof", "missing"),
    ("hospital", _set(["entries", 1, "hospital"], "0x12"), "entries[1].hospital", "EIP-55"),
    ("log index neg", _set(["entries", 0, "log_index"], -1), "entries[0].log_index", "between"),
    ("log index float", _set(["entries", 0, "log_index"], 1.0), "(document)", "non-integer"),
    ("event number", _set(["entries", 0, "event"], 5), "entries[0].event", "string"),
    ("event bad b64", _set(["entries", 0, "event"], "eyJ!"), "entries[0].event", "malformed"),
    ("event urlsafe", _set(["entries", 0, "event"], "-_-_"), "entries[0].event", "malformed"),
    ("event no pad", _set(["entries", 0, "event"], "eyJ0"[:3]), "entries[0].event", "malformed"),
    ("event pad bits", _set(["entries", 0, "event"], "eR=="), "entries[0].event", "non-canonical"),
    ("event empty", _set(["entries", 0, "event"], ""), "entries[0].event", "empty"),
    ("proof not list", _set(["entries", 1, "proof"], "ab"), "entries[1].proof", "JSON array"),
    ("proof upper", _set(["entries", 1, "proof", 2], "AB" * 32), "entries[1].proof[2]", "hex"),
    ("proof short", _set(["entries", 1, "proof", 0], "ab" * 31), "entries[1].proof[0]", "hex"),
    ("proof 0x", _set(["entries", 1, "proof", 1], "0x" + "ab" * 31), "entries[1].proof[1]", "hex"),
    ("proof null", _set(["entries", 1, "proof", 1], None), "entries[1].proof[1]", "string"),
    ("cp missing", _delete(["entries", 1, "checkpoint"]), "entries[1].checkpoint", "missing"),
    ("cp extra", _set(["entries", 1, "checkpoint", "x"], 1), "entries[1].checkpoint.x", "unknown"),
    (
        "cp root",
        _set(["entries", 1, "checkpoint", "root"], "zz" * 32),
        "entries[1].checkpoint.root",
        "hex",
    ),
    (
        "cp size 0",
        _set(["entries", 1, "checkpoint", "size"], 0),
        "entries[1].checkpoint.size",
        "between 1",
    ),
    (
        "cp index",
        _set(["entries", 1, "checkpoint", "index"], "2"),
        "entries[1].checkpoint.index",
        "integer",
    ),
    (
        "cp hospital",
        _set(["entries", 0, "checkpoint", "hospital"], None),
        "entries[0].checkpoint.hospital",
        "string",
    ),
    ("custody null", _set(["custody"], None), "custody", "JSON object"),
    ("custody state", _set(["custody", "state"], "HELD"), "custody.state", "must be one of"),
    ("custody hold", _set(["custody", "on_hold"], 0), "custody.on_hold", "true or false"),
    ("custody extra", _set(["custody", "x"], 0), "custody.x", "unknown field"),
    ("custody commit", _set(["custody", "commitment"], "x"), "custody.commitment", "hex"),
    ("custody who", _set(["custody", "custodian"], "nobody"), "custody.custodian", "EIP-55"),
]


@pytest.mark.parametrize(
    ("mutate", "field", "message"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS]
)
def test_refusals_name_the_field(mutate: Mutation, field: str, message: str) -> None:
    document = copy.deepcopy(sample_document())
    mutate(document)
    error = refusal(document)
    assert error.field == field
    assert message in str(error)


def test_documents_that_are_not_json_objects() -> None:
    assert "not JSON" in str(refusal(b"{"))
    # the decoder's message ends with "at" for some errors: the offset follows it once
    assert str(refusal(b'{"format":"x')).endswith(
        "not JSON: Unterminated string starting at offset 10"
    )
    assert str(refusal(b'{"a":"\x01"}')).endswith("not JSON: Invalid control character at offset 6")
    assert "not UTF-8" in str(refusal(b'{"format":"\xff"}'))
    assert "JSON object" in str(refusal(b"[]"))
    assert "NaN" in str(refusal(b'{"chain_id":NaN}'))
    raw = dump_bundle(sample_bundle())
    assert "duplicate key" in str(refusal(raw[:-1] + b',"chain_id":1}'))
    assert "not JSON" in str(refusal(b"\xef\xbb\xbf" + raw))  # a byte-order mark (§3 step 3)
    assert "nest deeper" in str(refusal(b"[" * 200_000 + b"]" * 200_000))
    # brackets inside strings do not count as nesting
    deep_text = copy.deepcopy(sample_document())
    deep_text["entries"][0]["hospital"] = "[" * 50
    assert "EIP-55" in str(refusal(deep_text))


def test_size_and_count_limits() -> None:
    raw = dump_bundle(sample_bundle())
    error = refusal(raw, max_bytes=len(raw) - 1)
    assert error.field == "(document)"
    assert "more than the limit" in str(error)
    parse_bundle(raw, max_bytes=len(raw))
    error = refusal(raw, max_entries=1)
    assert error.field == "entries"
    assert "2 items, more than the limit of 1" in str(error)

    document = sample_document()
    document["entries"][0]["proof"] = ["ab" * 32] * (MAX_PROOF_LENGTH + 1)
    error = refusal(document)
    assert error.field == "entries[0].proof"
    document["entries"][0]["proof"] = ["ab" * 32] * MAX_PROOF_LENGTH
    assert len(parse_bundle(json.dumps(document)).entries[0].proof) == MAX_PROOF_LENGTH

    document["entries"][0]["event"] = base64.b64encode(b"x" * (MAX_EVENT_BYTES + 3)).decode()
    error = refusal(document)
    assert error.field == "entries[0].event"
    assert "longer than" in str(error)
    document["entries"][0]["event"] = base64.b64encode(b"x" * MAX_EVENT_BYTES).decode()
    assert len(parse_bundle(json.dumps(document)).entries[0].event) == MAX_EVENT_BYTES
    # Regression: one or two bytes over the limit fit in the same base64 length and passed.
    for size in (MAX_EVENT_BYTES + 1, MAX_EVENT_BYTES + 2):
        document["entries"][0]["event"] = base64.b64encode(b"x" * size).decode()
        error = refusal(document)
        assert (error.field, error.reason) == (
            "entries[0].event",
            f"longer than {MAX_EVENT_BYTES} bytes once decoded",
        )


def test_default_limits_are_documented_values() -> None:
    assert bundle_module.MAX_BUNDLE_BYTES == 64 * 1024 * 1024
    assert bundle_module.MAX_ENTRIES == 100_000
    assert bundle_module.MAX_PROOF_LENGTH == 64
    assert bundle_module.MAX_DEPTH == 8


# ------------------------------------------------------------------------------------------
# JSON that is not a bundle: the refusal says what it is (issue 8, item 12)

NOT_BUNDLES: list[tuple[str, bytes, str]] = [
    (
        "API error",
        b'{"code":"proof_pending","message":"archive 01HZY3Z4Q8Q1V6S9N0M5K2J3H4 has no anchored '
        b'event yet; retry in a few seconds"}',
        "this is an error response from the node API (proof_pending: archive "
        "01HZY3Z4Q8Q1V6S9N0M5K2J3H4 has no anchored event yet; retry in a few seconds), "
        "not a proof bundle",
    ),
    (
        "API error with details",
        b'{"code":"bundle_invalid","message":"x","details":{"field":"entries"}}',
        "this is an error response from the node API (bundle_invalid: x), not a proof bundle",
    ),
    ("array", b"[1,2]", "a JSON array, not a proof bundle (a bundle is a JSON object)"),
    ("string", b'"archivechain.proof/v1"', "a JSON string, not a proof bundle"),
    ("number", b"42", "a JSON number, not a proof bundle"),
    ("null", b"null", "JSON null, not a proof bundle"),
    ("boolean", b"true", "JSON true or false, not a proof bundle"),
    (
        "other object",
        b'{"archive_id":"x","entries":[]}',
        'a JSON object without a "format" field (keys: archive_id, entries), not a proof bundle',
    ),
    (
        "deployment file",
        b'{"format":"archivechain.deployment/v1","chain_id":31337}',
        "a document of format archivechain.deployment/v1, not a proof bundle "
        "(archivechain.proof/v1)",
    ),
    (
        "newer bundle version with floats and duplicates",
        b'{"format":"archivechain.proof/v2","weight":0.5,"weight":1}',
        "a proof bundle of format archivechain.proof/v2, which this verifier does not read "
        "(it reads archivechain.proof/v1)",
    ),
]


@pytest.mark.parametrize(
    ("raw", "message"), [case[1:] for case in NOT_BUNDLES], ids=[case[0] for case in NOT_BUNDLES]
)
def test_json_that_is_not_a_bundle_says_what_it_is(raw: bytes, message: str) -> None:
    error = refusal(raw)
    assert isinstance(error, NotABundleError)
    assert error.reason == message
    assert "\n" not in str(error)


def test_untrusted_text_in_the_description_stays_on_one_short_line() -> None:
    hostile = json.dumps({"code": "x\n\u001b[31m", "message": "y" * 1000 + "\u00e9\n"})
    reason = refusal(hostile).reason
    assert "\n" not in reason
    assert "\x1b" not in reason
    assert len(reason) < 300


def test_the_format_is_identified_before_the_strict_json_rules() -> None:
    """A v1 document is refused for floats or duplicate keys; but those do not hide that a
    document is something else (§3: the format is checked first)."""
    document = sample_document()
    raw = json.dumps(document)
    assert "non-integer number 1.5" in str(refusal(raw[:-1] + ', "chain_id": 1.5}'))
    assert 'duplicate key "chain_id"' in str(refusal(raw[:-1] + ', "chain_id": 1}'))
    document["format"] = "archivechain.proof/v2"
    raw = json.dumps(document)
    assert "does not read" in str(refusal(raw[:-1] + ', "chain_id": 1.5}'))


def test_a_number_with_too_many_digits_is_refused_not_raised() -> None:
    """Regression: Python refuses to convert integers of more than 4,300 digits with a plain
    ValueError, which escaped the parser (and crashed ``archivechain verify``)."""
    raw = b'{"format":"archivechain.proof/v1","chain_id":' + b"7" * 5000 + b"}"
    error = refusal(raw)
    assert error.field == "(document)"
    assert "too many digits" in str(error)


def test_depth_counting_starts_at_one_for_the_top_level_object() -> None:
    """The examples of §3: a bundle nests four deep; eight levels pass the depth rule (and are
    then refused for what they are), nine do not; brackets inside strings do not count."""
    assert bundle_module.MAX_DEPTH == 8
    parse_bundle(dump_bundle(sample_bundle()))  # depth 4: document, entries, entry, proof

    def with_extra(nesting: int) -> bytes:
        document = sample_document()
        document["x"] = 0
        raw = json.dumps(document)
        value = "[" * nesting + "0" + "]" * nesting
        return raw.replace('"x": 0', f'"x": {value}').encode()

    eight = refusal(with_extra(7))  # the document is level 1, seven arrays make eight
    assert (eight.field, eight.reason) == ("x", "unknown field")
    nine = refusal(with_extra(8))
    assert (nine.field, nine.reason) == ("(document)", "objects and arrays nest deeper than 8")
    # the two examples of the text, verbatim
    assert "nest deeper" not in str(refusal(b'{"x":[[[[[[[0]]]]]]]}'))
    assert "nest deeper than 8" in str(refusal(b'{"x":[[[[[[[[0]]]]]]]]}'))
    in_strings = sample_document()
    in_strings["entries"][0]["checkpoint"]["root"] = "[" * 20 + "{" * 20
    assert refusal(in_strings).field == "entries[0].checkpoint.root"


def test_the_entries_limit_counts_items_of_the_entries_array() -> None:
    """An "entry" of the limits is one item of ``entries`` (however many JSON values it holds)."""
    raw = dump_bundle(sample_bundle())
    assert len(parse_bundle(raw, max_entries=2).entries) == 2
    error = refusal(raw, max_entries=1)
    assert (error.field, error.reason) == ("entries", "has 2 items, more than the limit of 1")


# ------------------------------------------------------------------------------------------
# The public page's proof (docs/proof-format.md §11)


def test_public_proof_parses_with_its_own_limits() -> None:
    document = sample_document()
    del document["custody"]
    document["format"] = "archivechain.public-proof/v1"
    parsed = parse_bundle(json.dumps(document))
    assert parsed.public is True
    assert parsed.entries == sample_bundle().entries
    assert parse_bundle(dump_bundle(parsed)) == parsed  # written back as a public proof

    three = copy.deepcopy(document)
    three["entries"].append(three["entries"][0])
    assert refusal(three).field == "entries"
    empty = {**document, "entries": []}
    assert refusal(empty).field == "entries"
    with_custody = {**document, "custody": sample_document()["custody"]}
    assert refusal(with_custody).field == "custody"  # a bundle's field, unknown here
    duplicate = json.dumps(document).replace('{"', '{"chain_id": 1, "', 1)
    assert "duplicate key" in str(refusal(duplicate))

"""Smart tags: GIAI-96 encoding against worked vectors and a second implementation (epcpy),
QR labels, TAG_BIND / TAG_SCAN through the API on a real node, last-seen location, and refused
(unbound, revoked) scans counted without any event logged."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from epcpy.epc_schemes.giai import GIAI, GIAIFilterValue

from api.main import create_app
from node.errors import InputError
from node.tags import GIAI96_PARTITIONS, Giai96, Label, label_sheet_pdf, label_svg
from tests.api.conftest import Api, archive_metadata, issue_keys, serve
from tests.fixtures.node import MakeNode

# GIAI-96 vectors: (filter, company prefix, asset reference) -> EPC hex. The first is the GIAI of
# the GS1 EPC Tag Data Standard's examples (urn:epc:id:giai:0614141.12345400) with filter 0; the
# second a 6-digit-prefix GIAI-96 used by independent codecs' tests.
VECTORS = [
    ((0, "0614141", 12345400), "3414257BF400000000BC6038"),
    ((0, "023456", 65557), "341816E80000000000010015"),
]


@pytest.mark.parametrize(("fields", "hex_epc"), VECTORS)
def test_giai96_vectors_encode_and_decode(fields: tuple[int, str, int], hex_epc: str) -> None:
    epc = Giai96(*fields)
    assert epc.encode().hex().upper() == hex_epc
    assert Giai96.decode(bytes.fromhex(hex_epc)) == epc
    assert Giai96.from_tag_uri(epc.tag_uri) == epc


@pytest.mark.parametrize("partition", sorted(GIAI96_PARTITIONS))
def test_giai96_agrees_with_epcpy_on_every_partition(partition: int) -> None:
    _, digits, bits, max_digits = GIAI96_PARTITIONS[partition]
    prefix = "0614141234567"[:digits].ljust(digits, "3")
    for asset in (0, 1, 12345400, min((1 << bits) - 1, 10**max_digits - 1)):
        ours = Giai96(0, prefix, asset).encode().hex().upper()
        theirs = GIAI(f"urn:epc:id:giai:{prefix}.{asset}").hex(
            binary_coding_scheme=GIAI.BinaryCodingScheme.GIAI_96,
            filter_value=GIAIFilterValue.ALL_OTHERS,
        )
        assert ours == theirs.upper(), (prefix, asset)
        assert Giai96.decode(bytes.fromhex(ours)).asset_reference == asset


def test_giai96_refuses_what_it_cannot_encode_or_decode() -> None:
    with pytest.raises(InputError):
        Giai96(8, "0614141", 1)
    with pytest.raises(InputError):
        Giai96(0, "06141", 1)  # 5 digits
    with pytest.raises(InputError):
        Giai96(0, "061414112345", 1 << 42)  # too big for partition 0
    with pytest.raises(InputError):
        Giai96.decode(bytes.fromhex("3074257BF7194E4000001A85"))  # an SGTIN-96
    with pytest.raises(InputError):
        Giai96.decode(bytes.fromhex("341C" + "00" * 10))  # partition 7 is reserved
    with pytest.raises(InputError):
        Giai96.from_tag_uri("urn:epc:tag:giai-96:0.0614141.0123")  # leading zero


def test_label_sheet_is_a_pdf_and_the_svg_names_the_archive() -> None:
    label = Label("01HZY3Z4Q8Q1V6S9N0M5K2J3H4", "http://n/v/01HZY3Z4Q8Q1V6S9N0M5K2J3H4?c=00")
    assert b"01HZY3Z4Q8Q1V6S9N0M5K2J3H4</text>" in label_svg(label)
    sheet = label_sheet_pdf([label] * 16)
    assert sheet.startswith(b"%PDF-")
    assert sheet.count(b"/Type /Page\n") == 2


def _events(api: Api, archive_id: str) -> list[str]:
    response = api.client.get(
        f"/api/v1/archives/{archive_id}/events", headers=api.auth("archivist")
    )
    assert response.status_code == 200, response.text
    return [e["type"] for e in response.json()]


def _scans(*items: tuple[str, str, datetime]) -> dict[str, object]:
    return {"scans": [{"reader": r, "location": loc, "time": t.isoformat()} for r, loc, t in items]}


def test_qr_bind_scans_last_seen_and_refusals(api: Api) -> None:
    archive = api.create()
    archive_id = archive["id"]
    assert (
        api.client.post(
            f"/api/v1/archives/{archive_id}/archive", headers=api.auth("archivist")
        ).status_code
        == 200
    )
    api.node.worker.run_until_anchored(timeout=30)
    bound = api.client.post(
        f"/api/v1/archives/{archive_id}/tags", json={"kind": "qr"}, headers=api.auth("archivist")
    )
    assert bound.status_code == 201, bound.text
    tag = bound.json()
    assert tag["label"].startswith(f"{api.node.settings.base_url}/v/{archive_id}?c=")
    assert tag["tag_hash"] == hashlib.sha256(b"qr\x00" + tag["label"].encode()).hexdigest()
    again = api.client.post(
        f"/api/v1/archives/{archive_id}/tags", json={"kind": "qr"}, headers=api.auth("archivist")
    )
    assert again.status_code == 409
    assert again.json()["code"] == "tag_bound"

    now = datetime.now(UTC)
    scans = _scans(
        ("reader-1", "B2/shelf-14", now - timedelta(minutes=5)), ("hand-7", "ward-5B", now)
    )
    scanned = api.client.post(
        f"/api/v1/tags/{tag['tag_hash']}/scans", json=scans, headers=api.auth("archivist")
    )
    assert scanned.status_code == 200, scanned.text
    assert scanned.json()["last_location"] == "ward-5B"
    assert scanned.json()["scan_count"] == 2
    older = _scans(("reader-1", "B2/shelf-1", now - timedelta(hours=1)))
    api.client.post(
        f"/api/v1/tags/{tag['tag_hash']}/scans", json=older, headers=api.auth("archivist")
    )
    seen = api.client.get(f"/api/v1/tags/{tag['tag_hash']}", headers=api.auth("archivist")).json()
    assert seen["last_location"] == "ward-5B"
    assert seen["scan_count"] == 3
    assert _events(api, archive_id)[-4:] == ["TAG_BIND", "TAG_SCAN", "TAG_SCAN", "TAG_SCAN"]

    before = api.footprint()
    unbound = api.client.post(
        f"/api/v1/tags/{'ab' * 32}/scans", json=scans, headers=api.auth("archivist")
    )
    assert unbound.status_code == 409
    assert unbound.json()["code"] == "tag_unbound"
    revoked = api.client.delete(f"/api/v1/tags/{tag['tag_hash']}", headers=api.auth("archivist"))
    assert revoked.status_code == 200
    assert revoked.json()["revoked"] is True
    refused = api.client.post(
        f"/api/v1/tags/{tag['tag_hash']}/scans", json=scans, headers=api.auth("archivist")
    )
    assert refused.status_code == 409
    assert refused.json()["code"] == "tag_revoked"
    assert api.footprint().log_size == before.log_size  # no event for a refused scan
    assert api.node.tags.refusals() == {"unbound": 2, "revoked": 2}

    label = api.client.get(
        f"/api/v1/archives/{archive_id}/label",
        params={"format": "png"},
        headers=api.auth("archivist"),
    )
    assert label.status_code == 200
    assert label.content.startswith(b"\x89PNG")
    sheet = api.client.get(
        "/api/v1/labels.pdf", params={"ids": archive_id}, headers=api.auth("archivist")
    )
    assert sheet.status_code == 200
    assert sheet.content.startswith(b"%PDF-")
    assert api.client.get(f"/api/v1/archives/{archive_id}/label").status_code == 401


def test_bad_scan_bodies_are_refused_and_change_nothing(api: Api) -> None:
    archive = api.create()
    bound = api.client.post(
        f"/api/v1/archives/{archive['id']}/tags", json={"kind": "qr"}, headers=api.auth("archivist")
    ).json()
    url = f"/api/v1/tags/{bound['tag_hash']}/scans"
    before = api.footprint()
    now = datetime.now(UTC)
    for body in (
        {"scans": []},
        _scans(("reader 1 with free text", "B2", now)),
        {"scans": [{"reader": "r", "location": "B2", "time": "2026-12-02T10:00:00"}]},  # no zone
        {"scans": [{"reader": "r", "location": "B2", "time": now.isoformat(), "patient": "x"}]},
    ):
        response = api.client.post(url, json=body, headers=api.auth("archivist"))
        assert response.status_code == 422, (body, response.text)
        assert "code" in response.json()
    assert (
        api.client.post(url, json=_scans(("r", "B2", now)), headers=api.auth("auditor")).status_code
        == 403
    )
    assert api.client.post(url, json=_scans(("r", "B2", now))).status_code == 401
    assert api.footprint() == before
    rfid = api.client.post(
        f"/api/v1/archives/{archive['id']}/tags",
        json={"kind": "rfid_epc", "asset_reference": 1},
        headers=api.auth("archivist"),
    )
    assert rfid.status_code == 409
    assert rfid.json()["code"] == "no_company_prefix"


def test_rfid_tag_bound_with_the_configured_company_prefix(make_node: MakeNode) -> None:
    node = make_node(tag_company_prefix="0614141")
    keys = issue_keys(node)
    auth = {"Authorization": f"Bearer {keys['archivist']}"}
    with serve(create_app(node)) as client:
        import json

        created = client.post(
            "/api/v1/archives",
            headers=auth,
            files={"file": ("a.txt", b"folder", "text/plain")},
            data={"metadata": json.dumps(archive_metadata())},
        )
        archive_id = created.json()["id"]
        bound = client.post(
            f"/api/v1/archives/{archive_id}/tags",
            json={"kind": "rfid_epc", "asset_reference": 12345400},
            headers=auth,
        )
        assert bound.status_code == 201, bound.text
        tag = bound.json()
        assert tag["label"] == "urn:epc:tag:giai-96:0.0614141.12345400"
        epc = bytes.fromhex("3414257BF400000000BC6038")
        assert tag["tag_hash"] == hashlib.sha256(b"rfid_epc\x00" + epc).hexdigest()
        scan = _scans(("gate-1", "archive-room", datetime.now(UTC)))
        assert (
            client.post(
                f"/api/v1/tags/{tag['tag_hash']}/scans", json=scan, headers=auth
            ).status_code
            == 200
        )

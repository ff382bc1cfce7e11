"""``/v/{id}``: the public verification page shows safe facts only, without sign-in, and its
``proof.json`` holds only events without patient data, proven against the anchored checkpoint.
(The in-browser verification itself is tested in ``test_browser.py``.)"""

from __future__ import annotations

import base64
import hashlib
import json
import re

from anchoring.merkle import leaf_hash, verify_inclusion
from tests.api.conftest import Api

PHI = ("Discharge summary", "MRN-0001", "cardiology", "5B", "ward", "HIS")
# Identifiers the page shows on purpose (ULIDs, addresses, hashes) are random and may contain a
# short PHI value such as the ward "5B" by chance; they are removed before the PHI check.
_SAFE_IDENTIFIERS = re.compile(r"\b[0-9A-HJKMNP-TV-Z]{26}\b|0x[0-9a-fA-F]+|\b[0-9a-f]{16,}\b")


def _without_identifiers(html: str) -> str:
    return _SAFE_IDENTIFIERS.sub("", html)


def _archived(api: Api) -> dict[str, object]:
    created = api.create()
    archive_id = created["id"]
    response = api.client.post(
        f"/api/v1/archives/{archive_id}/archive", headers=api.auth("archivist")
    )
    assert response.status_code == 200, response.text
    api.node.worker.run_until_anchored(timeout=30)
    return {**created, "archived": response.json()}


def test_public_page_shows_safe_facts_and_no_phi(api: Api) -> None:
    archive = _archived(api)
    archive_id = str(archive["id"])
    response = api.client.get(f"/v/{archive_id}")  # no Authorization header
    assert response.status_code == 200
    html = response.text
    assert archive_id in html
    assert "INPATIENT" in html
    assert "ARCHIVED" in html
    assert api.node.keystore.address in html
    assert 'lang="zh-CN"' in html
    assert "档案存证公开验证" in html
    assert "01M902SQ5B5GE14281HGWEZW1F" not in _without_identifiers("01M902SQ5B5GE14281HGWEZW1F")
    assert "5B" in _without_identifiers("<dd>ward 5B</dd>")  # a metadata value is not scrubbed
    visible = _without_identifiers(html)
    for secret in PHI:
        assert secret not in visible, secret
    assert str(archive["patient_pseudonym"]) not in html
    english = api.client.get(f"/v/{archive_id}", params={"lang": "en"})
    assert 'lang="en"' in english.text
    assert "Public archive verification" in english.text
    csp = response.headers["content-security-policy"]
    # 'self' and one exact hash: the inline import map of the @noble modules, nothing else
    import_map = re.search(r'<script type="importmap">(.*?)</script>', html, re.S)
    assert import_map is not None
    digest = base64.b64encode(hashlib.sha256(import_map.group(1).encode()).digest()).decode()
    assert f"script-src 'self' 'sha256-{digest}';" in csp
    assert json.loads(import_map.group(1)) == {
        "imports": {
            "@noble/hashes/": "/assets/noble-hashes/",
            "@noble/curves/": "/assets/noble-curves/",
        }
    }
    for path in ("/assets/noble-hashes/sha3.js", "/assets/noble-curves/secp256k1.js"):
        module = api.client.get(path)
        assert module.status_code == 200, path
        assert module.headers["content-type"].startswith("text/javascript")
    assert "default-src 'none'" in csp
    rpc_origin = api.node.settings.rpc_url.rstrip("/")
    assert f"connect-src 'self' {rpc_origin}" in csp
    assert response.headers["x-frame-options"] == "DENY"
    assert "<script>" not in html  # no other inline script: the module, a JSON block, the map


def test_label_commitment_prefix_is_checked(api: Api) -> None:
    archive = _archived(api)
    archive_id = str(archive["id"])
    proof = api.client.get(f"/v/{archive_id}/proof.json").json()
    archive_event = json.loads(base64.b64decode(proof["entries"][0]["event"]))
    prefix = archive_event["data"]["commitment"][:16]
    good = api.client.get(f"/v/{archive_id}", params={"c": prefix})
    assert 'id="label-check" class="ok"' in good.text
    bad = api.client.get(f"/v/{archive_id}", params={"c": "0" * 16})
    assert 'id="label-check" class="bad"' in bad.text


def test_public_proof_has_only_phi_free_events_each_proven(api: Api) -> None:
    archive = _archived(api)
    archive_id = str(archive["id"])
    response = api.client.get(f"/v/{archive_id}/proof.json")
    assert response.status_code == 200
    document = response.json()
    assert document["format"] == "archivechain.public-proof/v1"
    assert document["archive_id"] == archive_id
    assert len(document["entries"]) == 1
    for entry in document["entries"]:
        event = base64.b64decode(entry["event"])
        assert json.loads(event)["type"] == "ARCHIVE"
        assert str(archive["patient_pseudonym"]).encode() not in event
        checkpoint = entry["checkpoint"]
        verify_inclusion(
            entry["log_index"],
            checkpoint["size"],
            leaf_hash(event),
            [bytes.fromhex(h) for h in entry["proof"]],
            bytes.fromhex(checkpoint["root"]),
        )
    # the events decoded (what could carry PHI), not their base64, in which a short secret such
    # as "5B" turns up by chance
    readable = json.dumps(
        {
            **document,
            "entries": [
                {**e, "event": base64.b64decode(e["event"]).decode()} for e in document["entries"]
            ],
        }
    )
    # and without the archive id shown twice in it (a ULID may hold "5B" by chance too)
    visible = _without_identifiers(readable)
    for secret in PHI:
        assert secret not in visible, secret
    assert str(archive["patient_pseudonym"]) not in readable


def test_unknown_malformed_and_created_archives(api: Api) -> None:
    missing = api.client.get("/v/01HZY3Z4Q8Q1V6S9N0M5K2J3H4")
    assert missing.status_code == 404
    assert "未找到" in missing.text
    assert api.client.get("/v/not-an-id").status_code == 404
    assert api.client.get("/v/not-an-id/proof.json").json()["code"] == "archive_not_found"
    created = api.create()
    page = api.client.get(f"/v/{created['id']}")
    assert page.status_code == 200
    assert "CREATED" in page.text
    pending = api.client.get(f"/v/{created['id']}/proof.json")
    assert (pending.status_code, pending.json()["code"]) == (409, "proof_pending")

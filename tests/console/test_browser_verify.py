"""The public verification page in a real browser (Debian chromium driven by Playwright): the
in-browser verifier (verify.js: WebCrypto SHA-256, @noble Keccak-256 and secp256k1, eth_call over
JSON-RPC to the real anvil, which must allow the page's origin: CORS) agrees with ``archivechain
verify --json`` on genuine documents (VALID) and on a table of tampered ones, one per failure
class (same outcome, same failure code, same entry), for full bundles and for the page's public
proof; no serious or critical axe-core violations; screenshots saved."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from eth_account import Account

from anchoring.certificate import typed_message
from node.principal import Role
from tests.api.conftest import archive_metadata, issue_keys, real_pdf
from tests.console.live import ARTIFACTS, Browser, live_server
from tests.fixtures.node import MakeNode

Doc = dict[str, Any]
OTHER = "0x1111111111111111111111111111111111111111"  # EIP-55 (all digits), no member's


def verified_first(click: str) -> Callable[[Any], None]:
    """Before axe runs: click ``click`` and wait for the verifier's outcome."""

    def step(page: Any) -> None:
        page.click(click)
        page.wait_for_selector("#outcome[data-outcome]", timeout=30_000)

    return step


def rendered_first(ready: str) -> Callable[[Any], None]:
    """Before axe runs on a page its own script renders: wait for ``ready``."""

    def step(page: Any) -> None:
        page.wait_for_selector(ready, timeout=60_000)

    return step


def cli_verify_all(files: list[Path], rpc_url: str, notary: str) -> dict[str, dict[str, Any]]:
    """``archivechain verify --json`` on every file in one run (the reference verifier, as a
    user runs it): its JSON line for each file, by file name."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "archivechain",
            "verify",
            *map(str, files),
            "--rpc",
            rpc_url,
            "--notary",
            notary,
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert len(lines) == len(files), result.stderr
    return {Path(line["file"]).name: line for line in lines}


def browser_verify(page: Any, document: Path) -> dict[str, str]:
    # forget the previous outcome first: the page clears it only once it has read the file
    page.evaluate("document.getElementById('outcome').removeAttribute('data-outcome')")
    page.set_input_files("#bundle-file", str(document))
    page.wait_for_selector("#outcome[data-outcome]", timeout=60_000)
    outcome = page.locator("#outcome")
    return {
        "outcome": outcome.get_attribute("data-outcome") or "",
        "code": outcome.get_attribute("data-code") or "",
        "position": outcome.get_attribute("data-position") or "",
        "text": outcome.inner_text(),
    }


# -- tampering --------------------------------------------------------------------------------


def _copy(document: Doc) -> Doc:
    copy: Doc = json.loads(json.dumps(document))
    return copy


def _event(document: Doc, position: int) -> Doc:
    event: Doc = json.loads(base64.b64decode(document["entries"][position]["event"]))
    return event


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _with_event(document: Doc, position: int, raw: bytes) -> Doc:
    copy = _copy(document)
    copy["entries"][position]["event"] = base64.b64encode(raw).decode()
    return copy


def _edit(document: Doc, change: Callable[[Doc], None]) -> Doc:
    copy = _copy(document)
    change(copy)
    return copy


def _flip_hex(text: str, at: int = 0) -> str:
    return text[:at] + ("0" if text[at] != "0" else "1") + text[at + 1 :]


def _noncanonical(text: str) -> str:
    """``text`` (canonical base64) made non-canonical: a padding bit set, or (without padding)
    a space inside."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    data = text.rstrip("=")
    if data == text:
        return text[:4] + " " + text[4:]
    last = alphabet[alphabet.index(data[-1]) ^ 1]
    return data[:-1] + last + text[len(data) :]


def _bundle_cases(bundle: Doc, other_checkpoint: int) -> dict[str, Doc | bytes]:
    """One tampered bundle per failure class, from a genuine bundle of CREATE, ARCHIVE,
    HOLD_PLACE (all anchored; the archive on hold on chain)."""
    text = json.dumps(bundle)
    event1 = _event(bundle, 1)
    duplicate_in_event = _canonical(event1)[:-1] + b',"v":1}'
    schema = {**event1, "data": {**event1["data"], "record_class": "VETERINARY"}}
    unknown_field = {**event1, "data": {**event1["data"], "note": "x"}}
    retimed = {
        **event1,
        "time": event1["time"][:-2] + ("1Z" if event1["time"][-2] != "1" else "2Z"),
    }
    padded = bundle["entries"][1]["event"]
    proven = max(range(3), key=lambda p: len(bundle["entries"][p]["proof"]))
    assert bundle["entries"][proven]["proof"]
    cases: dict[str, Doc | bytes] = {
        # §3: unusable documents (the CLI exits 2, the browser says UNUSABLE)
        "duplicate_key": text.replace('{"', '{"chain_id": 1, "', 1).encode(),
        "fraction": text.replace(
            f'"chain_id": {bundle["chain_id"]}', '"chain_id": 31337.0'
        ).encode(),
        "exponent": text.replace('"log_index": 0', '"log_index": 0e0', 1).encode(),
        "invalid_utf8": text.replace('"format"', '"format\xff"').encode("latin-1"),
        "byte_order_mark": b"\xef\xbb\xbf" + text.encode(),
        "noncanonical_base64": text.replace(padded, _noncanonical(padded), 1).encode(),
        "lowercase_notary": _edit(bundle, lambda d: d.update(notary=d["notary"].lower())),
        "unknown_top_field": _edit(bundle, lambda d: d.update(extra=1)),
        "custody_null": _edit(bundle, lambda d: d.update(custody=None)),
        "another_format": _edit(bundle, lambda d: d.update(format="archivechain.proof/v2")),
        # §7.3 step 1: event_invalid
        "event_not_canonical": _with_event(bundle, 1, json.dumps(event1, sort_keys=True).encode()),
        "event_duplicate_key": _with_event(bundle, 1, duplicate_in_event),
        "event_schema_enum": _with_event(bundle, 1, _canonical(schema)),
        "event_unknown_field": _with_event(bundle, 1, _canonical(unknown_field)),
        "event_bad_checksum": _with_event(
            bundle, 1, _canonical({**event1, "hospital": event1["hospital"].lower()})
        ),
        # §7.3 steps 2-3
        "hospital_mismatch": _edit(bundle, lambda d: d["entries"][0].update(hospital=OTHER)),
        "archive_mismatch": _edit(
            bundle, lambda d: d.update(archive_id="01HZY3Z4Q8Q1V6S9N0M5K2J3H4")
        ),
        "checkpoint_hospital_mismatch": _edit(
            bundle, lambda d: d["entries"][0]["checkpoint"].update(hospital=OTHER)
        ),
        "log_index_mismatch": _edit(bundle, lambda d: d["entries"][1].update(log_index=10**6)),
        "event_tampered": _with_event(bundle, 1, _canonical(retimed)),
        "root_tampered": _edit(
            bundle,
            lambda d: d["entries"][0]["checkpoint"].update(
                root=_flip_hex(d["entries"][0]["checkpoint"]["root"])
            ),
        ),
        "proof_tampered": _edit(
            bundle,
            lambda d: d["entries"][proven]["proof"].__setitem__(
                0, _flip_hex(d["entries"][proven]["proof"][0], 5)
            ),
        ),
        # §7.3 step 5
        "checkpoint_missing": _edit(
            bundle, lambda d: d["entries"][0]["checkpoint"].update(index=10**6)
        ),
        "checkpoint_mismatch": _edit(
            bundle, lambda d: d["entries"][0]["checkpoint"].update(index=other_checkpoint)
        ),
        # §7.4: lifecycle
        "prev_mismatch": _edit(bundle, lambda d: d["entries"].pop(1)),
        "time_order": _edit(bundle, lambda d: d["entries"].append(d["entries"][1])),
        "illegal_transition": _edit(bundle, lambda d: d["entries"].pop(0)),
        # §7.4: custody
        "custody_claim_mismatch": _edit(
            bundle,
            lambda d: d.update(
                custody={
                    "custodian": _event(bundle, 0)["hospital"],
                    "state": "ARCHIVED",
                    "on_hold": False,
                    "commitment": _event(bundle, 1)["data"]["commitment"],
                }
            ),
        ),
        "custody_mismatch": _edit(bundle, lambda d: d.update(entries=d["entries"][:1])),
        # §7.2
        "wrong_chain": _edit(bundle, lambda d: d.update(chain_id=1)),
        "wrong_notary": _edit(
            bundle, lambda d: d.update(notary="0x1111111111111111111111111111111111111111")
        ),
    }
    return cases


def _certificate_cases(
    destroyed: Doc, public: Doc, archive_id: str, custodian: str
) -> dict[str, Doc | bytes]:
    """Certificate failures, on the destroyed archive's bundle and on its public proof."""
    certificate = destroyed["certificate"]
    raw = base64.b64decode(certificate["document"])
    stranger = Account.create()
    forged = stranger.sign_message(
        typed_message(
            chain_id=destroyed["chain_id"],
            notary=destroyed["notary"],
            archive_id=archive_id,
            digest=hashlib.sha256(raw).digest(),
            custodian=custodian,
        )
    )
    wrong_signer = "0x" + bytes(forged.signature).hex()
    signature = certificate["signature"]
    bad_signature = signature[:70] + _flip_hex(signature[70:])
    cases: dict[str, Doc | bytes] = {}
    for kind, document in (("bundle", destroyed), ("public", public)):
        altered = raw.replace(b'"crypto_erasure"', b'"shredded_paper"')
        cases[f"{kind}_certificate_missing"] = _edit(document, lambda d: d.pop("certificate"))
        cases[f"{kind}_certificate_mismatch"] = _edit(
            document,
            lambda d, a=altered: d["certificate"].update(document=base64.b64encode(a).decode()),
        )
        cases[f"{kind}_bad_signature"] = _edit(
            document, lambda d: d["certificate"].update(signature=bad_signature)
        )
        cases[f"{kind}_wrong_signer"] = _edit(
            document, lambda d: d["certificate"].update(signature=wrong_signer)
        )
        cases[f"{kind}_v_not_27_28"] = _edit(
            document, lambda d: d["certificate"].update(signature=signature[:-2] + "01")
        )
    # public proof: its own order rules, and an out-of-date one (DESTROY missing) fails custody
    cases["public_reversed"] = _edit(public, lambda d: d["entries"].reverse())
    cases["public_without_destroy"] = _edit(
        public, lambda d: (d["entries"].pop(), d.pop("certificate"))
    )
    cases["public_custody_field"] = _edit(
        public,
        lambda d: d.update(
            custody={
                "custodian": custodian,
                "state": "DESTROYED",
                "on_hold": False,
                "commitment": None,
            }
        ),
    )
    cases["public_three_entries"] = _edit(public, lambda d: d["entries"].append(d["entries"][0]))
    return cases


# -- the test -----------------------------------------------------------------------------------


def test_browser_verifier_agrees_with_the_cli(
    make_node: MakeNode, browser: Browser, tmp_path: Path
) -> None:
    import httpx

    node = make_node()
    keys = issue_keys(node)
    keys["manager"] = node.keys.issue(Role.RECORDS_MANAGER, "manager-1").secret
    auth = {"Authorization": f"Bearer {keys['archivist']}"}
    manager = {"Authorization": f"Bearer {keys['manager']}"}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with live_server(node) as base, httpx.Client(base_url=base, timeout=60) as http:

        def create(**metadata: Any) -> str:
            created = http.post(
                "/api/v1/archives",
                headers=auth,
                files={"file": ("s.pdf", real_pdf(), "application/pdf")},
                data={"metadata": json.dumps(archive_metadata(**metadata))},
            )
            assert created.status_code == 201, created.text
            archive_id: str = created.json()["id"]
            archived = http.post(f"/api/v1/archives/{archive_id}/archive", headers=auth)
            assert archived.status_code == 200, archived.text
            return archive_id

        # A: archived, then on hold (custody on chain: ARCHIVED, on hold)
        archive_id = create()
        node.worker.run_until_anchored(timeout=60)
        held = http.post(f"/api/v1/archives/{archive_id}/hold", headers=auth, json={"reason": "x"})
        assert held.is_success, held.text
        # D: retention long over, destroyed with a signed certificate (four eyes)
        doomed = create(record_class="OUTPATIENT", trigger_date="2000-01-02")
        assert http.post("/api/v1/retention/run", headers=manager).is_success
        proposal = http.post(
            "/api/v1/retention/proposals",
            headers=auth,
            json={"archive_ids": [doomed], "reason": "retention expired"},
        )
        assert proposal.status_code == 201, proposal.text
        items = f"/api/v1/retention/proposals/{proposal.json()['id']}/items/{doomed}"
        approved = http.post(items, headers=manager, json={"reason": "ok", "approve": True})
        assert approved.status_code == 200, approved.text
        destroyed_now = http.post(f"{items}/destroy", headers=auth)
        assert destroyed_now.status_code == 200, destroyed_now.text
        node.worker.run_until_anchored(timeout=60)

        def proof(archive: str) -> Doc:
            response = http.get(f"/api/v1/archives/{archive}/proof", headers=auth)
            assert response.status_code == 200, response.text
            document: Doc = json.loads(response.content)
            return document

        def public_proof(archive: str) -> Doc:
            response = http.get(f"/v/{archive}/proof.json")
            assert response.status_code == 200, response.text
            document: Doc = json.loads(response.content)
            return document

        bundle, destroyed = proof(archive_id), proof(doomed)
        public, public_destroyed = public_proof(archive_id), public_proof(doomed)
        assert [_event(bundle, p)["type"] for p in range(3)] == ["CREATE", "ARCHIVE", "HOLD_PLACE"]
        assert [_event(public_destroyed, p)["type"] for p in range(2)] == ["ARCHIVE", "DESTROY"]
        assert "certificate" in public_destroyed
        assert "certificate" not in public
        notary, rpc = bundle["notary"], node.settings.rpc_url
        # an earlier checkpoint of the same log (A was anchored before D): on chain, another root
        assert bundle["entries"][0]["checkpoint"]["index"] > 0
        earlier = 0

        cases: dict[str, Doc | bytes] = {
            "genuine_bundle": bundle,
            "genuine_public": public,
            "genuine_destroyed_bundle": destroyed,
            "genuine_destroyed_public": public_destroyed,
            **_bundle_cases(bundle, earlier),
            **_certificate_cases(destroyed, public_destroyed, doomed, node.hospital),
            "public_event_tampered": _with_event(
                public, 0, _canonical({**_event(public, 0), "log_index": 99})
            ),
            "public_wrong_notary": _edit(
                public, lambda d: d.update(notary="0x1111111111111111111111111111111111111111")
            ),
        }
        files = []
        for name, document in cases.items():
            path = tmp_path / f"{name}.json"
            path.write_bytes(
                document if isinstance(document, bytes) else json.dumps(document).encode()
            )
            files.append(path)
        reference = cli_verify_all(files, rpc, notary)

        page = browser.new_page()
        page.goto(f"{base}/v/{doomed}?lang=en")
        assert page.locator("h1").inner_text() == "Public archive verification"
        seen_codes: dict[str, str] = {}
        for path in files:
            name = path.stem
            cli = reference[path.name]
            seen = browser_verify(page, path)
            if name.startswith("genuine"):
                assert cli["exit_code"] == 0, (name, cli)
                assert seen["outcome"] == "VALID", (name, seen)
            elif cli["status"] == "unusable":
                assert cli["exit_code"] == 2, (name, cli)
                assert seen["outcome"] == "UNUSABLE", (name, seen, cli)
            else:
                assert cli["exit_code"] == 1, (name, cli)
                failure = cli["failure"]
                assert seen["outcome"] == "INVALID", (name, seen, cli)
                assert seen["code"] == failure["code"], (name, seen, failure)
                entry = failure.get("entry")
                assert seen["position"] == ("" if entry is None else str(entry)), (
                    name,
                    seen,
                    failure,
                )
                assert failure["code"] in seen["text"]
            seen_codes[name] = seen["code"]
            if name == "bundle_wrong_signer":
                page.screenshot(path=str(ARTIFACTS / "public-invalid-en.png"), full_page=True)

        # every failure class the issue names is in the table, with the expected code
        expected = {
            "duplicate_key": "unusable",
            "fraction": "unusable",
            "noncanonical_base64": "unusable",
            "event_not_canonical": "event_invalid",
            "event_duplicate_key": "event_invalid",
            "event_schema_enum": "event_invalid",
            "event_tampered": "inclusion_invalid",
            "root_tampered": "inclusion_invalid",
            "proof_tampered": "inclusion_invalid",
            "checkpoint_missing": "checkpoint_missing",
            "hospital_mismatch": "hospital_mismatch",
            "archive_mismatch": "archive_mismatch",
            "checkpoint_hospital_mismatch": "checkpoint_hospital_mismatch",
            "checkpoint_mismatch": "checkpoint_mismatch",
            "prev_mismatch": "prev_mismatch",
            "time_order": "time_order",
            "illegal_transition": "illegal_transition",
            "custody_claim_mismatch": "custody_claim_mismatch",
            "custody_mismatch": "custody_mismatch",
            "bundle_certificate_missing": "certificate_missing",
            "bundle_certificate_mismatch": "certificate_mismatch",
            "bundle_bad_signature": "certificate_signature_invalid",
            "bundle_wrong_signer": "certificate_signature_invalid",
            "public_certificate_missing": "certificate_missing",
            "public_wrong_signer": "certificate_signature_invalid",
            "public_reversed": "illegal_transition",
            "public_without_destroy": "custody_mismatch",
            "public_custody_field": "unusable",
            "wrong_chain": "chain_id_mismatch",
            "wrong_notary": "notary_mismatch",
        }
        assert {name: seen_codes[name] for name in expected} == expected

        # the node's public proof of a live and of a destroyed archive, verified in the page
        for archive in (archive_id, doomed):
            page.goto(f"{base}/v/{archive}?lang=en")
            page.click("#verify-here")
            page.wait_for_selector("#outcome[data-outcome]", timeout=60_000)
            assert page.locator("#outcome").get_attribute("data-outcome") == "VALID"
            steps = page.locator("#steps li").all_inner_texts()
            assert any("eth_chainId" in s for s in steps)
            assert any("leaf hash SHA-256(0x00 ‖ event)" in s for s in steps)
            assert any("inclusion proof" in s for s in steps)
            assert any("eth_call checkpointAt" in s for s in steps)
            assert any("on-chain checkpoint agrees" in s for s in steps)
            assert any("custody record agrees" in s for s in steps)
        assert any("EIP-712 signature" in s for s in steps)
        page.screenshot(path=str(ARTIFACTS / "public-valid-en.png"), full_page=True)
        assert browser.axe(f"{base}/v/{doomed}?lang=en", then=verified_first("#verify-here")) == []

        zh = browser.new_page()
        zh.goto(f"{base}/v/{archive_id}")
        assert zh.locator("html").get_attribute("lang") == "zh-CN"
        zh.click("#verify-here")
        zh.wait_for_selector("#outcome[data-outcome]", timeout=60_000)
        assert "有效" in zh.locator("#outcome").inner_text()
        zh.screenshot(path=str(ARTIFACTS / "public-valid-zh.png"), full_page=True)
        assert browser.axe(f"{base}/v/{archive_id}", then=verified_first("#verify-here")) == []
        # /docs once Swagger UI has rendered the operations (before that, axe sees an empty page)
        assert browser.axe(f"{base}/docs", then=rendered_first(".swagger-ui .opblock")) == []


def test_an_unreachable_chain_is_chain_unavailable_in_both(
    make_node: MakeNode, browser: Browser, tmp_path: Path
) -> None:
    """The browser's chain endpoint (``public_rpc_url``) and the CLI's ``--rpc`` both point
    where nothing answers: a genuine bundle is "chain unavailable" (exit 3), not invalid; a
    document-level failure found without the chain (a broken lifecycle) still wins."""
    import httpx

    from node.ports import free_port

    dead = f"http://127.0.0.1:{free_port()}"
    node = make_node(public_rpc_url=dead)
    auth = {"Authorization": f"Bearer {issue_keys(node)['archivist']}"}
    with live_server(node) as base, httpx.Client(base_url=base, timeout=60) as http:
        created = http.post(
            "/api/v1/archives",
            headers=auth,
            files={"file": ("s.pdf", real_pdf(), "application/pdf")},
            data={"metadata": json.dumps(archive_metadata())},
        )
        assert created.status_code == 201, created.text
        archive_id = created.json()["id"]
        assert http.post(f"/api/v1/archives/{archive_id}/archive", headers=auth).is_success
        node.worker.run_until_anchored(timeout=60)
        bundle: Doc = json.loads(
            http.get(f"/api/v1/archives/{archive_id}/proof", headers=auth).content
        )
        cases = {
            "unreachable_genuine": bundle,
            "unreachable_illegal": _edit(bundle, lambda d: d["entries"].pop(0)),
        }
        files = []
        for name, document in cases.items():
            path = tmp_path / f"{name}.json"
            path.write_text(json.dumps(document))
            files.append(path)
        reference = cli_verify_all(files, dead, bundle["notary"])
        page = browser.new_page()
        page.goto(f"{base}/v/{archive_id}?lang=en")
        genuine = browser_verify(page, files[0])
        assert reference["unreachable_genuine.json"]["exit_code"] == 3
        assert (genuine["outcome"], genuine["code"]) == ("CHAIN_UNAVAILABLE", "chain_unavailable")
        illegal = browser_verify(page, files[1])
        assert reference["unreachable_illegal.json"]["exit_code"] == 1
        assert reference["unreachable_illegal.json"]["failure"]["code"] == "illegal_transition"
        assert (illegal["outcome"], illegal["code"]) == ("INVALID", "illegal_transition")

"""The console pages for destruction, certificates, retention extension, tag revocation and
scans, the PDF label sheet, the 403 page and member sign-in (EIP-4361), in a real browser
(Debian chromium via Playwright, one live node). Each change is made through the page and read
back from the services; axe-core finds no serious or critical violation on any new page;
screenshots go to test-artifacts/ (gitignored)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from anchoring.events import RecordClass, Sensitivity, TagKind
from node.principal import Principal, Role
from node.runtime import NodeRuntime
from node.services.archives import NewArchive
from node.siwe import sign_message
from tests.api.conftest import issue_keys
from tests.console.live import ARTIFACTS, Browser, live_server
from tests.fixtures.node import MakeNode


def _archive(node: NodeRuntime, principal: Principal, title: str, old: bool = False) -> str:
    trigger = (datetime.now(UTC) - timedelta(days=40 * 366)).date() if old else None
    new = NewArchive(
        record_class=RecordClass.OUTPATIENT,
        sensitivity=Sensitivity.NORMAL,
        department="clinic",
        title=title,
        patient_id="MRN-BROWSER",
        source_system="HIS",
        media_type="text/plain",
        trigger_date=trigger,
    )
    created = node.archives.create(principal, new, [f"{title} content".encode()])
    node.archives.archive(principal, created.id)
    return str(created.id)


def _ask_for_message(address: str) -> Any:
    def step(page: Any) -> None:
        page.fill("#member-address", address)
        page.click("#get-message")
        page.wait_for_selector("#siwe-message")

    return step


def _query_audit(archive_id: str) -> Any:
    def step(page: Any) -> None:
        page.fill("#audit-archive", archive_id)
        page.click("#do-audit")
        page.wait_for_selector("#access-rows, #no-rows")

    return step


def _sign_in(browser: Browser, base: str, key: str) -> tuple[Any, Any]:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{base}/console/login?lang=en")
    page.fill("#api_key", key)
    page.click("#sign-in")
    page.wait_for_url(f"{base}/console/archives")
    return context, page


def test_destruction_extension_tags_and_member_sign_in_in_the_browser(
    make_node: MakeNode, browser: Browser, regulator: LocalAccount
) -> None:
    node = make_node()
    keys = issue_keys(node)
    manager_key = node.keys.issue(Role.RECORDS_MANAGER, "manager-b").secret
    archivist = node.keys.authenticate(keys["archivist"])
    manager = node.keys.authenticate(manager_key)
    doomed = _archive(node, archivist, "Old visit", old=True)
    kept = _archive(node, archivist, "Recent visit")
    node.retention.start_dispositions(archivist)
    proposal = node.retention.propose(archivist, [doomed], "retention expired")
    node.retention.decide(manager, proposal.id, doomed, approve=True, reason="checked")
    label = f"{node.settings.base_url}/v/{kept}"
    tag = node.tags.bind(archivist, kept, TagKind.QR, label.encode(), label)
    short = tag.tag_hash[:16]
    node.archives.place_hold(archivist, kept, "court order 9")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    findings: dict[str, list[str]] = {}
    with live_server(node) as base:
        context, page = _sign_in(browser, base, keys["archivist"])

        # 1. execute the approved destruction; the certificate page and its signed bytes
        page.goto(f"{base}/console/retention")
        assert page.locator("#approved tbody tr").count() == 1
        findings["retention"] = browser.serious(page.url, page.context.cookies())
        page.click(f"#destroy-{doomed}")  # the confirmation is required: nothing happens
        assert page.url == f"{base}/console/retention"
        assert node.retention.proposal(archivist, proposal.id).items[0].decision == "approved"
        page.check(f"#confirm-destroy-{doomed}")
        page.click(f"#destroy-{doomed}")
        page.wait_for_url(f"{base}/console/archives/{doomed}/certificate")
        cert = node.retention.certificate(archivist, doomed)
        assert page.locator("#certificate-hash").inner_text() == cert.certificate_hash
        assert "MRN-BROWSER" not in page.content()
        page.screenshot(path=str(ARTIFACTS / "console-certificate-en.png"), full_page=True)
        findings["certificate"] = browser.serious(page.url, page.context.cookies())
        with page.expect_download() as download_info:
            page.click("#download-certificate")
        saved = download_info.value.path()
        assert saved is not None
        document = Path(saved).read_bytes()
        assert document == cert.document
        assert hashlib.sha256(document).hexdigest() == cert.certificate_hash

        # 2. retention extension: shorter refused (nothing changed), longer recorded
        before = node.archives.get(archivist, kept).retention_deadline
        assert before is not None
        page.goto(f"{base}/console/archives/{kept}")
        page.click("#retention-link")
        page.fill("#new-deadline", (before - timedelta(days=30)).date().isoformat())
        page.fill("#extend-reason", "typo")
        page.check("#confirm-extend")
        page.click("#do-extend")
        page.wait_for_selector("#flash")
        assert "retention_shortened" in page.locator("#flash").inner_text()
        assert node.archives.get(archivist, kept).retention_deadline == before
        later = (before + timedelta(days=3650)).date().isoformat()
        page.fill("#new-deadline", later)
        page.fill("#extend-reason", "litigation expected")
        page.check("#confirm-extend")
        page.click("#do-extend")
        page.wait_for_selector("#flash")
        assert page.locator("#deadline").inner_text().startswith(later)
        after = node.archives.get(archivist, kept).retention_deadline
        assert after is not None
        assert after.date().isoformat() == later
        findings["extend"] = browser.serious(page.url, page.context.cookies())

        # 3. tags: a scan entered by hand, then the tag revoked (its scans refused after)
        page.goto(f"{base}/console/archives/{kept}/tags")
        page.fill(f"#location-{short}", "records-room:B4")
        page.check(f"#confirm-scan-{short}")
        page.click(f"#scan-{short}")
        page.wait_for_selector("#flash")
        assert page.locator("#tags .location").inner_text() == "records-room:B4"
        assert node.tags.get(archivist, tag.tag_hash).scan_count == 1
        findings["tags"] = browser.serious(page.url, page.context.cookies())
        page.check(f"#confirm-revoke-{short}")
        page.click(f"#revoke-{short}")
        page.wait_for_selector("#flash")
        assert "revoked" in page.locator("#tags .kind").inner_text()
        assert node.tags.get(archivist, tag.tag_hash).revoked
        page.fill(f"#location-{short}", "records-room:B5")
        page.check(f"#confirm-scan-{short}")
        page.click(f"#scan-{short}")
        page.wait_for_selector("#flash")
        assert "tag_revoked" in page.locator("#flash").inner_text()
        assert node.tags.get(archivist, tag.tag_hash).last_location == "records-room:B4"

        # 4. the PDF label sheet
        page.goto(f"{base}/console/labels")
        findings["labels"] = browser.serious(page.url, page.context.cookies())
        page.fill("#label-ids", f"{kept}\n{kept}")
        with page.expect_download() as sheet_info:
            page.click("#do-label-sheet")
        sheet_path = sheet_info.value.path()
        assert sheet_path is not None
        assert Path(sheet_path).read_bytes().startswith(b"%PDF-")
        context.close()

        # 5. the 403 page, in Chinese
        mcontext, mpage = _sign_in(browser, base, manager_key)
        answer = mpage.goto(f"{base}/console/transfers?lang=zh")
        assert answer is not None
        assert answer.status == 403
        assert mpage.locator("h1").inner_text() == "无权访问"
        findings["forbidden"] = browser.serious(mpage.url, mpage.context.cookies())
        mcontext.close()

        # 6. member sign-in: the node's message, signed by the regulator's key, pasted back
        rcontext = browser.new_context()
        rpage = rcontext.new_page()
        rpage.goto(f"{base}/console/login")
        rpage.click("#member-link")
        findings["member-login"] = browser.serious(rpage.url, rpage.context.cookies())
        rpage.fill("#member-address", regulator.address)
        rpage.select_option("#member-role", "regulator")
        rpage.click("#get-message")
        rpage.wait_for_selector("#siwe-message")
        message = rpage.locator("#siwe-message").input_value()
        assert regulator.address in message
        rpage.screenshot(path=str(ARTIFACTS / "console-member-sign-in-zh.png"), full_page=True)
        findings["member-message"] = browser.serious(
            f"{base}/console/member/login", then=_ask_for_message(regulator.address)
        )
        rpage.fill("#signature", sign_message(message, b"\x01" * 32))  # another key
        rpage.click("#verify-sign-in")
        rpage.wait_for_selector("#member-error")
        assert "invalid_signature" in rpage.locator("#member-error").inner_text()
        rpage.goto(f"{base}/console/member/login?lang=en")
        rpage.fill("#member-address", regulator.address)
        rpage.click("#get-message")
        message = rpage.locator("#siwe-message").input_value()
        rpage.fill("#signature", sign_message(message, bytes(regulator.key)))
        rpage.click("#verify-sign-in")
        rpage.wait_for_url(f"{base}/console/member/holds")
        assert rpage.locator("#holds tbody tr").count() == 1
        assert kept in rpage.locator("#holds").inner_text()
        assert "regulator" in rpage.locator("#who").inner_text()
        rpage.screenshot(path=str(ARTIFACTS / "console-holds-en.png"), full_page=True)
        findings["holds"] = browser.serious(rpage.url, rpage.context.cookies())
        rpage.goto(f"{base}/console/member/audit")
        rpage.fill("#audit-archive", kept)
        rpage.click("#do-audit")
        rpage.wait_for_selector("#access-rows, #no-rows")
        findings["audit"] = browser.serious(
            rpage.url, rpage.context.cookies(), then=_query_audit(kept)
        )
        refused = rpage.goto(f"{base}/console/archives")  # staff pages are not a member's
        assert refused is not None
        assert refused.status == 403
        rcontext.close()
    assert findings == {name: [] for name in findings}

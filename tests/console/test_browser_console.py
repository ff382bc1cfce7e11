"""The archivist console in a real browser (Debian chromium via Playwright, one live node):
sign in with an API key, upload, search, open an archive, archive it, place and release a hold, share,
the dashboard's charts, Chinese and English; a QR label decoded back to its URL (jsQR, from
npm, in the page) that opens the public page with a matching commitment; axe-core finds no
serious or critical violation on any page; screenshots saved (test-artifacts/, gitignored)."""

from __future__ import annotations

import base64
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from anchoring.events import RecordClass, Sensitivity
from node.alerts import AlertNotice, Severity
from node.models import ArchiveTier, ContentRead
from node.principal import Role
from node.services.archives import NewArchive
from node.services.tags import Scan
from tests.api.conftest import issue_keys
from tests.console.live import ARTIFACTS, NODE_MODULES, Browser, live_server
from tests.fixtures.chain import Consortium
from tests.fixtures.node import MakeNode

JSQR = NODE_MODULES / "jsqr" / "dist" / "jsQR.js"


def test_console_flows_in_the_browser(
    make_node: MakeNode, browser: Browser, consortium: Consortium, tmp_path: Path
) -> None:
    node = make_node()
    keys = issue_keys(node)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    auth = {"Authorization": f"Bearer {keys['archivist']}"}
    with live_server(node) as base, httpx.Client(base_url=base, timeout=30) as http:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{base}/console")
        assert page.url.endswith("/console/login")
        assert page.locator("html").get_attribute("lang") == "zh-CN"
        page.fill("#api_key", "wrong")
        page.click("#sign-in")
        page.wait_for_selector("#login-error")
        page.fill("#api_key", keys["archivist"])
        page.click("#sign-in")
        page.wait_for_url(f"{base}/console/archives")
        page.screenshot(path=str(ARTIFACTS / "console-catalogue-zh.png"), full_page=True)

        page.goto(f"{base}/console/upload?lang=en")
        upload = tmp_path / "note.txt"
        upload.write_bytes(b"nursing note")
        page.set_input_files("#file", str(upload))
        page.fill("#title", "Nursing record 护理记录")
        page.select_option("#record_class", "NURSING")
        page.fill("#department", "nursing")
        page.fill("#patient_id", "MRN-77")
        page.click("#do-upload")
        page.wait_for_selector("#flash")
        archive_id = page.url.rsplit("/", 1)[-1]
        assert page.locator("#state").inner_text() == "CREATED"
        assert "MRN-77" not in page.content()  # kept as a pseudonym only
        page.goto(f"{base}/console/archives")
        page.fill("#q", "nursing")
        page.click("#search")
        page.wait_for_selector(f"#results a[href='/console/archives/{archive_id}']")
        assert "nursing" not in page.url  # search terms are never in the URL
        page.click(f"#results a[href='/console/archives/{archive_id}']")
        assert page.locator("#state").inner_text() == "CREATED"

        # amend while CREATED: a second version, listed on the detail page, AMEND logged
        second = tmp_path / "note-v2.txt"
        second.write_bytes(b"nursing note, corrected")
        page.set_input_files("#amend-file", str(second))
        page.check("#confirm-amend")
        page.click("#do-amend")
        page.wait_for_selector("#flash")
        assert page.url.endswith(f"/console/archives/{archive_id}")
        versions = page.locator("table").first.locator("tbody tr")
        assert versions.count() == 2
        assert "AMEND" in page.locator("#events tbody tr td:nth-child(2)").all_inner_texts()
        page.screenshot(path=str(ARTIFACTS / "console-detail-created-en.png"), full_page=True)
        created_page = f"{base}/console/archives/{archive_id}"  # with the amend form
        assert browser.serious(created_page, context.cookies()) == []

        # the content downloaded from the detail page (CSP enforced): ACCESS with the purpose,
        # the read and the archive's last access recorded as an API read records them
        kinds = "#events tbody tr td:nth-child(2)"
        accesses = page.locator(kinds).all_inner_texts().count("ACCESS")
        page.select_option("#content-purpose", "treatment")
        with page.expect_download() as download:
            page.click("#do-read")
        assert Path(download.value.path()).read_bytes() == b"nursing note, corrected"
        assert download.value.suggested_filename == "note-v2.txt"

        def recorded() -> list[tuple[str, int, bool]]:
            """The reads recorded, with whether the archive's last access is set."""
            with node.db.session() as session:
                tier = session.get(ArchiveTier, archive_id)
                last = tier is not None and tier.last_access_at is not None
                reads = session.execute(select(ContentRead.purpose, ContentRead.version)).all()
            return [(purpose, version, last) for purpose, version in reads]

        # recorded once the server has sent the last byte, just after the browser has it all
        deadline = time.monotonic() + 20
        while not recorded() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert recorded() == [("treatment", 2, True)]
        page.goto(created_page)
        assert page.locator(kinds).all_inner_texts().count("ACCESS") == accesses + 1

        page.check("#confirm-archive")
        page.click("#do-archive")
        page.wait_for_selector("#flash")
        assert page.locator("#state").inner_text() == "ARCHIVED"
        page.fill("#hold-reason", "litigation 2026-17")
        page.check("#confirm-hold")
        page.click("#do-hold")
        page.wait_for_selector("#do-release")
        assert page.locator("#hold").inner_text() == "yes"
        page.check("#confirm-release")
        page.click("#do-release")
        page.wait_for_selector("#do-hold")
        assert page.locator("#hold").inner_text() == "no"
        page.fill("#share-to", consortium.accounts.hospital_b.address)
        page.select_option("#share-purpose", "treatment")
        page.check("#confirm-share")
        page.click("#do-share")
        page.wait_for_selector("#flash")
        assert "share" in page.locator("#flash").inner_text()
        events = page.locator("#events tbody tr td:nth-child(2)").all_inner_texts()
        assert events[-4:] == ["ARCHIVE", "HOLD_PLACE", "HOLD_RELEASE", "SHARE_GRANT"]
        page.screenshot(path=str(ARTIFACTS / "console-detail-en.png"), full_page=True)
        cookies = context.cookies()
        assert any(c["name"] == "ac_session" and c["httpOnly"] and c["secure"] for c in cookies)
        for path in (
            "/console/archives",
            f"/console/archives/{archive_id}",
            "/console/dashboard",
            "/console/upload",
        ):
            assert browser.serious(f"{base}{path}", cookies) == [], path

        page.goto(f"{base}/console/dashboard")
        page.wait_for_selector("#charts[data-drawn='true']", timeout=20_000)
        page.screenshot(path=str(ARTIFACTS / "console-dashboard-en.png"), full_page=True)

        # the QR label, decoded in the page by jsQR, is the public page's URL with the prefix
        node.worker.run_until_anchored(timeout=30)
        bound = http.post(f"/api/v1/archives/{archive_id}/tags", json={"kind": "qr"}, headers=auth)
        assert bound.status_code == 201, bound.text
        png = http.get(
            f"/api/v1/archives/{archive_id}/label", params={"format": "png"}, headers=auth
        )
        qr_page = browser.new_page()
        qr_page.set_content("<canvas id='c'></canvas>")
        qr_page.add_script_tag(path=str(JSQR))
        decoded = qr_page.evaluate(
            """async (b64) => {
                const img = new Image();
                img.src = "data:image/png;base64," + b64;
                await img.decode();
                const canvas = document.getElementById("c");
                canvas.width = img.width; canvas.height = img.height;
                const ctx = canvas.getContext("2d");
                ctx.drawImage(img, 0, 0);
                const data = ctx.getImageData(0, 0, img.width, img.height);
                const code = jsQR(data.data, img.width, img.height);
                return code ? code.data : null;
            }""",
            base64.b64encode(png.content).decode(),
        )
        assert decoded == bound.json()["label"]
        assert decoded.startswith(f"{node.settings.base_url}/v/{archive_id}?c=")
        public = browser.new_page()
        public.goto(decoded.replace(node.settings.base_url, base) + "&lang=en")
        assert public.locator("#label-check").get_attribute("class") == "ok"


def _new_archive(node: Any, principal: Any, title: str, trigger: date | None = None) -> str:
    new = NewArchive(
        record_class=RecordClass.OUTPATIENT,
        sensitivity=Sensitivity.NORMAL,
        department="clinic",
        title=title,
        patient_id="MRN-OPS",
        source_system="HIS",
        media_type="text/plain",
        trigger_date=trigger,
    )
    created = node.archives.create(principal, new, [f"{title} content".encode()])
    node.archives.archive(principal, created.id)
    return str(created.id)


def _sign_in(browser: Browser, base: str, key: str) -> tuple[Any, Any]:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{base}/console/login?lang=en")
    page.fill("#api_key", key)
    page.click("#sign-in")
    page.wait_for_url(f"{base}/console/archives")
    return context, page


def test_console_operations_pages_in_the_browser(
    make_node: MakeNode, browser: Browser, consortium: Consortium
) -> None:
    """Alerts (acknowledge), retention due and disposition review (propose by the archivist,
    four eyes, approve by the records manager, a rejection without a date refused), transfers
    (offer and withdraw, the lists), an archive's tags (bind the QR label, last seen location,
    the printable label): each change made through the page and read back from the services."""
    node = make_node()
    keys = issue_keys(node)
    manager_key = node.keys.issue(Role.RECORDS_MANAGER, "manager-1").secret
    archivist = node.keys.authenticate(keys["archivist"])
    expired = (datetime.now(UTC) - timedelta(days=40 * 366)).date()
    due_id = _new_archive(node, archivist, "Old visit", expired)
    kept_id = _new_archive(node, archivist, "Recent visit")
    alert = node.alert_store.record(
        AlertNotice(kind="fixity_mismatch", subject=kept_id, severity=Severity.CRITICAL)
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with live_server(node) as base:
        context, page = _sign_in(browser, base, keys["archivist"])

        # 1. alerts: acknowledged through the page, then listed as acknowledged
        page.goto(f"{base}/console/alerts")
        assert page.locator("#open-total").inner_text() == "1"
        page.check(f"#confirm-ack-{alert.id}")
        page.click(f"#ack-{alert.id}")
        page.wait_for_selector("#no-open")
        assert f"ack #{alert.id}" in page.locator("#flash").inner_text()
        assert page.locator("#seen-alerts tbody tr").count() == 1
        assert node.alert_store.list(archivist)[1] == 0

        # 2. retention: into review, proposed by the archivist who may not decide
        page.goto(f"{base}/console/retention")
        assert page.locator(f"#pick-{due_id}").is_disabled()  # ARCHIVED: not yet in review
        page.check("#confirm-review")
        page.click("#do-review")
        page.wait_for_selector("#flash")
        assert node.archives.get(archivist, due_id).state == "DISPOSITION_REVIEW"
        page.check(f"#pick-{due_id}")
        page.fill("#propose-reason", "retention expired")
        page.check("#confirm-propose")
        page.click("#do-propose")
        page.wait_for_selector("section[id^='proposal-']")
        assert "propose" in page.locator("#flash").inner_text()
        assert page.locator(f"#decide-{due_id}").count() == 0  # the archivist cannot decide
        page.screenshot(path=str(ARTIFACTS / "console-retention-en.png"), full_page=True)
        proposal_id = page.locator("section[id^='proposal-']").get_attribute("id")[9:]

        manager, mpage = _sign_in(browser, base, manager_key)
        mpage.goto(f"{base}/console/retention")
        mpage.check(f"#reject-{due_id}")  # a rejection needs the date it keeps the archive to
        mpage.fill(f"#why-{due_id}", "still needed")
        mpage.check(f"#confirm-decide-{due_id}")
        mpage.click(f"#decide-{due_id}")
        mpage.wait_for_selector("#flash")
        assert "new_deadline_required" in mpage.locator("#flash").inner_text()
        item = node.retention.proposal(archivist, proposal_id).items[0]
        assert item.decision == "pending"
        mpage.check(f"#approve-{due_id}")
        mpage.fill(f"#why-{due_id}", "checked")
        mpage.check(f"#confirm-decide-{due_id}")
        mpage.click(f"#decide-{due_id}")
        mpage.wait_for_selector("#no-proposals")
        assert node.retention.proposal(archivist, proposal_id).items[0].decision == "approved"
        mpage.goto(f"{base}/console/retention?lang=zh")
        assert mpage.locator("h1").inner_text() == "保管期限与处置"
        refused = mpage.goto(f"{base}/console/transfers")  # the role may not transfer
        assert refused is not None
        assert refused.status == 403
        manager_cookies = manager.cookies()
        manager.close()

        # 3. transfers: offer to hospital B, listed as offered, then withdrawn
        page.goto(f"{base}/console/transfers")
        page.fill("#offer-archive", kept_id)
        page.fill("#offer-to", consortium.accounts.hospital_b.address)
        page.check("#confirm-offer")
        page.click("#do-offer")
        page.wait_for_selector(f"#cancel-{kept_id}")
        assert page.locator("#outgoing .state").all_inner_texts() == ["offered"]
        assert page.locator("#no-incoming").count() == 1
        page.screenshot(path=str(ARTIFACTS / "console-transfers-en.png"), full_page=True)
        page.check("#outgoing input[name=confirm]")
        page.click(f"#cancel-{kept_id}")
        page.wait_for_selector("#flash")
        assert page.locator("#outgoing .state").all_inner_texts() == ["cancelled"]
        assert node.archives.get(archivist, kept_id).state == "ARCHIVED"

        # 4. tags: bind the QR label, a scan shows where it was last seen, print the label
        page.goto(f"{base}/console/archives/{kept_id}")
        page.click("#tags-link")
        page.check("#confirm-qr")
        page.click("#bind-qr")
        page.wait_for_selector("#tags tbody tr")
        [tag] = node.tags.tags_of(archivist, kept_id)
        assert tag.kind == "qr"
        assert tag.label.startswith(f"{node.settings.base_url}/v/{kept_id}")
        node.tags.record_scans(
            archivist, tag.tag_hash, [Scan("reader-1", "ward-3:shelf-12", datetime.now(UTC))]
        )
        page.reload()
        assert page.locator("#tags .location").inner_text() == "ward-3:shelf-12"
        page.check("#confirm-qr")  # the same label twice: refused, nothing added
        page.click("#bind-qr")
        page.wait_for_selector("#flash")
        assert "tag_bound" in page.locator("#flash").inner_text()
        assert len(node.tags.tags_of(archivist, kept_id)) == 1
        page.click("#print-link")
        width = page.locator("#label").evaluate("i => i.decode().then(() => i.naturalWidth)")
        assert width > 0  # the SVG label was served to the signed-in page and drawn
        assert page.locator("#print").is_visible()
        page.screenshot(path=str(ARTIFACTS / "console-label-en.png"), full_page=True)

        cookies = context.cookies()
        for path in (
            "/console/alerts",
            "/console/retention",
            "/console/transfers",
            f"/console/archives/{kept_id}/tags",
            f"/console/archives/{kept_id}/label",
        ):
            assert browser.serious(f"{base}{path}", cookies) == [], path
        assert browser.serious(f"{base}/console/retention?lang=zh", manager_cookies) == []
        context.close()

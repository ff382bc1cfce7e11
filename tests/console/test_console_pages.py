"""The console pages added for the API's remaining capabilities, over HTTP (ASGI, real node):
executing an approved destruction and its certificate (page and the signed bytes), extending
retention (a shorter date refused, nothing changed), revoking a tag and entering a scan by hand,
the PDF label sheet, the 403 page, and member sign-in with EIP-4361 (the node's message signed
with the member's key, a session bound to the member token; wrong signature or replayed nonce
refused). Every new POST: signed out → sign-in page, no CSRF token or another origin → 403
``csrf_failed``, no confirmation → nothing done."""

from __future__ import annotations

import dataclasses
import hashlib
import html
import json
import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from anchoring.events import RecordClass, Sensitivity, TagKind
from archivechain import main
from node.principal import Principal, Role
from node.services.archives import NewArchive
from node.siwe import recover_signer, sign_message
from tests.api.conftest import Api


def sign_in(api: Api, key: str) -> dict[str, str]:
    response = api.client.post("/console/login", data={"api_key": key, "lang": "en"})
    assert response.status_code == 303, response.text
    match = re.match(r"ac_session=([^;]+)", response.headers["set-cookie"])
    assert match
    return {"ac_session": match.group(1)}


def csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match
    return match.group(1)


def new_archive(api: Api, principal: Principal, trigger: date | None = None) -> str:
    new = NewArchive(
        record_class=RecordClass.OUTPATIENT,
        sensitivity=Sensitivity.NORMAL,
        department="clinic",
        title="Visit",
        patient_id="MRN-PAGES",
        source_system="HIS",
        media_type="text/plain",
        trigger_date=trigger,
    )
    created = api.node.archives.create(principal, new, [b"visit notes"])
    api.node.archives.archive(principal, created.id)
    return str(created.id)


def approved_for_destruction(api: Api, archivist: Principal) -> tuple[str, str]:
    """An archive past its deadline, proposed by the archivist and approved by a manager."""
    node = api.node
    manager = node.keys.authenticate(node.keys.issue(Role.RECORDS_MANAGER, "manager-p").secret)
    archive_id = new_archive(api, archivist, (datetime.now(UTC) - timedelta(days=40 * 366)).date())
    node.retention.start_dispositions(archivist)
    proposal = node.retention.propose(archivist, [archive_id], "retention expired")
    node.retention.decide(manager, proposal.id, archive_id, approve=True, reason="checked")
    return proposal.id, archive_id


def test_destruction_certificate_extension_and_tags_from_the_console(api: Api) -> None:
    node = api.node
    archivist = node.keys.authenticate(api.keys["archivist"])
    proposal_id, doomed = approved_for_destruction(api, archivist)
    kept = new_archive(api, archivist)
    cookies = sign_in(api, api.keys["archivist"])
    page = api.client.get("/console/retention", cookies=cookies)
    assert f'id="destroy-{doomed}"' in page.text
    token = csrf(page.text)

    # destruction: unconfirmed does nothing; confirmed goes to the certificate page
    form = {"csrf": token, "proposal_id": proposal_id, "archive_id": doomed}
    assert (
        api.client.post("/console/retention/destroy", data=form, cookies=cookies).status_code == 303
    )
    assert node.archives.get(archivist, kept).state == "ARCHIVED"
    assert node.retention.proposal(archivist, proposal_id).items[0].decision == "approved"
    done = api.client.post(
        "/console/retention/destroy", data={**form, "confirm": "yes"}, cookies=cookies
    )
    assert done.headers["location"] == f"/console/archives/{doomed}/certificate"
    cert = node.retention.certificate(archivist, doomed)
    shown = api.client.get(done.headers["location"], cookies=cookies)
    assert shown.status_code == 200
    assert cert.certificate_hash in shown.text
    assert "MRN-PAGES" not in shown.text
    assert "Visit" not in shown.text.split("<main>")[1]
    download = api.client.get(f"/console/archives/{doomed}/certificate.json", cookies=cookies)
    assert download.content == cert.document
    assert hashlib.sha256(download.content).hexdigest() == cert.certificate_hash
    assert "attachment" in download.headers["content-disposition"]
    again = api.client.post(
        "/console/retention/destroy", data={**form, "confirm": "yes"}, cookies=cookies
    )
    assert again.headers["location"] == "/console/retention"  # refused, shown in the flash
    assert "Refused" in api.client.get("/console/retention", cookies=cookies).text
    missing = api.client.get(f"/console/archives/{kept}/certificate", cookies=cookies)
    assert missing.status_code == 404
    assert "certificate_not_found" in missing.text

    # retention: a later date extends, an earlier one is refused and changes nothing
    path = f"/console/archives/{kept}/retention"
    before = node.archives.get(archivist, kept).retention_deadline
    assert before is not None
    later = (before + timedelta(days=400)).date().isoformat()
    earlier = (before - timedelta(days=400)).date().isoformat()
    short = {"csrf": token, "new_deadline": earlier, "reason": "typo", "confirm": "yes"}
    api.client.post(path, data=short, cookies=cookies)
    assert "retention_shortened" in api.client.get(path, cookies=cookies).text
    assert node.archives.get(archivist, kept).retention_deadline == before
    no_reason = {"csrf": token, "new_deadline": later, "confirm": "yes"}
    api.client.post(path, data=no_reason, cookies=cookies)
    assert "reason_required" in api.client.get(path, cookies=cookies).text
    longer = {**no_reason, "reason": "litigation expected"}
    api.client.post(path, data=longer, cookies=cookies)
    after = node.archives.get(archivist, kept).retention_deadline
    assert after is not None
    assert after.date().isoformat() == later

    # tags: a scan entered by hand moves the last-seen location; a revoked tag refuses scans
    label = f"{node.settings.base_url}/v/{kept}"
    tag = node.tags.bind(archivist, kept, TagKind.QR, label.encode(), label)
    tags = f"/console/archives/{kept}/tags"
    scan = {"csrf": token, "reader": "desk-1", "location": "archive-room:B4", "confirm": "yes"}
    api.client.post(f"{tags}/{tag.tag_hash}/scans", data=scan, cookies=cookies)
    seen = node.tags.get(archivist, tag.tag_hash)
    assert (seen.scan_count, seen.last_location, seen.last_reader) == (
        1,
        "archive-room:B4",
        "desk-1",
    )
    bad = {**scan, "location": "bad location with spaces"}
    api.client.post(f"{tags}/{tag.tag_hash}/scans", data=bad, cookies=cookies)
    assert "invalid_scan" in api.client.get(tags, cookies=cookies).text
    assert node.tags.get(archivist, tag.tag_hash).scan_count == 1
    revoke = f"{tags}/{tag.tag_hash}/revoke"
    api.client.post(revoke, data={"csrf": token}, cookies=cookies)  # unconfirmed
    assert not node.tags.get(archivist, tag.tag_hash).revoked
    api.client.post(revoke, data={"csrf": token, "confirm": "yes"}, cookies=cookies)
    assert node.tags.get(archivist, tag.tag_hash).revoked
    api.client.post(f"{tags}/{tag.tag_hash}/scans", data=scan, cookies=cookies)
    assert "Refused: tag_revoked" in api.client.get(tags, cookies=cookies).text
    assert node.tags.get(archivist, tag.tag_hash).scan_count == 1

    # the PDF label sheet: ids posted, checked with the archive-id rule
    sheet = api.client.post(
        "/console/labels.pdf",
        data={"csrf": token, "ids": f"{kept}\n{kept.lower()}"},
        cookies=cookies,
    )
    assert sheet.status_code == 200
    assert sheet.headers["content-type"] == "application/pdf"
    assert sheet.content.startswith(b"%PDF")
    for ids in ("", "NOT-AN-ID", ",".join([kept] * 301)):
        refused = api.client.post(
            "/console/labels.pdf", data={"csrf": token, "ids": ids}, cookies=cookies
        )
        assert refused.headers["location"] == "/console/labels", ids
    assert "invalid_ids" in api.client.get("/console/labels", cookies=cookies).text
    refused = api.client.post(  # a NUL is refused with the form itself (api.web.session)
        "/console/labels.pdf", data={"csrf": token, "ids": f"{kept}\x00"}, cookies=cookies
    )
    assert refused.status_code == 400
    assert "invalid_encoding" in refused.text


def test_new_forms_refuse_without_token_origin_or_confirmation(api: Api) -> None:
    node = api.node
    archivist = node.keys.authenticate(api.keys["archivist"])
    proposal_id, doomed = approved_for_destruction(api, archivist)
    kept = new_archive(api, archivist)
    label = f"{node.settings.base_url}/v/{kept}"
    tag = node.tags.bind(archivist, kept, TagKind.QR, label.encode(), label).tag_hash
    deadline = node.archives.get(archivist, kept).retention_deadline
    assert deadline is not None
    later = (deadline + timedelta(days=400)).date().isoformat()
    forms = {
        "/console/retention/destroy": {"proposal_id": proposal_id, "archive_id": doomed},
        f"/console/archives/{kept}/retention": {"new_deadline": later, "reason": "r"},
        f"/console/archives/{kept}/tags/{tag}/revoke": {},
        f"/console/archives/{kept}/tags/{tag}/scans": {"location": "shelf-1"},
    }
    queries = {"/console/labels.pdf": {"ids": kept}, "/console/member/audit": {"actor": "x"}}
    for page in ("/console/labels", "/console/member", "/console/member/holds"):
        assert api.client.get(page).status_code == 303
    cookies = sign_in(api, api.keys["archivist"])
    token = csrf(api.client.get("/console/labels", cookies=cookies).text)
    before = api.footprint()
    for path, fields in {**forms, **queries}.items():
        assert api.client.post(path, data=fields).status_code == 303, path  # signed out
        no_token = api.client.post(path, data={**fields, "confirm": "yes"}, cookies=cookies)
        assert (no_token.status_code, no_token.json()["code"]) == (403, "csrf_failed"), path
        cross = api.client.post(
            path,
            data={**fields, "csrf": token, "confirm": "yes"},
            cookies=cookies,
            headers={"Origin": "https://evil.example"},
        )
        assert (cross.status_code, cross.json()["code"]) == (403, "csrf_failed"), path
        huge = api.client.post(
            path,
            content=b"csrf=" + b"x" * (70 * 1024),
            cookies=cookies,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert huge.status_code == 413, path
    for path, fields in forms.items():
        unconfirmed = api.client.post(path, data={**fields, "csrf": token}, cookies=cookies)
        assert unconfirmed.status_code == 303, path
    assert api.footprint() == before
    assert node.archives.get(archivist, kept).retention_deadline == deadline
    assert node.retention.proposal(archivist, proposal_id).items[0].decision == "approved"
    seen = node.tags.get(archivist, tag)
    assert (seen.revoked, seen.scan_count) == (False, 0)
    bad_tag = api.client.post(
        f"/console/archives/{kept}/tags/{'G' * 64}/revoke",
        data={"csrf": token, "confirm": "yes"},
        cookies=cookies,
    )
    assert bad_tag.status_code == 422  # the path's tag pattern, before anything runs

    # the 403 page: its own heading, not "not found"; staff keys do not reach member pages
    manager = sign_in(api, node.keys.issue(Role.RECORDS_MANAGER, "manager-q").secret)
    refused = api.client.get("/console/transfers", cookies=manager)
    assert refused.status_code == 403
    assert '<h1 id="error-heading">Not allowed</h1>' in refused.text
    assert "Not found" not in refused.text
    zh = api.client.get("/console/transfers?lang=zh", cookies=manager)
    assert '<h1 id="error-heading">无权访问</h1>' in zh.text
    for page in ("/console/member/holds", "/console/member/audit"):
        member_only = api.client.get(page, cookies=cookies)
        assert member_only.status_code == 403, page
        assert "member_required" in member_only.text
    missing = api.client.get("/console/archives/7ZZZZZZZZZZZZZZZZZZZZZZZZZ", cookies=cookies)
    assert missing.status_code == 404
    assert '<h1 id="error-heading">Not found</h1>' in missing.text


def created_archive(api: Api, principal: Principal) -> str:
    """An archive still CREATED (amendable): version 1 of a text record."""
    new = NewArchive(
        record_class=RecordClass.OUTPATIENT,
        sensitivity=Sensitivity.NORMAL,
        department="clinic",
        title="Draft",
        patient_id="MRN-AMEND",
        source_system="HIS",
        media_type="text/plain",
    )
    return str(api.node.archives.create(principal, new, [b"first draft"]).id)


def test_amend_from_the_detail_page(api: Api) -> None:
    """A new version of a CREATED archive from its detail page: the same service call as the
    API's amend (version 2 stored, AMEND logged), shown on the detail page afterwards."""
    node = api.node
    archivist = node.keys.authenticate(api.keys["archivist"])
    draft = created_archive(api, archivist)
    cookies = sign_in(api, api.keys["archivist"])
    page = api.client.get(f"/console/archives/{draft}", cookies=cookies)
    assert f'action="/console/archives/{draft}/amend"' in page.text
    assert 'enctype="multipart/form-data"' in page.text
    assert 'id="confirm-amend" name="confirm" value="yes" required' in page.text
    before = api.footprint()
    done = api.client.post(
        f"/console/archives/{draft}/amend",
        data={"csrf": csrf(page.text), "confirm": "yes"},
        files={"file": ("second.txt", b"second draft, corrected", "text/plain")},
        cookies=cookies,
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == f"/console/archives/{draft}"
    view = node.archives.get(archivist, draft)
    assert [v.version for v in view.versions] == [1, 2]
    assert view.current_version == 2
    assert view.versions[1].size == len(b"second draft, corrected")
    events = [e.event_type for e in node.archives.events(archivist, draft)]
    assert events[-1] == "AMEND"
    assert events.count("AMEND") == 1
    after = api.footprint()
    assert (after.archives, after.versions) == (before.archives, before.versions + 1)
    shown = api.client.get(done.headers["location"], cookies=cookies).text
    assert "New version uploaded." in shown
    versions = shown.split('id="events"')[0].split("<tbody>")[1].split("</tbody>")[0]
    assert versions.count("<tr>") == 2
    assert "<td>2</td><td>text/plain</td><td>23</td>" in versions
    assert "<td>AMEND</td>" in shown.split('id="events"')[1]
    zh = api.client.get(f"/console/archives/{draft}?lang=zh", cookies=cookies).text
    assert "上传新版本" in zh

    # archived: the form is gone and a post is the service's refusal (409), nothing changed
    node.archives.archive(archivist, draft)
    archived = api.client.get(f"/console/archives/{draft}?lang=en", cookies=cookies).text
    assert f'action="/console/archives/{draft}/amend"' not in archived
    before = api.footprint()
    late = api.client.post(
        f"/console/archives/{draft}/amend",
        data={"csrf": csrf(archived), "confirm": "yes"},
        files={"file": ("third.txt", b"too late", "text/plain")},
        cookies=cookies,
    )
    assert late.status_code == 409
    assert '<h1 id="error-heading">Could not be done</h1>' in late.text
    assert "illegal_transition" in late.text
    assert api.footprint() == before
    assert len(node.archives.get(archivist, draft).versions) == 2


def test_amend_refusals_change_nothing(api: Api) -> None:
    """Signed out, without the CSRF token, from another origin, unconfirmed, without a file,
    too large (the node's upload limit, and past the body limit), a type the node refuses:
    the archive keeps its one version, no blob, row or log entry is added."""
    node = api.node
    archivist = node.keys.authenticate(api.keys["archivist"])
    draft = created_archive(api, archivist)
    path = f"/console/archives/{draft}/amend"
    file = {"file": ("v2.txt", b"second draft", "text/plain")}
    before = api.footprint()

    signed_out = api.client.post(path, data={"confirm": "yes"}, files=file)
    assert signed_out.status_code == 303
    assert signed_out.headers["location"] == "/console/login"

    cookies = sign_in(api, api.keys["archivist"])
    token = csrf(api.client.get(f"/console/archives/{draft}", cookies=cookies).text)
    for data, headers in (
        ({"confirm": "yes"}, {}),
        ({"csrf": "not-the-token", "confirm": "yes"}, {}),
        ({"csrf": token, "confirm": "yes"}, {"Origin": "https://evil.example"}),
    ):
        refused = api.client.post(path, data=data, files=file, cookies=cookies, headers=headers)
        assert (refused.status_code, refused.json()["code"]) == (403, "csrf_failed"), data

    unconfirmed = api.client.post(path, data={"csrf": token}, files=file, cookies=cookies)
    assert unconfirmed.headers["location"] == f"/console/archives/{draft}"
    assert "Tick the confirmation first." in api.client.get(path[:-6], cookies=cookies).text
    for files in ({"file": ("", b"", "application/octet-stream")}, None):
        no_file = api.client.post(
            path, data={"csrf": token, "confirm": "yes"}, files=files, cookies=cookies
        )
        assert no_file.headers["location"] == f"/console/archives/{draft}"
        assert "Refused: file_required" in api.client.get(path[:-6], cookies=cookies).text

    limit = node.settings.max_upload_bytes
    big = {"file": ("big.txt", b"x" * (limit + 1), "text/plain")}
    too_large = api.client.post(
        path, data={"csrf": token, "confirm": "yes"}, files=big, cookies=cookies
    )
    # the node's limit, checked while streaming: the console's page (the body limit of the path
    # is the upload limit, ``api.main.is_upload``, not the 64 KiB of the other forms)
    assert too_large.status_code == 413
    assert too_large.headers["content-type"].startswith("text/html")
    assert '<h1 id="error-heading">Could not be done</h1>' in too_large.text
    assert "payload_too_large" in too_large.text
    huge = {"file": ("huge.txt", b"x" * (limit + 512 * 1024), "text/plain")}
    past_body = api.client.post(
        path, data={"csrf": token, "confirm": "yes"}, files=huge, cookies=cookies
    )
    assert (past_body.status_code, past_body.json()["code"]) == (413, "payload_too_large")
    exe = {"file": ("x.exe", b"MZ\x90\x00", "application/x-msdownload")}
    wrong_type = api.client.post(
        path, data={"csrf": token, "confirm": "yes"}, files=exe, cookies=cookies
    )
    assert wrong_type.status_code == 415

    # the detail pages read between the posts log ACCESS (operations purpose), nothing else
    after = api.footprint()
    assert after == dataclasses.replace(before, log_size=after.log_size)
    logged = [e.event_type for e in node.archives.events(archivist, draft)]
    assert logged[0] == "CREATE"
    assert set(logged[1:]) == {"ACCESS"}
    assert after.log_size - before.log_size == len(logged) - 1
    view = node.archives.get(archivist, draft)
    assert (len(view.versions), view.current_version, view.state) == (1, 1, "CREATED")


def _challenge(api: Api, address: str, role: str = "regulator") -> str:
    page = api.client.post(
        "/console/member/challenge", data={"address": address, "role": role, "lang": "en"}
    )
    assert page.status_code == 200, page.text
    match = re.search(r'<textarea id="siwe-message"[^>]*>([^<]+)</textarea>', page.text)
    assert match
    return html.unescape(match.group(1))


def test_member_sign_in_with_eip4361(
    api: Api, regulator: LocalAccount, insurer: LocalAccount
) -> None:
    node = api.node
    archivist = node.keys.authenticate(api.keys["archivist"])
    held = new_archive(api, archivist)
    node.archives.place_hold(archivist, held, "court order")
    assert api.client.get("/console/member/login").status_code == 200
    message = _challenge(api, regulator.address.lower())
    assert regulator.address in message  # EIP-55, as the message must carry it
    assert "urn:archivechain:role:regulator" in message
    assert f"URI: {node.settings.base_url}" in message

    # a signature by another key, a forged message: refused, no session
    wrong = sign_message(message, bytes(insurer.key))
    refused = api.client.post(
        "/console/member/verify", data={"message": message, "signature": wrong}
    )
    assert refused.status_code == 401
    assert "invalid_signature" in refused.text
    assert "set-cookie" not in refused.headers
    cross = api.client.post(
        "/console/member/verify",
        data={"message": message, "signature": wrong},
        headers={"Origin": "https://evil.example"},
    )
    assert (cross.status_code, cross.json()["code"]) == (403, "csrf_failed")
    for address in ("0x1234", "not an address"):
        bad = api.client.post(
            "/console/member/challenge", data={"address": address, "role": "regulator"}
        )
        assert bad.status_code == 400
        assert "invalid_address" in bad.text
    bad_role = api.client.post(
        "/console/member/challenge", data={"address": regulator.address, "role": "admin"}
    )
    assert bad_role.status_code == 400
    assert "role_required" in bad_role.text

    # the right key: a session bound to a member token, CRLF line ends (a textarea) accepted
    signature = sign_message(message, bytes(regulator.key))
    crlf = message.replace("\n", "\r\n")
    ok = api.client.post("/console/member/verify", data={"message": crlf, "signature": signature})
    assert ok.status_code == 303, ok.text
    assert ok.headers["location"] == "/console/member/holds"
    assert "HttpOnly" in ok.headers["set-cookie"]
    match = re.match(r"ac_session=([^;]+)", ok.headers["set-cookie"])
    assert match
    cookies = {"ac_session": match.group(1)}
    holds = api.client.get("/console/member/holds", cookies=cookies)
    assert holds.status_code == 200
    assert held in holds.text
    assert "Visit" not in holds.text
    assert "MRN-PAGES" not in holds.text
    assert 'href="/console/upload"' not in holds.text  # staff pages not offered
    replay = api.client.post(
        "/console/member/verify", data={"message": message, "signature": signature}
    )
    assert replay.status_code == 401
    assert "nonce_used" in replay.text
    token = csrf(holds.text)
    audit = api.client.post(
        "/console/member/audit", data={"csrf": token, "archive_id": held}, cookies=cookies
    )
    assert audit.status_code == 200
    assert 'id="access-rows"' in audit.text or 'id="no-rows"' in audit.text
    for staff_page in ("/console/upload", "/console/archives", "/console/retention"):
        staff_only = api.client.get(staff_page, cookies=cookies)
        assert staff_only.status_code == 403, staff_page
        assert "staff_only" in staff_only.text

    # signing out revokes the member token itself
    [row] = node.signin.tokens(node.keys.authenticate(api.keys["admin"]), regulator.address)
    out = api.client.post("/console/logout", data={"csrf": token}, cookies=cookies)
    assert out.status_code == 303
    assert api.client.get("/console/member/holds", cookies=cookies).status_code == 303
    [after] = node.signin.tokens(node.keys.authenticate(api.keys["admin"]), regulator.address)
    assert after.id == row.id
    assert after.revoked_at is not None


def test_sign_message_cli_signs_the_console_message(
    api: Api, regulator: LocalAccount, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``archivechain sign-message``: the signature the console's member sign-in accepts; a text
    that is not an EIP-4361 message is refused (exit 2, one line), nothing printed to stdout."""
    keystore = tmp_path / "regulator.json"
    keystore.write_text(json.dumps(Account.encrypt(regulator.key, "pass", iterations=2)))
    passphrase = tmp_path / "pass"
    passphrase.write_text("pass\n")
    common = ["sign-message", "--keystore", str(keystore), "--passphrase-file", str(passphrase)]
    message = _challenge(api, regulator.address)
    text = tmp_path / "message.txt"
    text.write_text(message.replace("\n", "\r\n") + "\r\n")  # as copied from a browser
    capsys.readouterr()
    assert main([*common, "--message-file", str(text)]) == 0
    signature = capsys.readouterr().out.strip()
    assert recover_signer(message, signature) == regulator.address
    ok = api.client.post(
        "/console/member/verify", data={"message": message, "signature": signature}
    )
    assert ok.status_code == 303
    text.write_text("hello")
    assert main([*common, "--message-file", str(text)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "not an EIP-4361 message" in captured.err
    text.write_bytes(b"localhost wants you to sign in \xff\xfe\n")  # not UTF-8
    assert main([*common, "--message-file", str(text)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"error: {text} is not UTF-8 text (an EIP-4361 message is)\n"


def test_api_label_sheet_ids_follow_the_archive_id_rule(api: Api) -> None:
    """``GET /api/v1/labels.pdf?ids=`` checks each id with the project's archive-id pattern
    (``ARCHIVE_ID_PATTERN``, as ``ArchiveIdPath``): 422 for anything else, before any read."""
    archivist = api.node.keys.authenticate(api.keys["archivist"])
    archive_id = new_archive(api, archivist)
    auth = api.auth("archivist")
    ok = api.client.get("/api/v1/labels.pdf", params={"ids": archive_id}, headers=auth)
    assert ok.status_code == 200
    assert ok.content.startswith(b"%PDF")
    for ids in (
        archive_id.lower(),  # not the canonical form the API returns
        f"{archive_id},",
        f"{archive_id}\x00",
        "8" + archive_id[1:],  # beyond the ULID range
        archive_id[:-1] + "U",  # not Crockford base32
    ):
        refused = api.client.get("/api/v1/labels.pdf", params={"ids": ids}, headers=auth)
        assert refused.status_code == 422, ids
        assert refused.json()["code"] == "validation_error"

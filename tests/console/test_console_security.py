"""The console's security choices over HTTP (ASGI): sign-in with an API key gives a Secure,
HttpOnly, SameSite=Strict session cookie; a bad key is refused; a form without the session's CSRF
token or from another origin is refused and changes nothing; search terms travel in POST bodies;
a revoked key ends its session; strict CSP on every page."""

from __future__ import annotations

import logging
import re

import pytest

from node.alerts import AlertNotice, Severity
from tests.api.conftest import Api


def _sign_in(api: Api, who: str = "archivist") -> str:
    response = api.client.post("/console/login", data={"api_key": api.keys[who], "lang": "en"})
    assert response.status_code == 303, response.text
    cookie = response.headers["set-cookie"]
    for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/console", "Max-Age=28800"):
        assert flag.lower() in cookie.lower(), (flag, cookie)
    match = re.match(r"ac_session=([^;]+)", cookie)
    assert match
    return match.group(1)


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match
    return match.group(1)


def test_sign_in_session_csrf_and_sign_out(api: Api) -> None:
    assert api.client.get("/console/archives").status_code == 303  # to the sign-in page
    login = api.client.get("/console/login")
    assert login.status_code == 200
    assert 'lang="zh-CN"' in login.text
    assert "script-src 'self'" in login.headers["content-security-policy"]
    bad = api.client.post("/console/login", data={"api_key": "not-a-key"})
    assert bad.status_code == 401
    assert "set-cookie" not in bad.headers

    archive = api.create()
    sid = _sign_in(api)
    cookies = {"ac_session": sid}
    page = api.client.get("/console/archives", cookies=cookies)
    assert page.status_code == 200
    assert archive["id"] in page.text
    token = _csrf(page.text)

    found = api.client.post(
        "/console/search",
        data={"csrf": token, "q": "discharge"},
        cookies=cookies,
        headers={"HX-Request": "true"},
    )
    assert found.status_code == 200
    assert archive["id"] in found.text
    assert found.text.lstrip().startswith('<section id="results"')  # htmx partial

    detail = f"/console/archives/{archive['id']}"
    action = f"{detail}/action"
    before = api.footprint()
    no_token = api.client.post(action, data={"action": "hold", "confirm": "yes"}, cookies=cookies)
    assert no_token.status_code == 403
    assert no_token.json()["code"] == "csrf_failed"
    cross = api.client.post(
        action,
        data={"csrf": token, "action": "hold", "confirm": "yes"},
        cookies=cookies,
        headers={"Origin": "https://evil.example"},
    )
    assert cross.status_code == 403
    unconfirmed = api.client.post(action, data={"csrf": token, "action": "hold"}, cookies=cookies)
    assert unconfirmed.status_code == 303
    assert api.footprint() == before  # nothing happened
    held = api.client.post(
        action,
        data={"csrf": token, "action": "hold", "reason": "court order 7", "confirm": "yes"},
        cookies=cookies,
    )
    assert held.status_code == 303
    shown = api.client.get(detail, cookies=cookies).text
    assert "HOLD_PLACE" in shown
    assert 'id="hold">yes' in shown

    admin = api.node.keys.authenticate(api.keys["admin"])
    api.node.keys.revoke(admin, _key_id(api, "archivist"))
    assert api.client.get("/console/archives", cookies=cookies).status_code == 303


def _key_id(api: Api, who: str) -> int:
    return api.node.keys.authenticate(api.keys[who]).key_id


def test_sign_out_ends_the_session(api: Api) -> None:
    sid = _sign_in(api, "auditor")
    cookies = {"ac_session": sid}
    page = api.client.get("/console/dashboard", cookies=cookies)
    assert page.status_code == 200
    data = api.client.get("/console/dashboard.json", cookies=cookies)
    assert data.status_code == 200
    assert "retrieval" in data.json()
    out = api.client.post("/console/logout", data={"csrf": _csrf(page.text)}, cookies=cookies)
    assert out.status_code == 303
    assert api.client.get("/console/dashboard", cookies=cookies).status_code == 303
    assert api.client.get("/console/dashboard.json", cookies=cookies).status_code == 401


def test_hostile_and_refused_console_bodies_change_nothing(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    huge = api.client.post(
        "/console/login",
        content=b"api_key=" + b"x" * (70 * 1024),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert huge.status_code == 413
    assert "code" in huge.json()
    bad_utf8 = api.client.post(
        "/console/login",
        content=b"api_key=\xff\xfe",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert bad_utf8.status_code == 400
    assert bad_utf8.json()["code"] == "invalid_encoding"
    deep = api.client.post(
        "/console/login",
        content=b"[" * 100,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert deep.status_code == 400
    assert deep.json()["code"] == "json_too_deep"

    before = api.footprint()
    anonymous = api.client.post("/console/upload", files={"file": ("a.txt", b"x", "text/plain")})
    assert anonymous.status_code == 303  # to sign-in, body unread
    sid = _sign_in(api)
    cookies = {"ac_session": sid}
    token = _csrf(api.client.get("/console/upload", cookies=cookies).text)
    fields = {
        "csrf": token,
        "title": "Secret title",
        "record_class": "NOPE",
        "department": "cardiology",
        "patient_id": "MRN-4242",
    }
    refused = api.client.post(
        "/console/upload",
        data=fields,
        cookies=cookies,
        files={"file": ("a.txt", b"text", "text/plain")},
    )
    assert refused.status_code == 422
    assert "record_class" in refused.text
    no_token = api.client.post(
        "/console/upload",
        data={**fields, "csrf": "x"},
        cookies=cookies,
        files={"file": ("a.txt", b"text", "text/plain")},
    )
    assert no_token.status_code == 403
    assert api.footprint() == before
    ok = api.client.post(
        "/console/upload",
        data={**fields, "record_class": "INPATIENT"},
        cookies=cookies,
        files={"file": ("a.txt", b"text", "text/plain")},
    )
    assert ok.status_code == 303
    assert ok.headers["location"].startswith("/console/archives/")
    assert api.footprint().archives == before.archives + 1
    api.client.post(
        "/console/search", data={"csrf": token, "q": "MRN-4242 Secret"}, cookies=cookies
    )
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "MRN-4242" not in logged
    assert "Secret title" not in logged


def test_operations_forms_refuse_without_token_origin_or_confirmation(api: Api) -> None:
    """Every state-changing form of the alerts, retention, transfer and tag pages: without the
    CSRF token or from another origin 403 ``csrf_failed``; without the confirmation a redirect
    with nothing done. Signed out, every page goes to the sign-in page."""
    archive_id = api.create()["id"]
    alert = api.node.alert_store.record(
        AlertNotice(kind="probe", subject="s", severity=Severity.INFO)
    )
    forms = {
        f"/console/alerts/{alert.id}/ack": {},
        "/console/retention/review": {},
        "/console/retention/propose": {"archive_id": archive_id, "reason": "r"},
        "/console/retention/decide": {"proposal_id": "x", "archive_id": archive_id},
        "/console/transfers": {"action": "cancel", "archive_id": archive_id},
        f"/console/archives/{archive_id}/tags": {"kind": "qr"},
    }
    for page in ("/console/alerts", "/console/retention", "/console/transfers"):
        assert api.client.get(page).status_code == 303
    cookies = {"ac_session": _sign_in(api)}
    token = _csrf(api.client.get("/console/alerts", cookies=cookies).text)
    before = api.footprint()
    for path, fields in forms.items():
        assert api.client.post(path, data=fields).status_code == 303, path  # signed out
        no_token = api.client.post(path, data={**fields, "confirm": "yes"}, cookies=cookies)
        assert (no_token.status_code, no_token.json()["code"]) == (403, "csrf_failed"), path
        cross = api.client.post(
            path,
            data={**fields, "csrf": token, "confirm": "yes"},
            cookies=cookies,
            headers={"Origin": "https://evil.example"},
        )
        assert cross.status_code == 403, path
        unconfirmed = api.client.post(path, data={**fields, "csrf": token}, cookies=cookies)
        assert unconfirmed.status_code == 303, path
        huge = api.client.post(
            path,
            content=b"csrf=" + b"x" * (70 * 1024),
            cookies=cookies,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert huge.status_code == 413, path
        bad = api.client.post(
            path,
            content=b"csrf=\xff\xfe",
            cookies=cookies,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert (bad.status_code, bad.json()["code"]) == (400, "invalid_encoding"), path
    assert api.footprint() == before
    assert api.node.alert_store.list(api.node.keys.authenticate(api.keys["admin"]))[1] == 1
    assert (
        api.node.tags.tags_of(api.node.keys.authenticate(api.keys["archivist"]), archive_id) == []
    )
    auditor = {"ac_session": _sign_in(api, "auditor")}  # reads alerts, may not acknowledge
    page = api.client.get("/console/alerts", cookies=auditor)
    assert page.status_code == 200
    assert f'id="ack-{alert.id}"' not in page.text
    refused = api.client.post(
        f"/console/alerts/{alert.id}/ack",
        data={"csrf": _csrf(page.text), "confirm": "yes"},
        cookies=auditor,
    )
    assert refused.status_code == 303
    assert "Refused: forbidden" in api.client.get("/console/alerts", cookies=auditor).text
    assert api.node.alert_store.list(api.node.keys.authenticate(api.keys["admin"]))[1] == 1

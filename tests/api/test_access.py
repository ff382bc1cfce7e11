"""Who may do what: 401 for missing, invalid and revoked keys (with a Bearer challenge), 403 for a
role that never may, 404 for an archive outside a clinician's department (also absent from search),
auditors read metadata, events and proofs but never content, admins manage keys and never touch
archives. Both databases."""

from __future__ import annotations

import pytest

from node.principal import Role
from tests.api.conftest import PDF, Api

ARCHIVE_ROUTES = [
    ("GET", "/api/v1/archives/{id}", {}),
    ("GET", "/api/v1/archives/{id}/content", {"params": {"purpose": "treatment"}}),
    ("GET", "/api/v1/archives/{id}/events", {}),
    ("GET", "/api/v1/archives/{id}/proof", {}),
    ("POST", "/api/v1/archives/{id}/archive", {}),
    ("POST", "/api/v1/archives/{id}/hold", {"json": {"reason": "audit"}}),
    ("DELETE", "/api/v1/archives/{id}/hold", {"params": {"reason": "audit"}}),
    ("POST", "/api/v1/archives/{id}/amend", {"files": {"file": ("a.txt", b"x", "text/plain")}}),
]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/archives"),
        ("POST", "/api/v1/archives"),
        ("GET", "/api/v1/archives/01J0Z8Q6J8ZK3W6Y9V5T3N2M1A"),
        ("POST", "/api/v1/verify"),
        ("GET", "/api/v1/checkpoints"),
        ("GET", "/api/v1/keys"),
    ],
)
def test_missing_malformed_unknown_and_revoked_keys_are_401(
    api: Api, method: str, path: str
) -> None:
    admin = api.node.keys.authenticate(api.keys["admin"])
    revoked = api.node.keys.issue_as(admin, Role.ARCHIVIST, "leaver")
    api.node.keys.revoke(admin, revoked.key.id)
    attempts = {
        "missing": {},
        "wrong scheme": {"Authorization": f"Basic {api.keys['archivist']}"},
        "empty bearer": {"Authorization": "Bearer "},
        "unknown key": {"Authorization": "Bearer ack_not-a-real-key"},
        "revoked key": {"Authorization": f"Bearer {revoked.secret}"},
    }
    for name, headers in attempts.items():
        response = api.client.request(method, path, headers=headers)
        assert response.status_code == 401, (name, response.text)
        assert response.headers["www-authenticate"] == "Bearer", name
        assert response.json()["code"] in {"missing_api_key", "invalid_api_key"}, name


def test_admin_cannot_touch_archives(api: Api) -> None:
    archive_id = api.create()["id"]
    before = api.footprint()
    for method, template, kwargs in ARCHIVE_ROUTES:
        path = template.format(id=archive_id)
        response = api.client.request(method, path, headers=api.auth("admin"), **kwargs)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["code"] == "forbidden"
    search = api.client.get("/api/v1/archives", headers=api.auth("admin"))
    assert search.status_code == 403
    upload = api.upload("admin")
    assert upload.status_code == 403
    assert api.footprint() == before


def test_auditor_reads_metadata_events_and_proofs_but_never_content(api: Api) -> None:
    archive_id = api.create()["id"]
    api.node.worker.run_until_anchored(timeout=30)
    auditor = api.auth("auditor")
    assert api.client.get(f"/api/v1/archives/{archive_id}", headers=auditor).status_code == 200
    assert (
        api.client.get(f"/api/v1/archives/{archive_id}/events", headers=auditor).status_code == 200
    )
    assert (
        api.client.get(f"/api/v1/archives/{archive_id}/proof", headers=auditor).status_code == 200
    )
    assert api.client.get("/api/v1/checkpoints", headers=auditor).status_code == 200
    assert api.client.get("/api/v1/archives", headers=auditor).json()["total"] == 1

    before = api.footprint()
    content = api.client.get(
        f"/api/v1/archives/{archive_id}/content", params={"purpose": "audit"}, headers=auditor
    )
    assert content.status_code == 403
    assert content.json()["code"] == "forbidden"
    assert PDF not in content.content
    # Auditors change nothing either.
    for method, template, kwargs in ARCHIVE_ROUTES[4:]:
        response = api.client.request(
            method, template.format(id=archive_id), headers=auditor, **kwargs
        )
        assert response.status_code == 403, (method, template, response.text)
    assert api.upload("auditor").status_code == 403
    assert api.footprint() == before


def test_clinician_sees_only_their_department(api: Api) -> None:
    cardio_id = api.create()["id"]
    onco = api.create(department="oncology", title="Chemo plan")
    cardiologist = api.auth("cardiologist")

    own = api.client.get(
        f"/api/v1/archives/{cardio_id}/content",
        params={"purpose": "treatment"},
        headers=cardiologist,
    )
    assert own.status_code == 200
    assert own.content == PDF

    before = api.footprint()
    for method, template, kwargs in ARCHIVE_ROUTES:
        if method == "POST" and template.endswith("/amend"):
            continue  # checked below
        path = template.format(id=onco["id"])
        response = api.client.request(method, path, headers=cardiologist, **kwargs)
        # Outside the department: as if it did not exist (or a role refusal, never a leak).
        assert response.status_code in {403, 404}, (method, path, response.text)
        if method == "GET" and path.endswith(("/" + onco["id"], "/content")):
            assert response.status_code == 404
            assert response.json()["code"] == "archive_not_found"
    amend = api.client.post(
        f"/api/v1/archives/{onco['id']}/amend",
        headers=cardiologist,
        files={"file": ("a.txt", b"x", "text/plain")},
    )
    assert amend.status_code == 404
    assert api.footprint() == before

    listed = api.client.get("/api/v1/archives", headers=cardiologist).json()
    assert [a["id"] for a in listed["items"]] == [cardio_id]
    assert listed["total"] == 1
    filtered = api.client.get(
        "/api/v1/archives", params={"department": "oncology"}, headers=cardiologist
    ).json()
    assert filtered["total"] == 0
    by_id = api.client.get("/api/v1/archives", params={"q": onco["id"]}, headers=cardiologist)
    assert by_id.json()["total"] == 0


def test_clinician_may_upload_only_to_their_department(api: Api) -> None:
    own = api.create("cardiologist")
    assert own["department"] == "cardiology"
    before = api.footprint()
    other = api.upload(
        "cardiologist",
        metadata={
            **{k: v for k, v in own.items() if k in {"record_class", "title", "source_system"}},
            "department": "oncology",
            "patient_id": "MRN-1",
        },
    )
    assert other.status_code == 400
    assert other.json()["code"] == "department_mismatch"
    assert api.footprint() == before


def test_clinician_cannot_archive_hold_or_read_evidence(api: Api) -> None:
    archive_id = api.create()["id"]
    cardiologist = api.auth("cardiologist")
    for method, template, kwargs in ARCHIVE_ROUTES:
        if template.endswith(("/events", "/proof", "/archive", "/hold")):
            response = api.client.request(
                method, template.format(id=archive_id), headers=cardiologist, **kwargs
            )
            assert response.status_code == 403, (method, template)
    assert api.client.get("/api/v1/checkpoints", headers=cardiologist).status_code == 403


def test_admin_issues_lists_and_revokes_keys(api: Api) -> None:
    admin = api.auth("admin")
    issued = api.client.post(
        "/api/v1/keys",
        headers=admin,
        json={"name": "ward-5b", "role": "clinician", "department": "cardiology"},
    )
    assert issued.status_code == 201, issued.text
    body = issued.json()
    secret = body["secret"]
    assert body["key"]["role"] == "clinician"
    assert secret.startswith(body["key"]["prefix"])

    # The new key works, with its department's scope.
    assert (
        api.client.get(
            "/api/v1/archives", headers={"Authorization": f"Bearer {secret}"}
        ).status_code
        == 200
    )

    listed = api.client.get("/api/v1/keys", headers=admin)
    assert listed.status_code == 200
    assert secret not in listed.text
    assert body["key"]["id"] in [k["id"] for k in listed.json()]

    revoked = api.client.delete(f"/api/v1/keys/{body['key']['id']}", headers=admin)
    assert revoked.status_code == 200
    assert revoked.json()["revoked_at"] is not None
    again = api.client.get("/api/v1/archives", headers={"Authorization": f"Bearer {secret}"})
    assert again.status_code == 401

    assert api.client.delete("/api/v1/keys/999999", headers=admin).status_code == 404
    own_id = next(k["id"] for k in listed.json() if k["name"] == "admin-1")
    self_revoke = api.client.delete(f"/api/v1/keys/{own_id}", headers=admin)
    assert self_revoke.status_code == 400
    assert self_revoke.json()["code"] == "revoke_self"


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        ({"name": "x", "role": "clinician"}, "department_required"),
        ({"name": "x", "role": "auditor", "department": "cardiology"}, "department_not_allowed"),
        ({"name": "x", "role": "root"}, "validation_error"),
        ({"name": "", "role": "auditor"}, "validation_error"),
        ({"name": "x\u0001y", "role": "auditor"}, "validation_error"),
        ({"name": "x\u0000y", "role": "auditor"}, "invalid_encoding"),  # refused with the body
        ({"name": "x", "role": "auditor", "extra": True}, "validation_error"),
    ],
)
def test_bad_key_requests_are_refused(api: Api, payload: dict[str, object], code: str) -> None:
    before = api.client.get("/api/v1/keys", headers=api.auth("admin")).json()
    response = api.client.post("/api/v1/keys", headers=api.auth("admin"), json=payload)
    assert 400 <= response.status_code < 500
    assert response.json()["code"] == code
    assert api.client.get("/api/v1/keys", headers=api.auth("admin")).json() == before


def test_only_admins_manage_keys(api: Api) -> None:
    for who in ("archivist", "cardiologist", "auditor"):
        headers = api.auth(who)
        assert api.client.get("/api/v1/keys", headers=headers).status_code == 403
        created = api.client.post(
            "/api/v1/keys", headers=headers, json={"name": "sneaky", "role": "admin"}
        )
        assert created.status_code == 403
        assert api.client.delete("/api/v1/keys/1", headers=headers).status_code == 403

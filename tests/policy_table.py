"""The access policy the tests expect, written out independently of ``node.policy`` (a change to
the default table must change this file too): ``expected_policy`` is the policy's answer,
``expected_status`` the HTTP status a read gets once the role's own action set is applied."""

from __future__ import annotations

ROLES = ("admin", "archivist", "clinician", "auditor", "records_manager", "regulator", "insurer")
SENSITIVITIES = ("NORMAL", "SENSITIVE", "HIGHLY_SENSITIVE")
RELATIONS = ("own", "other", "none")
PURPOSES = (
    "treatment",
    "referral",
    "research",
    "insurance",
    "audit",
    "legal",
    "quality",
    "patient_request",
    "operations",
)
ACTIONS = ("read_content", "read_metadata")

_CARE = {"treatment", "referral", "quality", "patient_request"}
_ARCHIVIST_RESTRICTED = {"operations", "legal", "audit", "patient_request"}
_OVERSIGHT = {"audit", "quality", "legal", "operations"}
_ROLE_ACTIONS = {
    "admin": set(),
    "archivist": {"read_content", "read_metadata"},
    "clinician": {"read_content", "read_metadata"},
    "auditor": {"read_metadata"},
    "records_manager": {"read_metadata"},
    "regulator": {"read_metadata"},
    "insurer": set(),
}


def expected_policy(role: str, sensitivity: str, relation: str, purpose: str, action: str) -> bool:
    """Whether the default policy table allows the read."""
    restricted = sensitivity == "HIGHLY_SENSITIVE"
    if restricted and purpose == "research":
        return False  # the deny rule wins over every allow
    if role == "clinician":
        if relation != "own":
            return False
        return purpose == "treatment" if restricted else purpose in _CARE
    if role == "archivist":
        return not restricted or purpose in _ARCHIVIST_RESTRICTED
    if role in ("auditor", "records_manager"):
        return action == "read_metadata" and purpose in _OVERSIGHT
    if role == "regulator":
        return action == "read_metadata" and purpose in {"audit", "legal"}
    return False


def expected_status(role: str, sensitivity: str, relation: str, purpose: str, action: str) -> int:
    """200, 403 (role or policy) or 404 (a department-bound caller on another department's
    record: its existence does not leak)."""
    if action not in _ROLE_ACTIONS[role]:
        return 403
    if expected_policy(role, sensitivity, relation, purpose, action):
        return 200
    if role == "clinician" and relation == "other":
        return 404
    return 403


def is_policy_denial(role: str, sensitivity: str, relation: str, purpose: str, action: str) -> bool:
    """A refusal by the policy (recorded as a denial), not by the role's action set."""
    return action in _ROLE_ACTIONS[role] and not expected_policy(
        role, sensitivity, relation, purpose, action
    )

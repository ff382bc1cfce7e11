"""The whole access-policy matrix as a table: every role × sensitivity × department relation ×
purpose × action, decided by ``node.policy.AccessPolicy`` with the default table, against the
expectations written out in ``tests/policy_table.py``. Plus the table's configuration format."""

from __future__ import annotations

import itertools

import pytest

from anchoring.events import Purpose, Sensitivity
from node.config import NodeSettings, load_settings
from node.errors import ConfigError
from node.policy import AccessPolicy, PolicyAction, Relation, default_policy, relation
from node.principal import Role
from tests.policy_table import (
    ACTIONS,
    PURPOSES,
    RELATIONS,
    ROLES,
    SENSITIVITIES,
    expected_policy,
)

POLICY = AccessPolicy(default_policy())
MATRIX = list(itertools.product(ROLES, SENSITIVITIES, RELATIONS, PURPOSES, ACTIONS))


def test_the_table_covers_every_value() -> None:
    assert set(ROLES) == {r.value for r in Role}
    assert set(SENSITIVITIES) == {s.value for s in Sensitivity}
    assert set(RELATIONS) == {r.value for r in Relation}
    assert set(PURPOSES) == {p.value for p in Purpose}
    assert set(ACTIONS) == {a.value for a in PolicyAction}
    assert len(MATRIX) == 7 * 3 * 3 * 9 * 2


@pytest.mark.parametrize(("role", "sensitivity", "rel", "purpose", "action"), MATRIX)
def test_policy_matrix(role: str, sensitivity: str, rel: str, purpose: str, action: str) -> None:
    decision = POLICY.decide(
        Role(role), Sensitivity(sensitivity), Relation(rel), Purpose(purpose), PolicyAction(action)
    )
    assert decision.allowed is expected_policy(role, sensitivity, rel, purpose, action)
    assert decision.relation is Relation(rel)
    if not decision.allowed and sensitivity == "HIGHLY_SENSITIVE" and purpose == "research":
        assert decision.rule == "no-research-on-restricted"


def test_relation() -> None:
    assert relation("cardiology", "cardiology") is Relation.OWN
    assert relation("oncology", "cardiology") is Relation.OTHER
    assert relation(None, "cardiology") is Relation.NONE


def test_a_policy_from_configuration_replaces_the_default(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "node.toml"
    config.write_text(
        """
mode = "dev"
[[access_policy]]
id = "everyone-metadata-audit"
effect = "allow"
roles = ["*"]
sensitivities = ["*"]
relations = ["*"]
purposes = ["audit"]
actions = ["read_metadata"]

[[access_policy]]
id = "no-restricted"
effect = "deny"
roles = ["*"]
sensitivities = ["HIGHLY_SENSITIVE"]
relations = ["*"]
purposes = ["*"]
actions = ["*"]
""",
        encoding="utf-8",
    )
    settings = load_settings(config, data_dir=tmp_path)
    policy = AccessPolicy(settings.access_policy)
    allowed = policy.decide(
        Role.INSURER, Sensitivity.NORMAL, Relation.NONE, Purpose.AUDIT, PolicyAction.READ_METADATA
    )
    assert (allowed.allowed, allowed.rule) == (True, "everyone-metadata-audit")
    denied = policy.decide(
        Role.INSURER,
        Sensitivity.HIGHLY_SENSITIVE,
        Relation.NONE,
        Purpose.AUDIT,
        PolicyAction.READ_METADATA,
    )
    assert (denied.allowed, denied.rule) == (False, "no-restricted")  # deny wins
    none = policy.decide(
        Role.ARCHIVIST, Sensitivity.NORMAL, Relation.NONE, Purpose.AUDIT, PolicyAction.READ_CONTENT
    )
    assert (none.allowed, none.rule) == (False, "default_deny")


@pytest.mark.parametrize(
    "bad",
    [
        {"roles": ["surgeon"]},
        {"purposes": ["curiosity"]},
        {"effect": "maybe"},
        {"sensitivities": []},
        {"unknown": 1},
    ],
)
def test_a_bad_policy_row_is_a_config_error(tmp_path, bad: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    row = {
        "id": "r",
        "effect": "allow",
        "roles": ["*"],
        "sensitivities": ["*"],
        "relations": ["*"],
        "purposes": ["*"],
        "actions": ["*"],
        **bad,
    }
    with pytest.raises(ConfigError):
        load_settings(None, mode="dev", data_dir=tmp_path, access_policy=[row])


def test_rule_ids_are_unique(tmp_path) -> None:  # type: ignore[no-untyped-def]
    row = {
        "id": "same",
        "effect": "allow",
        "roles": ["*"],
        "sensitivities": ["*"],
        "relations": ["*"],
        "purposes": ["*"],
        "actions": ["*"],
    }
    with pytest.raises(ConfigError):
        load_settings(None, mode="dev", data_dir=tmp_path, access_policy=[row, row])
    assert NodeSettings(mode="dev", data_dir=tmp_path).access_policy == default_policy()

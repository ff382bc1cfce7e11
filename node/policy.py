"""The access policy: which role may read which record, for which purpose.

One table, in configuration (``NodeSettings.access_policy``), decides every read of an archive's
content or metadata from four facts and the action:

- the caller's **role** (``node.principal.Role``);
- the record's **sensitivity** (``anchoring.events.Sensitivity``): ``NORMAL`` (ordinary clinical
  and administrative records), ``SENSITIVE`` (records a patient would expect to be handled with
  extra care: mental-health notes outside psychiatry, sexual health, substance use, minors),
  ``HIGHLY_SENSITIVE`` — the *restricted* level: psychiatry, HIV, genetic, reproductive;
- the **department relation** between caller and record (``Relation``): ``own`` (the caller's
  department is the record's), ``other`` (the caller belongs to another department), ``none``
  (the caller is not bound to a department: hospital-wide roles, consortium members). A record
  received by transfer or read at a grantee under a share keeps the department code its creator
  gave it, so the same rule applies to it as to a local record;
- the **purpose of use** (``anchoring.events.Purpose``), given with every content read;
- the **action** (``PolicyAction``): ``read_content`` or ``read_metadata``.

Evaluation (``AccessPolicy.decide``, pure): a matching ``deny`` rule wins; otherwise the first
matching ``allow`` rule allows; otherwise the request is denied (``default_deny``). ``"*"`` in a
rule's list matches every value. The role's own action set (``Principal.require``) is checked
first: the policy only narrows what a role may do, it never widens it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from anchoring.events import Purpose, Sensitivity
from node.principal import Role

ANY = "*"
DEFAULT_DENY = "default_deny"


class Relation(StrEnum):
    """How the caller's department relates to the record's."""

    OWN = "own"
    OTHER = "other"
    NONE = "none"


class PolicyAction(StrEnum):
    """The reads the policy decides."""

    READ_CONTENT = "read_content"
    READ_METADATA = "read_metadata"


def relation(caller_department: str | None, record_department: str) -> Relation:
    """``own``/``other`` for a caller bound to a department, ``none`` for anyone else."""
    if caller_department is None:
        return Relation.NONE
    return Relation.OWN if caller_department == record_department else Relation.OTHER


class PolicyRule(BaseModel):
    """One row of the policy table (a TOML ``[[access_policy]]`` table)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    effect: Literal["allow", "deny"]
    roles: tuple[str, ...] = Field(min_length=1)
    sensitivities: tuple[str, ...] = Field(min_length=1)
    relations: tuple[str, ...] = Field(min_length=1)
    purposes: tuple[str, ...] = Field(min_length=1)
    actions: tuple[str, ...] = Field(min_length=1)

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _known(value, Role)

    @field_validator("sensitivities")
    @classmethod
    def _sensitivities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _known(value, Sensitivity)

    @field_validator("relations")
    @classmethod
    def _relations(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _known(value, Relation)

    @field_validator("purposes")
    @classmethod
    def _purposes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _known(value, Purpose)

    @field_validator("actions")
    @classmethod
    def _actions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _known(value, PolicyAction)

    def matches(
        self,
        role: Role,
        sensitivity: Sensitivity,
        rel: Relation,
        purpose: Purpose,
        action: PolicyAction,
    ) -> bool:
        """Whether every column of the rule covers the request."""
        return (
            _covers(self.roles, role)
            and _covers(self.sensitivities, sensitivity)
            and _covers(self.relations, rel)
            and _covers(self.purposes, purpose)
            and _covers(self.actions, action)
        )


def _known(values: tuple[str, ...], enum: type[StrEnum]) -> tuple[str, ...]:
    allowed = {member.value for member in enum}
    for value in values:
        if value != ANY and value not in allowed:
            raise ValueError(
                f"unknown value {value!r} (allowed: '*', {', '.join(sorted(allowed))})"
            )
    return values


def _covers(values: tuple[str, ...], value: StrEnum) -> bool:
    return ANY in values or value.value in values


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's answer and the rule that gave it (``default_deny`` when none matched)."""

    allowed: bool
    rule: str
    relation: Relation


class AccessPolicy:
    """The policy table; ``decide`` is the one place a read is judged."""

    def __init__(self, rules: tuple[PolicyRule, ...] | list[PolicyRule]) -> None:
        ids = [rule.id for rule in rules]
        if len(set(ids)) != len(ids):
            raise ValueError("access policy rule ids must be unique")
        self.rules = tuple(rules)
        self._deny = tuple(r for r in self.rules if r.effect == "deny")
        self._allow = tuple(r for r in self.rules if r.effect == "allow")

    def decide(
        self,
        role: Role,
        sensitivity: Sensitivity,
        rel: Relation,
        purpose: Purpose,
        action: PolicyAction,
    ) -> Decision:
        """Deny rules first, then the first allow rule, else ``default_deny``."""
        for rule in self._deny:
            if rule.matches(role, sensitivity, rel, purpose, action):
                return Decision(False, rule.id, rel)
        for rule in self._allow:
            if rule.matches(role, sensitivity, rel, purpose, action):
                return Decision(True, rule.id, rel)
        return Decision(False, DEFAULT_DENY, rel)


def _rule(
    rule_id: str,
    effect: Literal["allow", "deny"],
    roles: tuple[str, ...],
    sensitivities: tuple[str, ...],
    relations: tuple[str, ...],
    purposes: tuple[str, ...],
    actions: tuple[str, ...],
) -> PolicyRule:
    return PolicyRule(
        id=rule_id,
        effect=effect,
        roles=roles,
        sensitivities=sensitivities,
        relations=relations,
        purposes=purposes,
        actions=actions,
    )


_BOTH = (PolicyAction.READ_CONTENT.value, PolicyAction.READ_METADATA.value)
_METADATA = (PolicyAction.READ_METADATA.value,)
_ORDINARY = (Sensitivity.NORMAL.value, Sensitivity.SENSITIVE.value)
_RESTRICTED = (Sensitivity.HIGHLY_SENSITIVE.value,)


def default_policy() -> list[PolicyRule]:
    """The policy a node runs with unless its configuration gives another table
    (docs/regulators.md "Access policy" lists it)."""
    care = ("treatment", "referral", "quality", "patient_request")
    return [
        _rule(
            "no-research-on-restricted", "deny", (ANY,), _RESTRICTED, (ANY,), ("research",), _BOTH
        ),
        _rule("clinician-own-care", "allow", ("clinician",), _ORDINARY, ("own",), care, _BOTH),
        _rule(
            "clinician-own-restricted",
            "allow",
            ("clinician",),
            _RESTRICTED,
            ("own",),
            ("treatment",),
            _BOTH,
        ),
        _rule("archivist-records", "allow", ("archivist",), _ORDINARY, (ANY,), (ANY,), _BOTH),
        _rule(
            "archivist-restricted",
            "allow",
            ("archivist",),
            _RESTRICTED,
            (ANY,),
            ("operations", "legal", "audit", "patient_request"),
            _BOTH,
        ),
        _rule(
            "auditor-metadata",
            "allow",
            ("auditor",),
            (ANY,),
            (ANY,),
            ("audit", "quality", "legal", "operations"),
            _METADATA,
        ),
        _rule(
            "records-manager-metadata",
            "allow",
            ("records_manager",),
            (ANY,),
            (ANY,),
            ("operations", "audit", "legal", "quality"),
            _METADATA,
        ),
        _rule(
            "regulator-metadata",
            "allow",
            ("regulator",),
            (ANY,),
            (ANY,),
            ("audit", "legal"),
            _METADATA,
        ),
    ]

"""The lifecycle's rules are one table (``anchoring.lifecycle.RULES``) that the services, the
verifier and the specification all read: every event type has its row, the specification's §8
table says exactly what the code's table says, and ``check_allowed`` (what services ask before
costly work) refuses exactly where ``apply`` would refuse on state or hold."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest

from anchoring.errors import TransitionRefusedError
from anchoring.events import EventType
from anchoring.lifecycle import RULES, ArchiveStatus, check_allowed
from tests.anchoring.test_lifecycle import archived_story
from tests.support import REPO_ROOT


def _spec_rows() -> dict[str, tuple[str, str]]:
    text = (REPO_ROOT / "docs" / "proof-format.md").read_text(encoding="utf-8")
    section = text[text.index("## 8. Lifecycle rules checked") : text.index("## 9.")]
    rows: dict[str, tuple[str, str]] = {}
    for line in section.splitlines():
        match = re.match(
            r"^\| `([A-Z_]+)`( in the custodian's log| by another hospital)? \| (.*) \| (.*) \|$",
            line,
        )
        if match and match.group(2) != " by another hospital":
            rows[match.group(1)] = (match.group(3), match.group(4))
    return rows


def test_every_event_type_but_create_has_one_rule() -> None:
    assert set(RULES) == set(EventType) - {EventType.CREATE}
    assert all(rule.event_type is event_type for event_type, rule in RULES.items())


def test_the_specification_table_is_the_code_table() -> None:
    rows = _spec_rows()
    assert set(rows) == {event_type.value for event_type in EventType}
    assert rows["CREATE"][0].startswith("first event of the archive")
    for event_type, rule in RULES.items():
        assert rows[event_type.value] == (rule.legal_when, rule.does), event_type


@pytest.mark.parametrize("event_type", sorted(RULES))
@pytest.mark.parametrize("status", list(ArchiveStatus))
@pytest.mark.parametrize("on_hold", [False, True])
def test_check_allowed_follows_the_table(
    event_type: EventType, status: ArchiveStatus, on_hold: bool
) -> None:
    state = archived_story().state
    assert state is not None
    state = replace(state, status=status, on_hold=on_hold)
    rule = RULES[event_type]
    refused = not rule.permits(status) or (on_hold and rule.blocked_by_hold is not None)
    if refused:
        with pytest.raises(TransitionRefusedError) as caught:
            check_allowed(state, event_type)
        assert caught.value.event_type == event_type.value
        assert caught.value.state == status.value
    else:
        check_allowed(state, event_type)

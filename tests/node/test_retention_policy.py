"""Retention policies: one table per record class with the legal floors (outpatient and emergency
15 years from the last visit, inpatient 30 years from the last discharge), refused at start when a
configured period is below its floor — in every mode, from the file and from the environment."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from anchoring.events import RecordClass
from node.config import NodeSettings, load_settings
from node.errors import ConfigError
from node.retention import (
    DEFAULT_RETENTION_YEARS,
    LEGAL_FLOOR_YEARS,
    RetentionPolicies,
    Trigger,
    add_years,
    check_retention_years,
)


def _years(**changes: int) -> dict[str, int]:
    return {**DEFAULT_RETENTION_YEARS, **changes}


def _toml(tmp_path: Path, mode: str, years: dict[str, int]) -> Path:
    table = ", ".join(f"{k} = {v}" for k, v in years.items())
    path = tmp_path / "node.toml"
    path.write_text(f'mode = "{mode}"\nretention_years = {{ {table} }}\n')
    return path


def test_the_legal_floors_are_those_of_the_regulation() -> None:
    assert LEGAL_FLOOR_YEARS == {"OUTPATIENT": 15, "EMERGENCY": 15, "INPATIENT": 30}
    policies = RetentionPolicies(dict(DEFAULT_RETENTION_YEARS))
    assert policies.of(RecordClass.OUTPATIENT).trigger is Trigger.LAST_VISIT
    assert policies.of(RecordClass.EMERGENCY).trigger is Trigger.LAST_VISIT
    assert policies.of(RecordClass.INPATIENT).trigger is Trigger.LAST_DISCHARGE
    assert {p.record_class for p in policies.triggered_by(Trigger.LAST_VISIT)} == {
        RecordClass.OUTPATIENT,
        RecordClass.EMERGENCY,
    }
    assert {p.record_class for p in policies.triggered_by(Trigger.LAST_DISCHARGE)} == {
        RecordClass.INPATIENT,
        RecordClass.NURSING,
    }
    assert [p.record_class for p in policies.all()] == list(RecordClass)
    inpatient = policies.of(RecordClass.INPATIENT)
    assert (inpatient.name, inpatient.years, inpatient.floor) == ("inpatient-30y", 30, 30)
    assert inpatient.deadline(date(2024, 5, 2)) == datetime(2054, 5, 2, tzinfo=UTC)
    assert policies.of(RecordClass.LAB).floor == 1


def test_a_leap_day_trigger_ends_on_28_february() -> None:
    assert add_years(date(2024, 2, 29), 15) == date(2039, 2, 28)
    assert add_years(date(2024, 2, 29), 16) == date(2040, 2, 29)


@pytest.mark.parametrize("mode", ["dev", "production"])
@pytest.mark.parametrize(
    ("record_class", "years"),
    [("OUTPATIENT", 14), ("EMERGENCY", 10), ("INPATIENT", 29), ("ADMINISTRATIVE", 0)],
)
def test_a_period_below_its_floor_is_refused_at_start_in_every_mode(
    tmp_path: Path, mode: str, record_class: str, years: int
) -> None:
    config = _toml(tmp_path, mode, _years(**{record_class: years}))
    with pytest.raises(ConfigError, match=f"retention_years.{record_class} = {years} is below"):
        load_settings(config)
    with pytest.raises(ValueError, match="below the legal floor"):
        NodeSettings(mode=mode, retention_years=_years(**{record_class: years}))


def test_a_period_below_its_floor_is_refused_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCHIVECHAIN_RETENTION_YEARS", json.dumps(_years(INPATIENT=20)))
    with pytest.raises(ConfigError, match="INPATIENT = 20 is below the legal floor of 30"):
        load_settings(data_dir=tmp_path)


def test_longer_periods_and_lower_defaults_without_floor_are_accepted(tmp_path: Path) -> None:
    years = _years(OUTPATIENT=20, INPATIENT=50, ADMINISTRATIVE=3, LAB=1)
    settings = load_settings(_toml(tmp_path, "production", years))
    assert settings.retention_years == years
    assert RetentionPolicies(settings.retention_years).of(RecordClass.OUTPATIENT).name == (
        "outpatient-20y"
    )


def test_incomplete_or_unknown_classes_are_refused() -> None:
    incomplete = dict(DEFAULT_RETENTION_YEARS)
    del incomplete["LAB"]
    with pytest.raises(ValueError, match="lacks classes"):
        check_retention_years(incomplete)
    with pytest.raises(ValueError, match="unknown classes: \\['DENTAL'\\]"):
        check_retention_years(_years(DENTAL=5))
    with pytest.raises(ValueError, match="below"):
        RetentionPolicies(_years(OUTPATIENT=1))

"""Retention policies: how long each record class is kept, from which trigger, and the legal floor
no configuration may go below.

One table, one row per record class (``anchoring.events.RecordClass``):

=============== ============= ============== ===============================================
class           default years legal floor    trigger (the date the clock runs from)
=============== ============= ============== ===============================================
OUTPATIENT      15            15             the patient's last visit
EMERGENCY       15            15             the patient's last visit
INPATIENT       30            30             the patient's last discharge
NURSING         30            —              the patient's last discharge (inpatient record)
LAB             15            —              the record's own date
IMAGING         15            —              the record's own date
ADMINISTRATIVE  10            —              the record's own date
=============== ============= ============== ===============================================

The floors are those of 医疗机构病历管理规定 (2013): outpatient and emergency records at least 15
years from the last visit, inpatient records at least 30 years from the last discharge. The other
periods are defaults a hospital may change (``retention_years`` in the node configuration), to at
least one year. A configured period below its class's floor is refused when the configuration is
loaded, in every mode, so a node never starts with it.

Triggers move forward, never back: a later visit (or discharge) of the same patient moves the
deadline of that patient's records of the classes that run from it (``RetentionService``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from enum import StrEnum

from anchoring.events import RecordClass


class Trigger(StrEnum):
    """What starts (and restarts) a class's retention clock."""

    LAST_VISIT = "last_visit"
    LAST_DISCHARGE = "last_discharge"
    RECORD_DATE = "record_date"


LEGAL_FLOOR_YEARS: dict[str, int] = {
    RecordClass.OUTPATIENT.value: 15,
    RecordClass.EMERGENCY.value: 15,
    RecordClass.INPATIENT.value: 30,
}
"""Minimum retention in years by record class (医疗机构病历管理规定, 2013); classes absent here
have no legal floor beyond one year."""

MIN_YEARS = 1
"""No class may be kept for less than a year, floor or not."""

DEFAULT_RETENTION_YEARS: dict[str, int] = {
    RecordClass.OUTPATIENT.value: 15,
    RecordClass.EMERGENCY.value: 15,
    RecordClass.INPATIENT.value: 30,
    RecordClass.LAB.value: 15,
    RecordClass.IMAGING.value: 15,
    RecordClass.NURSING.value: 30,
    RecordClass.ADMINISTRATIVE.value: 10,
}
"""Documented defaults (``retention_years`` overrides them per class)."""

TRIGGERS: dict[str, Trigger] = {
    RecordClass.OUTPATIENT.value: Trigger.LAST_VISIT,
    RecordClass.EMERGENCY.value: Trigger.LAST_VISIT,
    RecordClass.INPATIENT.value: Trigger.LAST_DISCHARGE,
    RecordClass.NURSING.value: Trigger.LAST_DISCHARGE,
    RecordClass.LAB.value: Trigger.RECORD_DATE,
    RecordClass.IMAGING.value: Trigger.RECORD_DATE,
    RecordClass.ADMINISTRATIVE.value: Trigger.RECORD_DATE,
}


def floor_years(record_class: str) -> int:
    """The least number of years ``record_class`` may be kept."""
    return max(LEGAL_FLOOR_YEARS.get(record_class, MIN_YEARS), MIN_YEARS)


def check_retention_years(years: dict[str, int]) -> None:
    """Refuse (``ValueError``, naming the class) a table that lacks a class, names an unknown one,
    or keeps a class for less than its legal floor."""
    known = {c.value for c in RecordClass}
    missing = known - set(years)
    if missing:
        raise ValueError(f"retention_years lacks classes: {sorted(missing)}")
    unknown = set(years) - known
    if unknown:
        raise ValueError(f"retention_years names unknown classes: {sorted(unknown)}")
    for record_class in sorted(years):
        floor = floor_years(record_class)
        if years[record_class] < floor:
            raise ValueError(
                f"retention_years.{record_class} = {years[record_class]} is below the legal "
                f"floor of {floor} years; the node refuses to start with it"
            )


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """The policy of one record class."""

    record_class: RecordClass
    years: int
    trigger: Trigger

    @property
    def name(self) -> str:
        """The policy's name as events and the catalogue carry it, e.g. ``outpatient-15y``."""
        return f"{self.record_class.value.lower()}-{self.years}y"

    @property
    def floor(self) -> int:
        """The legal floor of the class, in years."""
        return floor_years(self.record_class.value)

    def deadline(self, trigger_date: date) -> datetime:
        """The retention deadline for a clock started on ``trigger_date`` (midnight UTC)."""
        return datetime.combine(add_years(trigger_date, self.years), time(), UTC)


class RetentionPolicies:
    """The node's policy table (from ``retention_years``, already checked against the floors)."""

    def __init__(self, years: dict[str, int]) -> None:
        check_retention_years(years)
        self._policies = {
            c: RetentionPolicy(c, years[c.value], TRIGGERS[c.value]) for c in RecordClass
        }

    def of(self, record_class: RecordClass) -> RetentionPolicy:
        """The policy of ``record_class``."""
        return self._policies[record_class]

    def triggered_by(self, trigger: Trigger) -> list[RetentionPolicy]:
        """The policies whose clock runs from ``trigger``."""
        return [p for p in self._policies.values() if p.trigger is trigger]

    def all(self) -> list[RetentionPolicy]:
        """Every class's policy, in ``RecordClass`` order."""
        return list(self._policies.values())


def add_years(day: date, years: int) -> date:
    """``day`` plus ``years`` calendar years (29 February becomes 28 February)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February in a non-leap target year
        return day.replace(year=day.year + years, day=28)

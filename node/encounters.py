"""Encounters reported by hospital systems (a visit, an admission, a discharge): the triggers of
retention (outpatient records are kept from the patient's last visit, inpatient records from the
last discharge) and the moment an encounter's records can be archived in one batch.

Whoever learns of an encounter (the encounters API, HL7 ADT, FHIR Encounter) reports it to an
``EncounterSink``; the composition root decides who listens (the retention service moves
deadlines forward; the ingestion service archives a closed encounter's records). The patient id
is turned into the node's keyed pseudonym by the receiver and never stored in clear.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol


class EncounterKind(StrEnum):
    """What happened."""

    VISIT = "visit"  # an outpatient or emergency visit (starts and ends at once)
    ADMISSION = "admission"  # an inpatient stay begins
    DISCHARGE = "discharge"  # an inpatient stay ends (the inpatient retention trigger)


@dataclass(frozen=True, slots=True)
class EncounterReport:
    """One encounter event from a hospital system."""

    patient_id: str
    kind: EncounterKind
    at: datetime  # when it happened (timezone-aware)
    encounter_id: str | None = None  # the source system's visit/stay number
    department: str | None = None
    source_system: str | None = None
    admitted_at: datetime | None = None  # a discharge's admission instant, when the source gives it


class EncounterSink(Protocol):
    """Receives encounter reports."""

    def report_encounter(self, report: EncounterReport) -> None:
        """Act on one encounter (idempotent for the same report)."""


class EncounterFanOut:
    """Several listeners behind one sink, called in order."""

    def __init__(self, *sinks: EncounterSink) -> None:
        self._sinks = list(sinks)

    def add(self, sink: EncounterSink) -> None:
        """Add a listener."""
        self._sinks.append(sink)

    def report_encounter(self, report: EncounterReport) -> None:
        for sink in self._sinks:
            sink.report_encounter(report)

"""Admission and discharge instants of inpatient stays, by encounter: an encounter listener.

ADT^A01 (PV1-44), a FHIR Encounter in progress (``period.start``) and the encounters API with
kind ``admission`` report an admission; ADT^A03, a finished inpatient Encounter and kind
``discharge`` a discharge, carrying the admission too when the source gives it (PV1-44,
``period.start``: ``EncounterReport.admitted_at``). The row is keyed by the keyed pseudonym of
the source's encounter number (the same one ``ingested_messages.encounter`` holds), so a record
ingested for that encounter finds its stay; reports without an encounter number are ignored.
A later report of the same kind replaces the instant (a corrected ADT)."""

from __future__ import annotations

from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from node.db import Database, UnitOfWork, UnitRunner
from node.encounters import EncounterKind, EncounterReport
from node.models import EncounterStay, IngestedMessage
from node.pseudonyms import Pseudonyms


class StayRecorder:
    """Records each stay's admission and discharge (see the module docstring)."""

    def __init__(self, *, db: Database, units: UnitRunner, pseudonyms: Pseudonyms) -> None:
        self.db = db
        self.units = units
        self.pseudonyms = pseudonyms

    def report_encounter(self, report: EncounterReport) -> None:
        if report.kind is EncounterKind.VISIT or not (report.encounter_id or "").strip():
            return
        key = self.pseudonyms.encounter((report.encounter_id or "").strip())

        def unit(uow: UnitOfWork) -> None:
            row = uow.session.get(EncounterStay, key)
            if row is None:
                row = EncounterStay(encounter=key, updated_at=uow.now)
                uow.session.add(row)
            if report.kind is EncounterKind.ADMISSION:
                row.admitted_at = report.at
            else:
                row.discharged_at = report.at
                if report.admitted_at is not None:
                    row.admitted_at = report.admitted_at
            row.updated_at = uow.now

        self.units.run(unit)


def stay_dates(session: Session, archive_id: str) -> tuple[date | None, date | None]:
    """(admitted on, discharged on) of the stay the archive was ingested for, if known."""
    row = session.execute(
        select(EncounterStay.admitted_at, EncounterStay.discharged_at)
        .join(IngestedMessage, IngestedMessage.encounter == EncounterStay.encounter)
        .where(IngestedMessage.archive_id == archive_id)
        .limit(1)
    ).first()
    if row is None:
        return None, None
    admitted, discharged = row
    return (
        admitted.date() if admitted is not None else None,
        discharged.date() if discharged is not None else None,
    )

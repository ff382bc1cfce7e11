"""Keyed pseudonyms of patients and staff: the only form in which their identifiers reach events,
the log or the chain (HMAC-SHA-256 under the node's secret, ``node.crypto.pseudonym``)."""

from __future__ import annotations

from node import crypto


class Pseudonyms:
    """Pseudonyms under one hospital's secret."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def patient(self, patient_id: str) -> str:
        """The pseudonym of a patient id (the same id always gives the same pseudonym here)."""
        return crypto.pseudonym(self._secret, "patient", patient_id)

    def staff(self, staff_id: str) -> str:
        """The pseudonym of a staff member or API key name."""
        return crypto.pseudonym(self._secret, "staff", staff_id)

    def encounter(self, encounter_id: str) -> str:
        """The pseudonym of a source system's visit or stay number."""
        return crypto.pseudonym(self._secret, "encounter", encounter_id)

    def insurer_reference(self, patient_pseudonym: str, insurer: str) -> str:
        """The patient's reference in attestations for one insurer: a keyed pseudonym of
        ``insurer ‖ ':' ‖ patient pseudonym`` in its own namespace. Stable per (patient, insurer);
        two insurers' references of one patient cannot be linked without the hospital secret."""
        return crypto.pseudonym(self._secret, "insurer-ref", f"{insurer}:{patient_pseudonym}")

    def search_filters(self, canonical: str) -> str:
        """A search's filters as its page cursors carry them (``node.searchcursor``): 16 hex of
        their keyed hash, so a cursor binds its filters without holding a patient id or a
        search word in a URL."""
        return crypto.pseudonym(self._secret, "search-filters", canonical)[:16]

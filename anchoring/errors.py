"""Errors of the evidence layer. ``AnchoringError`` is the root; subclasses also inherit the builtin
they resemble. Messages say what mismatched (expected vs calculated) and never carry PHI."""

from __future__ import annotations


class AnchoringError(Exception):
    """Root of every error raised on purpose by ``anchoring``. ``code`` is machine readable."""

    code = "anchoring_error"


class ProofError(AnchoringError, ValueError):
    """A Merkle proof (or its inputs) is malformed or does not verify."""

    code = "proof_invalid"


class RootMismatchError(ProofError):
    """The root calculated from a proof differs from the expected root."""

    code = "root_mismatch"

    def __init__(self, expected: bytes, calculated: bytes, what: str = "root") -> None:
        super().__init__(
            f"{what} mismatch: expected {expected.hex()}, calculated {calculated.hex()}"
        )
        self.expected = expected
        self.calculated = calculated


class EventFormatError(AnchoringError, ValueError):
    """An event is malformed, not canonical, or violates its schema."""

    code = "event_invalid"


class BundleFormatError(AnchoringError, ValueError):
    """A proof bundle cannot be parsed; ``field`` names the offending field (JSON path)."""

    code = "bundle_invalid"

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message  # without the field


class NotABundleError(BundleFormatError):
    """The input is JSON but no ``archivechain.proof/v1`` bundle: an API error response,
    another kind of document, a bundle of another format version; the message says which."""


class LifecycleError(AnchoringError, ValueError):
    """An event sequence breaks the archive lifecycle state machine."""

    code = "illegal_transition"


class LogError(AnchoringError, RuntimeError):
    """The stored event log is inconsistent or a request is outside its range."""

    code = "log_error"


class ChainError(AnchoringError, ConnectionError):
    """The chain could not be read or written (RPC unreachable, reverted, timed out)."""

    code = "chain_error"


class NotANotaryError(AnchoringError, LookupError):
    """The trusted notary address holds no ``ArchiveNotary``: no code there, or its answers are
    not ArchiveNotary's (a revert, return data of the wrong length or out of range). The chain
    did answer, so this is a definite finding (the verifier reports ``notary_mismatch``), not an
    unavailable chain."""

    code = "not_a_notary"


class ChainStateLostError(ChainError):
    """The chain no longer holds checkpoints this node recorded as confirmed (e.g. a wiped dev chain)."""

    code = "chain_state_lost"


class InclusionProofError(ProofError):
    """An inclusion proof is malformed: index outside the tree, wrong length, wrong-size hash."""

    code = "inclusion_proof_invalid"


class ConsistencyProofError(ProofError):
    """A consistency proof is malformed or asked for between sizes it cannot relate."""

    code = "consistency_proof_invalid"


class TransitionRefusedError(LifecycleError):
    """One event is illegal in the archive's current state; says which state and which event."""

    def __init__(self, state: str, event_type: str, reason: str) -> None:
        super().__init__(f"{event_type} refused in state {state}: {reason}")
        self.state = state
        self.event_type = event_type
        self.reason = reason


class PrevHashMismatchError(TransitionRefusedError):
    """An event's ``prev`` is not the leaf hash of the archive's previous event (chain broken)."""

    code = "prev_mismatch"


class EventTimeOrderError(TransitionRefusedError):
    """An event is dated before the event it follows."""

    code = "time_order"


class BreakGlassWindowError(TransitionRefusedError):
    """A break-glass ACCESS outside any break-glass window: no earlier BREAK_GLASS of the same
    hospital and actor (same purpose and reason hash) on the archive whose window covers it."""

    code = "break_glass_unopened"

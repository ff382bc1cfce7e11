"""Errors of the hospital node. ``NodeError`` is the root; each subclass also inherits the builtin
it resembles so callers that only know the builtin still catch it. ``api.errors`` maps them to HTTP."""

from __future__ import annotations


class NodeError(Exception):
    """Root of every error the node raises on purpose. ``code`` is machine readable."""

    code = "node_error"
    details: dict[str, object] | None = None
    """Machine-readable particulars a client may act on (never PHI), sent as ``details``."""

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class ConfigError(NodeError, ValueError):
    """Configuration is missing, malformed or insecure for the chosen mode."""

    code = "config_error"


class InputError(NodeError, ValueError):
    """A caller supplied something unusable (bad file, bad metadata, bad argument)."""

    code = "invalid_input"


class NotFoundError(NodeError, LookupError):
    """The thing does not exist, or is outside the caller's scope (answered the same way)."""

    code = "not_found"


class ConflictError(NodeError, RuntimeError):
    """The request is valid but illegal in the current state (e.g. an illegal transition)."""

    code = "conflict"


class GoneError(NodeError, LookupError):
    """The thing existed and was destroyed on purpose (an archive's content after destruction)."""

    code = "gone"


class BatchRefusedError(ConflictError):
    """A batch done all or nothing was refused: ``failures`` lists (archive id, error code) of
    every member that could not be done; nothing of the batch was kept."""

    code = "batch_refused"

    def __init__(self, failures: list[tuple[str, str]]) -> None:
        ids = ", ".join(archive_id for archive_id, _ in failures[:5])
        more = f" and {len(failures) - 5} more" if len(failures) > 5 else ""
        super().__init__(f"nothing was archived: refused for {ids}{more}")
        self.failures = failures
        self.details = {"failed": [{"id": i, "code": c} for i, c in failures]}


class PermissionDeniedError(NodeError, PermissionError):
    """The caller is known but may not do this."""

    code = "forbidden"


class AuthenticationError(NodeError, PermissionError):
    """The caller could not be identified (missing, unknown or revoked credential)."""

    code = "unauthenticated"


class UnavailableError(NodeError, ConnectionError):
    """A dependency (chain, blob store, database) cannot be reached right now."""

    code = "unavailable"

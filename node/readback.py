"""Reading a stored version's ciphertext back, with repair on read (docs/recovery.md §1).

Every path that serves a version this node holds — the content route and the console, a
grantee's disclosure, a transfer to the new custodian — opens the ciphertext here. When the
local blob is missing, or (for a decrypted read) its first chunk does not authenticate, the
reader asks its ``heal`` hook (``ReplicaService.ensure_local``: fetch from a replica, check the
recorded SHA-256, store, log REPAIR) for an intact copy and opens that instead, so a read of a
wiped or corrupt blob waits for its repair rather than failing. Without replicas (``heal`` unset
or finding none) the original error stands. Corruption found past the first chunk cannot be
undone in a response already sent; the fixity audit repairs it for the next read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator

from node import crypto
from node.blobstore import BlobNotFoundError, BlobStore

log = logging.getLogger(__name__)

Healer = Callable[[str, int], str | None]
"""``(archive id, version)`` → the CID of an intact local copy (repaired first if needed), or
None when none can be had."""


def primed(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """``chunks`` with its first item already computed (raises now if that fails), so a stream
    that cannot start is an error before any answer is sent, not a truncated one."""
    iterator = iter(chunks)
    first = next(iterator, b"")

    def body() -> Iterator[bytes]:
        if first:
            yield first
        yield from iterator

    return body()


class CiphertextReader:
    """Opens held versions' ciphertext from the blob store, repairing on read through ``heal``
    (set by the runtime once the replica service exists)."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self.heal: Healer | None = None

    def ciphertext(self, archive_id: str, version: int, cid: str) -> Iterator[bytes]:
        """The stored bytes of ``archive_id`` v``version`` (recorded at ``cid``); a missing blob is
        repaired first when a replica can deliver it, else ``BlobNotFoundError``."""
        try:
            return self.blobs.open_stream(cid)
        except BlobNotFoundError:
            healed = self._heal(archive_id, version, "missing")
            if healed is None:
                raise
        return self.blobs.open_stream(healed)

    def plaintext(
        self, archive_id: str, version: int, cid: str, data_key: bytes
    ) -> Iterator[bytes]:
        """The decrypted content of ``archive_id`` v``version``, its first chunk already
        authenticated. A missing blob or a first chunk that fails (``crypto.CryptoError``) is
        repaired and opened once more; what still fails raises the original error."""
        aad = crypto.archive_aad(archive_id, version)
        try:
            return primed(
                crypto.decrypt_stream(data_key, self.ciphertext(archive_id, version, cid), aad)
            )
        except crypto.CryptoError:
            healed = self._heal(archive_id, version, "unreadable")
            if healed is None:
                raise
        return primed(crypto.decrypt_stream(data_key, self.blobs.open_stream(healed), aad))

    def _heal(self, archive_id: str, version: int, reason: str) -> str | None:
        if self.heal is None:
            return None
        log.warning(
            "the local blob of %s v%d is %s: repairing on read", archive_id, version, reason
        )
        try:
            return self.heal(archive_id, version)
        except Exception:  # the read fails with its own error; the repair's is logged here
            log.exception("repair on read of %s v%d failed", archive_id, version)
            return None

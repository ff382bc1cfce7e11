"""The blob-store contract: content-addressed, streaming, fixity-checked storage of ciphertext.

A store holds opaque bytes (the node only ever stores ciphertext) under a CID it computes itself.
``BlobRef`` is what the database records per archive version: the CID, the size and the SHA-256
of the stored bytes (the fixity value; for a multi-block IPFS file the CID is not that hash).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from node.errors import NodeError, UnavailableError

__all__ = [
    "BlobNotFoundError",
    "BlobRef",
    "BlobStore",
    "BlobStoreError",
    "BlobStoreUnavailableError",
    "FixityError",
]

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class BlobStoreError(NodeError, OSError):
    """Root of blob-store errors (an I/O problem of the node's storage, not of the caller)."""

    code = "blob_store_error"


class BlobNotFoundError(BlobStoreError, FileNotFoundError):
    """The store holds no blob with that CID (never stored, deleted, or not a CID of this store)."""

    code = "blob_not_found"


class FixityError(BlobStoreError):
    """The stored bytes no longer match their recorded size or SHA-256 (corruption or tampering)."""

    code = "fixity_failed"


class BlobStoreUnavailableError(BlobStoreError, UnavailableError):
    """The backing service (e.g. the IPFS daemon) cannot be reached or answered with an error."""

    code = "blob_store_unavailable"


@dataclass(frozen=True, slots=True)
class BlobRef:
    """Where a blob is and what it must hash to: CID (base32 CIDv1), byte size, SHA-256 hex."""

    cid: str
    size: int
    sha256: str

    def __post_init__(self) -> None:
        if self.size < 0 or not _SHA256_HEX.fullmatch(self.sha256) or not self.cid:
            raise BlobStoreError("malformed BlobRef: needs a CID, a size and a SHA-256 hex")


@runtime_checkable
class DeferredSyncStore(Protocol):
    """A store that can take a batch of blobs without syncing each (``durable=False``) and make
    them durable at once (``make_durable``) before the caller records them (the local store)."""

    def put_stream(self, chunks: Iterable[bytes], *, durable: bool = True) -> BlobRef: ...

    def make_durable(self, refs: Iterable[BlobRef]) -> None: ...


@runtime_checkable
class BlobStore(Protocol):
    """What every blob store offers. All methods are blocking; reads and writes stream."""

    kind: str
    """"local" or "ipfs" (the configuration value that selects the store)."""

    def put_stream(self, chunks: Iterable[bytes]) -> BlobRef:
        """Store the concatenation of ``chunks``; idempotent for content already stored.

        Either the whole blob is stored and pinned, or nothing new is visible: if ``chunks`` raises,
        that exception propagates and no partial blob remains.
        """
        ...

    def open_stream(self, cid: str) -> Iterator[bytes]:
        """Stream a blob's bytes. Raises ``BlobNotFoundError`` at once if the blob is absent."""
        ...

    def exists(self, cid: str) -> bool:
        """True when the store holds (and, for IPFS, pins) the blob."""
        ...

    def delete(self, cid: str) -> bool:
        """Remove a blob; True if it was there. Deleting an absent blob is not an error."""
        ...

    def verify(self, ref: BlobRef) -> None:
        """Re-read the blob and check size and SHA-256 against ``ref``; ``FixityError`` if not."""
        ...

    def iter_cids(self) -> Iterator[str]:
        """Every CID the store holds (for audits and orphan detection)."""
        ...

    def close(self) -> None:
        """Release connections and handles."""
        ...

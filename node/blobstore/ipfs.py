"""IPFS blob store over the HTTP RPC API (kubo in production, js-ipfs in development and CI).

Uses ipfshttpclient 0.7.0, constructed directly as ``Client(addr)``: its ``connect()`` helper
refuses every daemon newer than 0.8. Blobs are added as CIDv1 with raw leaves and pinned; a blob
"exists" in this store exactly when it is pinned (recursively). Deleting unpins and, by default,
runs the repo garbage collector so the blocks really go. The CID of a multi-block file is a dag-pb
root, not the SHA-256 of the bytes, so the SHA-256 is computed while streaming the upload and
recorded in the ``BlobRef``; ``verify`` re-reads the blob and compares.

Writes never abort an add half-way: if the caller's chunks raise, the upload is ended cleanly
(the partial content is added *unpinned*, so the next GC removes it) and the caller's exception is
re-raised. Aborting the HTTP request instead wedges js-ipfs (its add never releases the repo's GC
lock, after which every GC and add hangs); kubo copes with either. Because the pin is a separate
call after the add, adds and garbage collection are kept apart by a readers-writer lock, so our own
GC cannot collect blocks between an add and its pin.

Caveats: a daemon serves one node only. This store owns the daemon's pins, and a transferred
record's ciphertext has the same CID at its former and its new custodian, so on a shared daemon
the former custodian's unpin (after the transfer) deletes the new custodian's copy; ``claim``
records the one user in the MFS file ``/archivechain-owner`` and the runtime refuses, in
production, a daemon another node or tier claimed (``node.blobstore.claim_daemons``). Garbage
collection is daemon-wide (it removes every unpinned block, which is what a node
that pins everything it keeps wants); do not run the daemon with automatic GC (``--enable-gc``).
A pin held by another application on the same daemon shows up in ``iter_cids``. A process that
dies mid-upload still aborts the request (the js-ipfs wedge then needs a daemon restart).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, TypeVar

import ipfshttpclient
import ipfshttpclient.exceptions as ipfs_errors
from multiformats import CID

from node.blobstore.base import (
    BlobNotFoundError,
    BlobRef,
    BlobStoreError,
    BlobStoreUnavailableError,
    FixityError,
)

__all__ = ["IpfsBlobStore", "normalise_cid"]

# ipfshttpclient 0.7.0 passes urllib3's removed ``strict`` argument on every request.
warnings.filterwarnings(
    "ignore", message="The 'strict' parameter is no longer needed", category=FutureWarning
)

_UPLOAD_CHUNK_SIZE: Final = 256 * 1024
OWNER_FILE: Final = "/archivechain-owner"
"""The MFS file naming the one node (and tier) whose blobs a daemon holds (``claim``)."""
_T = TypeVar("_T")


def normalise_cid(cid: str) -> str | None:
    """The base32 form of a CIDv1 (js-ipfs answers in base58btc), or None if not a CIDv1."""
    try:
        parsed = CID.decode(cid)
    except (ValueError, KeyError):
        return None
    if parsed.version != 1:
        return None
    return str(parsed.encode("base32"))


class _HashingReader(io.RawIOBase):
    """A readable file over an iterable of chunks that hashes and counts what it hands out."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")
        self.hasher = hashlib.sha256()
        self.size = 0
        self.error: BaseException | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            if self.error is not None:
                return 0
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return 0
            except BaseException as exc:
                self.error = exc  # end the upload cleanly; put_stream re-raises this
                return 0
        count = min(len(buffer), len(self._pending))
        buffer[:count] = self._pending[:count]
        self.hasher.update(self._pending[:count])
        self._pending = self._pending[count:]
        self.size += count
        return count


class _SharedExclusiveLock:
    """Many holders in ``shared`` mode or one in ``exclusive`` mode (adds versus GC).

    A waiting exclusive holder blocks new shared holders, so a stream of uploads cannot starve GC.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._exclusive_waiting = 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._condition:
            self._condition.wait_for(lambda: not self._exclusive and not self._exclusive_waiting)
            self._shared += 1
        try:
            yield
        finally:
            with self._condition:
                self._shared -= 1
                self._condition.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._condition:
            self._exclusive_waiting += 1
            self._condition.wait_for(lambda: not self._exclusive and self._shared == 0)
            self._exclusive_waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._condition:
                self._exclusive = False
                self._condition.notify_all()


class IpfsBlobStore:
    """Blob store on an IPFS node reached through its HTTP RPC API."""

    kind = "ipfs"

    def __init__(
        self,
        api_addr: str,
        *,
        timeout: float = 60.0,
        gc_on_delete: bool = True,
        upload_chunk_size: int = _UPLOAD_CHUNK_SIZE,
    ) -> None:
        self.api_addr = api_addr
        self._gc_on_delete = gc_on_delete
        self._gc_guard = _SharedExclusiveLock()
        self._client = ipfshttpclient.Client(
            api_addr, timeout=timeout, chunk_size=upload_chunk_size, session=False
        )

    # ------------------------------------------------------------------ protocol

    def put_stream(self, chunks: Iterable[bytes]) -> BlobRef:
        """Add (CIDv1, raw leaves) while hashing, then pin; a failing ``chunks`` re-raises as is."""
        reader = _HashingReader(chunks)
        with self._gc_guard.shared():
            try:
                response = self._call(
                    lambda: self._client.add(reader, cid_version=1, raw_leaves=True, pin=False)
                )
            finally:
                if reader.error is not None:
                    raise reader.error
            cid = normalise_cid(str(response["Hash"]))
            if cid is None:
                raise BlobStoreError("the IPFS node answered an add with an unexpected CID")
            self._call(lambda: self._client.pin.add(cid))
        return BlobRef(cid=cid, size=reader.size, sha256=reader.hasher.hexdigest())

    def open_stream(self, cid: str) -> Iterator[bytes]:
        """Stream the pinned blob from the node; ``BlobNotFoundError`` now if it is not pinned."""
        canonical = self._require_pinned(cid)
        response = self._call(lambda: self._client.cat(canonical, stream=True))
        return self._guarded(response)

    def exists(self, cid: str) -> bool:
        """True when the blob is pinned on the node."""
        canonical = normalise_cid(cid)
        return canonical is not None and self._is_pinned(canonical)

    def delete(self, cid: str) -> bool:
        """Unpin (then garbage-collect, unless disabled); True if it was pinned."""
        canonical = normalise_cid(cid)
        if canonical is None or not self._is_pinned(canonical):
            return False
        try:
            self._call(lambda: self._client.pin.rm(canonical))
        except BlobStoreUnavailableError as exc:
            if "not pinned" in str(exc.__cause__):
                return False
            raise
        if self._gc_on_delete:
            self.collect_garbage()
        return True

    def verify(self, ref: BlobRef) -> None:
        """Re-read the blob and compare size and SHA-256 with ``ref``; ``FixityError`` if not."""
        hasher, size = hashlib.sha256(), 0
        for chunk in self.open_stream(ref.cid):
            hasher.update(chunk)
            size += len(chunk)
        if size != ref.size or hasher.hexdigest() != ref.sha256:
            raise FixityError(
                f"fixity check failed for {ref.cid}: expected {ref.size} bytes with SHA-256 "
                f"{ref.sha256}, found {size} bytes with SHA-256 {hasher.hexdigest()}"
            )

    def iter_cids(self) -> Iterator[str]:
        """Every recursively pinned CIDv1 on the node, in base32."""
        response = self._call(lambda: self._client.pin.ls(type="recursive"))
        for key in sorted(response["Keys"]):
            canonical = normalise_cid(str(key))
            if canonical is not None:
                yield canonical

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()

    # ------------------------------------------------------------------ maintenance

    def claim(self, owner: str) -> str | None:
        """Record ``owner`` (a node's address and tier) as the one user of this daemon, in an MFS
        file (kept by the garbage collector); returns the *other* owner already recorded there,
        or None (claimed now, or ours already). Two nodes starting at the same moment on one
        fresh daemon can both see it free: the check is for misconfiguration, not a lock."""
        current: str
        try:
            raw: bytes = self._client.files.read(OWNER_FILE)
            current = raw.decode("utf-8", "replace").strip()
        except ipfs_errors.ErrorResponse as exc:
            if "does not exist" not in str(exc):
                raise BlobStoreUnavailableError(f"IPFS owner file unreadable: {exc}") from exc
            current = ""
        except ipfs_errors.Error as exc:
            raise BlobStoreUnavailableError(f"IPFS node unreachable: {exc}") from exc
        if current and current != owner:
            return current
        if not current:
            data = owner.encode("utf-8")
            self._call(
                lambda: self._client.files.write(
                    OWNER_FILE, io.BytesIO(data), create=True, truncate=True
                )
            )
        return None

    def collect_garbage(self) -> None:
        """Run the node's repo garbage collector (removes every unpinned block).

        Waits for this store's adds in progress to be pinned first.
        """
        with self._gc_guard.exclusive():
            self._call(lambda: list(self._client.repo.gc()))

    def version(self) -> str:
        """The daemon's version string (a cheap reachability check)."""
        return str(self._call(self._client.version)["Version"])

    def __repr__(self) -> str:
        return f"IpfsBlobStore(api_addr={self.api_addr!r})"

    # ------------------------------------------------------------------ internals

    def _require_pinned(self, cid: str) -> str:
        canonical = normalise_cid(cid)
        if canonical is None or not self._is_pinned(canonical):
            raise BlobNotFoundError(f"no blob {cid}")
        return canonical

    def _is_pinned(self, canonical: str) -> bool:
        try:
            self._client.pin.ls(canonical, type="recursive")
        except ipfs_errors.ErrorResponse as exc:
            if "not pinned" in str(exc):
                return False
            raise BlobStoreUnavailableError(f"IPFS pin query failed: {exc}") from exc
        except ipfs_errors.Error as exc:
            raise BlobStoreUnavailableError(f"IPFS node unreachable: {exc}") from exc
        return True

    def _call(self, operation: Callable[[], _T]) -> _T:
        try:
            return operation()
        except ipfs_errors.Error as exc:
            raise BlobStoreUnavailableError(f"IPFS request failed: {exc}") from exc

    def _guarded(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        try:
            yield from chunks
        except ipfs_errors.Error as exc:
            raise BlobStoreUnavailableError(f"IPFS read failed: {exc}") from exc

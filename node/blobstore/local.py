"""Local content-addressed blob store: one file per blob, named by its CIDv1 (raw, sha2-256).

Layout under ``root``::

    objects/<sha256[0:2]>/<sha256[2:4]>/<cid base32>   complete blobs, never modified in place
    tmp/put-*.part                                     writes in progress over 1 MiB (same fs)

A blob is visible only once complete and durable:

- up to ``SMALL_BLOB_BYTES`` (on Linux): the bytes are gathered in memory and hashed, written to
  an unnamed file in their shard directory (``O_TMPFILE``), fsynced, linked into place under
  their CID and followed by an fsync of the directory. A crash leaves nothing behind: the kernel
  frees an unnamed file when it is closed.
- larger blobs, or where ``O_TMPFILE`` is missing: a temp file in ``tmp/`` that is fsynced,
  renamed into place and followed by an fsync of the directory. A failed write removes its temp
  file; temp files left by a crash are removed when the store is next opened (if older than an
  hour).

The CID *is* the SHA-256 of the bytes, so fixity needs no other record.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import ctypes
import errno
import hashlib
import itertools
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Final

from multiformats import CID, multihash

from node.blobstore.base import BlobNotFoundError, BlobRef, BlobStoreError, FixityError

__all__ = ["LocalBlobStore", "cid_for_sha256"]

_READ_SIZE: Final = 1 << 20
_STALE_TEMP_SECONDS: Final = 3600.0

SMALL_BLOB_BYTES: Final = 1 << 20
"""Blobs up to this size are written as an unnamed file in their own shard directory, linked into
place, instead of a temp file in the shared ``tmp/`` renamed across directories: less of the
kernel's work and steadier (``scripts/bench_blobstore.py``, 4 KB blobs on the benchmark VM, past
a fresh store's first round: 112-259 against 136-598 us of CPU per blob from one thread, 311-341
against 391-1,333 from sixteen; docs/benchmarks.md, eleventh pass)."""

_O_TMPFILE: Final = getattr(os, "O_TMPFILE", 0) if sys.platform == "linux" else 0
_NO_TMPFILE_ERRNOS: Final = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})
"""What ``open(O_TMPFILE)`` answers on a file system or kernel without it (``open(2)``)."""
_NO_LINK_ERRNOS: Final = frozenset({errno.EXDEV, errno.EPERM})
"""What ``linkat`` through ``/proc/self/fd`` answers where a sandbox or file system refuses it."""


_RAW_SHA256_PREFIX: Final = b"\x01\x55\x12\x20"
"""CIDv1, codec raw (0x55), multihash sha2-256 (0x12) of 32 bytes (0x20): the bytes before the
digest in every CID this store makes."""


def cid_for_sha256(digest: bytes) -> str:
    """The base32 CIDv1 (codec raw, multihash sha2-256) of bytes whose SHA-256 is ``digest``.

    Written out directly (multibase ``b``, RFC 4648 base32 lower case without padding): the same
    string as ``multiformats.CID("base32", 1, "raw", …)``, about a hundred times cheaper, which
    matters to an audit that reads every blob."""
    if len(digest) != 32:
        return str(CID("base32", 1, "raw", multihash.wrap(digest, "sha2-256")))
    return "b" + base64.b32encode(_RAW_SHA256_PREFIX + digest).decode("ascii").lower().rstrip("=")


def object_file(objects: str, cid: str) -> str | None:
    """The file under the ``objects`` directory of a local store that holds the blob ``cid``
    (what ``LocalBlobStore.path_of`` names), None when ``cid`` is not a raw sha2-256 CIDv1. A
    string, not a ``Path``: the hashing processes of a fixity audit name thousands a second."""
    digest = _digest_of(cid)
    if digest is None:
        return None
    hex_digest = digest.hex()
    return f"{objects}/{hex_digest[:2]}/{hex_digest[2:4]}/{cid_for_sha256(digest)}"


def _digest_of(cid: str) -> bytes | None:
    """The SHA-256 inside a raw sha2-256 CIDv1 (any multibase), or None if ``cid`` is not one."""
    if len(cid) == 59 and cid.startswith("b"):  # base32 lower case, this store's own form
        try:
            raw = base64.b32decode(cid[1:].upper() + "======")
        except (ValueError, binascii.Error):
            raw = b""
        if len(raw) == 36 and raw.startswith(_RAW_SHA256_PREFIX) and cid[1:].islower():
            return raw[4:]
    try:
        parsed = CID.decode(cid)
    except (ValueError, KeyError, IndexError):  # IndexError: multiformats on "b" and the like
        return None
    if parsed.version != 1 or parsed.codec.name != "raw" or parsed.hashfun.name != "sha2-256":
        return None
    digest = bytes(parsed.raw_digest)
    return digest if len(digest) == 32 else None


class LocalBlobStore:
    """Blob store in a local directory (the embedded default)."""

    kind = "local"

    def __init__(
        self,
        root: Path | str,
        *,
        read_size: int = _READ_SIZE,
        stale_temp_seconds: float = _STALE_TEMP_SECONDS,
    ) -> None:
        self.root = Path(root)
        self._objects = self.root / "objects"
        self._temp = self.root / "tmp"
        self._read_size = read_size
        self._unnamed_files = bool(_O_TMPFILE)  # False once the file system refused them
        self._objects.mkdir(parents=True, exist_ok=True)
        self._temp.mkdir(parents=True, exist_ok=True)
        self.remove_stale_temp_files(stale_temp_seconds)

    # ------------------------------------------------------------------ protocol

    def put_stream(self, chunks: Iterable[bytes], *, durable: bool = True) -> BlobRef:
        """Store ``chunks`` under their CID, complete and (unless told otherwise) durable;
        idempotent. A blob of up to ``SMALL_BLOB_BYTES`` is linked into place from an unnamed
        file, a larger one renamed into place from ``tmp/`` (module docstring).

        ``durable=False`` skips the file's and directories' fsyncs: the caller must call
        ``make_durable`` before it records the blob anywhere (a batch then syncs once)."""
        if not self._unnamed_files:
            return self._put_renamed(chunks, durable=durable)
        pieces = iter(chunks)
        head: list[bytes] = []
        size = 0
        for chunk in pieces:
            head.append(chunk)
            size += len(chunk)
            if size > SMALL_BLOB_BYTES:
                return self._put_renamed(itertools.chain(head, pieces), durable=durable)
        data = b"".join(head)
        digest = hashlib.sha256(data).digest()
        cid = cid_for_sha256(digest)
        if self._put_linked(self._path(digest, cid), data, durable):
            return BlobRef(cid=cid, size=size, sha256=digest.hex())
        return self._put_renamed([data], durable=durable)

    def _put_linked(self, target: Path, data: bytes, durable: bool) -> bool:
        """Write ``data`` to an unnamed file in ``target``'s directory, fsync it (``durable``),
        link it there and fsync the directory; False (nothing stored) when the file system has
        no unnamed files or ``target`` exists (the caller then renames over it, as a repair of
        a damaged blob needs)."""
        try:
            descriptor = self._open_unnamed(target.parent)
        except FileNotFoundError:
            # The first blob of its shard (or a wiped store): make the directories, once.
            self._make_shard_dirs(target.parent, durable=durable)
            descriptor = self._open_unnamed(target.parent)
        if descriptor is None:
            return False
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            if durable:
                os.fsync(descriptor)  # the bytes before the name: never a named, partial blob
            try:
                _link_unnamed(descriptor, target)
            except FileNotFoundError:
                if not Path("/proc/self/fd").is_dir():
                    self._unnamed_files = False  # no /proc here: nothing to link from
                    return False
                # The shard directory was removed meanwhile (a wiped store): made again, and
                # the still-open file linked into it.
                self._make_shard_dirs(target.parent, durable=durable)
                _link_unnamed(descriptor, target)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_LINK_ERRNOS:
                raise
            self._unnamed_files = False  # a sandbox that refuses the link through /proc
            return False
        finally:
            os.close(descriptor)
        if durable:
            _fsync_directory(target.parent)
        return True

    def _open_unnamed(self, directory: Path) -> int | None:
        """A new unnamed file in ``directory`` open for writing; None (and never asked again)
        when the file system or kernel has none. ``FileNotFoundError`` if ``directory`` is
        missing."""
        try:
            return os.open(directory, os.O_WRONLY | _O_TMPFILE, 0o600)
        except OSError as exc:
            if exc.errno not in _NO_TMPFILE_ERRNOS:
                raise
            self._unnamed_files = False
            return None

    def _put_renamed(self, chunks: Iterable[bytes], *, durable: bool) -> BlobRef:
        """Write ``chunks`` to a temp file in ``tmp/``, fsync, rename to its CID path."""
        descriptor, temp_name = self._temp_file()
        try:
            hasher, size = hashlib.sha256(), 0
            with os.fdopen(descriptor, "wb") as handle:
                for chunk in chunks:
                    handle.write(chunk)
                    hasher.update(chunk)
                    size += len(chunk)
                handle.flush()
                if durable:
                    os.fsync(handle.fileno())
            digest = hasher.digest()
            cid = cid_for_sha256(digest)
            target = self._path(digest, cid)
            try:
                os.replace(temp_name, target)
            except FileNotFoundError:
                # The first blob of its shard (or a wiped store): make the directories, once.
                if not os.path.exists(temp_name):
                    raise
                self._make_shard_dirs(target.parent, durable=durable)
                os.replace(temp_name, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp_name)
            raise
        if durable:
            _fsync_directory(target.parent)
        return BlobRef(cid=cid, size=size, sha256=digest.hex())

    def make_durable(self, refs: Iterable[BlobRef]) -> None:
        """Make blobs stored with ``durable=False`` durable: on Linux one ``syncfs`` of the
        store's file system (files, renames and new directories at once: one call instead of
        three fsyncs per blob); elsewhere each file, its directory and its parents fsynced."""
        refs = list(refs)
        if not refs:
            return
        if _syncfs(self._objects):
            return
        directories: set[Path] = set()
        for ref in refs:
            path = self.path_of(ref.cid)
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
            directories.update((path.parent, path.parent.parent, self._objects))
        for directory in sorted(directories, key=lambda d: len(d.parts), reverse=True):
            _fsync_directory(directory)

    def open_stream(self, cid: str) -> Iterator[bytes]:
        """Stream the blob in ``read_size`` pieces; ``BlobNotFoundError`` now if it is absent."""
        handle = self._open(cid)
        return _read_all(handle, self._read_size)

    def exists(self, cid: str) -> bool:
        """True when a complete blob with this CID is stored."""
        digest = _digest_of(cid)
        return digest is not None and self._path(digest).is_file()

    def delete(self, cid: str) -> bool:
        """Remove the blob (and make the removal durable); True if it was there."""
        digest = _digest_of(cid)
        if digest is None:
            return False
        target = self._path(digest)
        try:
            target.unlink()
        except FileNotFoundError:
            return False
        _fsync_directory(target.parent)
        return True

    def delete_many(self, cids: Iterable[str]) -> list[bool]:
        """Remove several blobs, durably, with one directory fsync per distinct parent after all
        the unlinks (the first fsync commits the file system's journal for every unlink before
        it, so the others cost little): per CID, True if it was there."""
        removed: list[bool] = []
        parents: dict[Path, None] = {}
        for cid in cids:
            digest = _digest_of(cid)
            if digest is None:
                removed.append(False)
                continue
            target = self._path(digest)
            try:
                target.unlink()
            except FileNotFoundError:
                removed.append(False)
                continue
            parents[target.parent] = None
            removed.append(True)
        for parent in parents:
            _fsync_directory(parent)
        return removed

    def verify(self, ref: BlobRef) -> None:
        """Re-hash the stored file; ``FixityError`` unless it matches ``ref`` and its own CID."""
        digest = _digest_of(ref.cid)
        if digest is None or digest.hex() != ref.sha256:
            raise FixityError(f"blob reference {ref.cid} does not name SHA-256 {ref.sha256}")
        size, actual = self._hash_file(ref.cid)
        if size != ref.size or actual != digest:
            raise FixityError(
                f"fixity check failed for {ref.cid}: expected {ref.size} bytes with SHA-256 "
                f"{ref.sha256}, found {size} bytes with SHA-256 {actual.hex()}"
            )

    def verify_cid(self, cid: str) -> None:
        """Fixity check from the CID alone (the CID is the SHA-256 of the content)."""
        digest = _digest_of(cid)
        if digest is None:
            raise BlobNotFoundError(f"no blob {cid} (not a raw sha2-256 CIDv1)")
        _size, actual = self._hash_file(cid)
        if actual != digest:
            raise FixityError(f"fixity check failed for {cid}: found SHA-256 {actual.hex()}")

    def iter_cids(self) -> Iterator[str]:
        """Every stored CID (walks the shard directories; temp files are never listed)."""
        for first in sorted(self._objects.iterdir()):
            for second in sorted(first.iterdir()) if first.is_dir() else ():
                for entry in sorted(second.iterdir()) if second.is_dir() else ():
                    if entry.is_file():
                        yield entry.name

    def close(self) -> None:
        """Nothing to release (files are opened per call)."""

    # ------------------------------------------------------------------ maintenance

    def remove_stale_temp_files(self, older_than_seconds: float) -> int:
        """Delete temp files untouched for ``older_than_seconds`` (left by a crash); count them."""
        cutoff = time.time() - older_than_seconds
        removed = 0
        for entry in self._temp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if entry.is_file() and entry.stat().st_mtime < cutoff:
                    entry.unlink()
                    removed += 1
        return removed

    def temp_files(self) -> list[Path]:
        """Temp files currently present (writes in progress or crash leftovers)."""
        try:
            return sorted(self._temp.iterdir())
        except FileNotFoundError:  # wiped; made again by the next write that needs it
            return []

    @property
    def objects_dir(self) -> str:
        """The directory the blob files are under (``object_file`` names each)."""
        return str(self._objects)

    def path_of(self, cid: str) -> Path:
        """Filesystem path of a stored blob (for tests and operators; do not write to it)."""
        digest = _digest_of(cid)
        if digest is None:
            raise BlobNotFoundError(f"no blob {cid} (not a raw sha2-256 CIDv1)")
        return self._path(digest)

    def __repr__(self) -> str:
        return f"LocalBlobStore(root={str(self.root)!r})"

    # ------------------------------------------------------------------ internals

    def _path(self, digest: bytes, cid: str | None = None) -> Path:
        hex_digest = digest.hex()
        return self._objects / hex_digest[:2] / hex_digest[2:4] / (cid or cid_for_sha256(digest))

    def _temp_file(self) -> tuple[int, str]:
        """A new temp file (descriptor, name); the temp directory is made again if it was wiped
        (a repair writes into a store whose directories were lost)."""
        try:
            return tempfile.mkstemp(prefix="put-", suffix=".part", dir=self._temp)
        except FileNotFoundError:
            self._temp.mkdir(parents=True, exist_ok=True)
            return tempfile.mkstemp(prefix="put-", suffix=".part", dir=self._temp)

    def _open(self, cid: str) -> BinaryIO:
        try:
            return self.path_of(cid).open("rb")
        except FileNotFoundError:
            raise BlobNotFoundError(f"no blob {cid}") from None
        except OSError as exc:
            raise BlobStoreError(f"cannot read blob {cid}: {exc.strerror}") from exc

    def _hash_file(self, cid: str) -> tuple[int, bytes]:
        hasher, size = hashlib.sha256(), 0
        for chunk in _read_all(self._open(cid), self._read_size):
            hasher.update(chunk)
            size += len(chunk)
        return size, hasher.digest()

    def _make_shard_dirs(self, directory: Path, *, durable: bool = True) -> None:
        """Make ``objects/xx/yy`` (and ``objects`` itself after a wipe), each level's parent
        fsynced when ``durable``. Called only when a write found the directory missing, so a
        put into an existing shard costs no ``stat`` or ``mkdir``."""
        for level in (self._objects, directory.parent, directory):
            if not level.is_dir():
                level.mkdir(parents=True, exist_ok=True)
            if durable:
                # Also when another thread made the level: its fsync may not have run yet.
                _fsync_directory(level.parent)


def _link_unnamed(descriptor: int, target: Path) -> None:
    """Give the unnamed file open as ``descriptor`` the name ``target`` (the recipe of open(2)
    for ``O_TMPFILE``). ``src_dir_fd`` makes ``os.link`` call linkat(2), which with
    ``follow_symlinks`` follows the /proc link to the file; the path is absolute, so the
    descriptor is not used to resolve it."""
    os.link(f"/proc/self/fd/{descriptor}", target, src_dir_fd=descriptor, follow_symlinks=True)


def _read_all(handle: BinaryIO, read_size: int) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(read_size):
            yield chunk


def _syncfs(path: Path) -> bool:
    """``syncfs(2)`` of the file system holding ``path`` (Linux); False where unavailable.
    A failure to sync is an error (``BlobStoreError``), never silently ignored."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        return False
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if syncfs(descriptor) != 0:
            errno = ctypes.get_errno()
            raise BlobStoreError(f"syncfs failed: {os.strerror(errno)}")
    finally:
        os.close(descriptor)
    return True


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)

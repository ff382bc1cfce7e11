"""SHA-256 of blob files in worker processes (unthrottled fixity audits of the local store).

A fixity audit's reader threads share the GIL with the thread that logs the FIXITY_CHECK
events; at small blob sizes their per-file Python work and GIL hand-overs slow that thread down
more than the hashing itself costs (docs/benchmarks.md, *Fixity audit*). ``FileHasher`` moves
naming, opening, reading and hashing into a small pool of worker processes: they receive the
store's directory and CIDs and return hex digests and sizes, never file contents.

Each worker exits when the process that started it is gone (a node killed with ``kill -9``
leaves no hashing process behind for longer than ``PARENT_POLL_SECONDS``).
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from node.blobstore.local import object_file

MISSING = "missing"
"""A path that names no file."""
UNREADABLE = "unreadable"
"""A path that could not be opened or read (the exception's type name follows a colon)."""
PARENT_POLL_SECONDS = 1.0

FileDigest = tuple[str, int] | str
"""``(hex SHA-256, size)`` of a file, or ``MISSING``, or ``"unreadable:<ExceptionType>"``."""


def hash_blobs(objects: str, cids: list[str], read_size: int) -> list[FileDigest]:
    """The SHA-256 and size of the file of each CID of ``cids`` in the local store whose blob
    files are under ``objects`` (a CID that is not a raw sha2-256 CIDv1 is ``MISSING``, as the
    store finds no blob for it), read in ``read_size`` pieces. Runs in a worker process."""
    return hash_files([object_file(objects, cid) for cid in cids], read_size)


def hash_files(paths: list[str | None], read_size: int) -> list[FileDigest]:
    """The SHA-256 and size of each file of ``paths`` (None: no file, reported ``MISSING``),
    read in ``read_size`` pieces."""
    results: list[FileDigest] = []
    buffer = bytearray(read_size)
    view = memoryview(buffer)
    for path in paths:
        if path is None:
            results.append(MISSING)
            continue
        hasher, size = hashlib.sha256(), 0
        try:
            with open(path, "rb", buffering=0) as handle:
                while count := handle.readinto(buffer):
                    hasher.update(view[:count])
                    size += count
        except FileNotFoundError:
            results.append(MISSING)
            continue
        except OSError as exc:
            results.append(f"{UNREADABLE}:{type(exc).__name__}")
            continue
        results.append((hasher.hexdigest(), size))
    return results


def _exit_with_parent(parent: int) -> None:
    """Worker initializer: a daemon thread ends the worker once ``parent`` is no longer its
    parent (the node or the forkserver died and the worker was adopted)."""

    def watch() -> None:
        while True:
            time.sleep(PARENT_POLL_SECONDS)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGKILL)  # nothing to flush: it only hashes

    threading.Thread(target=watch, name="blobhash-parent-watch", daemon=True).start()


class FileHasher:
    """A pool of ``workers`` processes running ``hash_blobs``, started on first use (``spawn``:
    forking a process with database and HTTP threads is unsafe), closed by ``close``."""

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError("a FileHasher needs at least one worker")
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, objects: str, cids: list[str], read_size: int) -> Future[list[FileDigest]]:
        """``hash_blobs`` in a worker process; the future's list is in the order of ``cids``.
        A pool broken by a worker's death (killed, out of memory) is replaced here, so only the
        tasks it held fail (with ``BrokenProcessPool``), not every later audit."""
        pool = self._started()
        try:
            return pool.submit(hash_blobs, objects, cids, read_size)
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            return self._started().submit(hash_blobs, objects, cids, read_size)

    def close(self) -> None:
        """Stop the workers (those hashing finish their list first); a later ``submit`` starts
        new ones."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _started(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_exit_with_parent,
                    initargs=(os.getpid(),),
                )
            return self._pool

"""Blob stores: one contract test class run against the local store and a real js-ipfs daemon,
then what is specific to each (fixity of corrupted files, temp files, GC, daemon crash/restart)."""

from __future__ import annotations

import errno
import hashlib
import os
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import ipfshttpclient
import pytest
from multiformats import CID

from devtools.ipfsdev import IpfsDaemon, IpfsDevError
from node.blobstore import (
    BlobNotFoundError,
    BlobRef,
    BlobStore,
    BlobStoreError,
    BlobStoreUnavailableError,
    DeferredSyncStore,
    FixityError,
    open_blob_store,
)
from node.blobstore.ipfs import IpfsBlobStore
from node.blobstore.local import LocalBlobStore, cid_for_sha256
from node.errors import ConfigError, UnavailableError
from node.ports import free_port
from tests.fixtures.ipfs import start_ipfs_daemon

MIB = 1 << 20


class WriterFailed(Exception):
    """Raised by a test iterator in the middle of a write."""


def _failing_after(pieces: list[bytes]) -> Iterator[bytes]:
    yield from pieces
    raise WriterFailed("source broke mid-stream")


def _read(store: BlobStore, cid: str) -> bytes:
    return b"".join(store.open_stream(cid))


@pytest.fixture(params=["local", "ipfs"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        opened = open_blob_store("local", local_root=tmp_path / "blobs")
    else:
        daemon: IpfsDaemon = request.getfixturevalue("ipfs_daemon")
        opened = open_blob_store("ipfs", ipfs_api=daemon.api_addr)
    assert opened.kind == request.param
    assert isinstance(opened, BlobStore)
    yield opened
    opened.close()


class TestBlobStoreContract:
    """What every store promises. Content is random per test: the IPFS daemon is shared."""

    @pytest.mark.parametrize("size", [0, 1, 1000, 256 * 1024 + 1, 3 * MIB + 17])
    def test_put_then_stream_back(self, store: BlobStore, size: int) -> None:
        data = os.urandom(size)
        pieces = [data[index : index + 65_536] for index in range(0, size, 65_536)] or [b""]
        ref = store.put_stream(iter(pieces))
        assert ref.size == size
        assert ref.sha256 == hashlib.sha256(data).hexdigest()
        assert CID.decode(ref.cid).version == 1
        assert ref.cid == str(CID.decode(ref.cid).encode("base32"))  # canonical base32 form
        assert store.exists(ref.cid)
        assert _read(store, ref.cid) == data
        assert ref.cid in set(store.iter_cids())
        store.verify(ref)

    def test_a_single_block_blob_is_addressed_by_its_raw_sha256(self, store: BlobStore) -> None:
        data = os.urandom(4096)
        ref = store.put_stream([data])
        assert ref.cid == cid_for_sha256(hashlib.sha256(data).digest())
        assert ref.cid.startswith("bafkrei")

    def test_put_is_idempotent(self, store: BlobStore) -> None:
        data = os.urandom(5000)
        first = store.put_stream([data])
        second = store.put_stream([data[:10], data[10:]])
        assert first == second
        assert list(store.iter_cids()).count(first.cid) == 1
        assert _read(store, first.cid) == data

    def test_unknown_and_malformed_cids(self, store: BlobStore) -> None:
        absent = cid_for_sha256(hashlib.sha256(os.urandom(32)).digest())
        for cid in (absent, "", "../../etc/passwd", "bafkrei", "not a cid", "/ip4/127.0.0.1"):
            assert not store.exists(cid)
            with pytest.raises(BlobNotFoundError):
                store.open_stream(cid)  # raised at the call, before any iteration
            assert store.delete(cid) is False

    def test_delete(self, store: BlobStore) -> None:
        ref = store.put_stream([os.urandom(2000)])
        assert store.delete(ref.cid) is True
        assert not store.exists(ref.cid)
        assert ref.cid not in set(store.iter_cids())
        with pytest.raises(BlobNotFoundError):
            store.open_stream(ref.cid)
        with pytest.raises(BlobNotFoundError):
            store.verify(ref)
        assert store.delete(ref.cid) is False

    def test_verify_refuses_a_wrong_reference(self, store: BlobStore) -> None:
        data = os.urandom(3000)
        ref = store.put_stream([data])
        store.verify(ref)
        with pytest.raises(FixityError):
            store.verify(BlobRef(ref.cid, ref.size + 1, ref.sha256))
        with pytest.raises(FixityError):
            store.verify(BlobRef(ref.cid, ref.size, hashlib.sha256(b"other").hexdigest()))

    def test_large_blob_streams_in_bounded_memory(self, store: BlobStore) -> None:
        blocks = [os.urandom(MIB) for _ in range(4)]
        expected = hashlib.sha256()
        for index in range(64):
            expected.update(blocks[index % 4])
        tracemalloc.start()
        try:
            started = time.perf_counter()
            ref = store.put_stream(blocks[index % 4] for index in range(64))
            written = time.perf_counter() - started
            _current, put_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            actual, size = hashlib.sha256(), 0
            started = time.perf_counter()
            for chunk in store.open_stream(ref.cid):
                actual.update(chunk)
                size += len(chunk)
            read = time.perf_counter() - started
            _current, read_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert ref.size == size == 64 * MIB
        assert ref.sha256 == actual.hexdigest() == expected.hexdigest()
        assert put_peak < 8 * MIB, put_peak
        assert read_peak < 8 * MIB, read_peak
        print(
            f"\n{store.kind}: put 64 MiB {64 / written:.0f} MiB/s (peak {put_peak / MIB:.1f} MiB),"
            f" read {64 / read:.0f} MiB/s (peak {read_peak / MIB:.1f} MiB)"
        )

    def test_a_failed_write_leaves_nothing(self, store: BlobStore) -> None:
        before = set(store.iter_cids())
        pieces = [os.urandom(MIB) for _ in range(3)]
        with pytest.raises(WriterFailed):  # the caller's own exception, unchanged
            store.put_stream(_failing_after(pieces))
        assert set(store.iter_cids()) == before
        prefix = b"".join(pieces)
        assert not store.exists(cid_for_sha256(hashlib.sha256(prefix).digest()))
        assert not store.exists(cid_for_sha256(hashlib.sha256(pieces[0]).digest()))


# ------------------------------------------------------------------------------------ local only


def _record_links(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Path]]:
    """Every link the local store makes from now on, as (what the source named, target)."""
    import node.blobstore.local as local_module

    linked: list[tuple[str, Path]] = []
    real_link = os.link

    def link(source: str, target: Path, **kwargs: object) -> None:
        linked.append((os.readlink(source), target))
        real_link(source, target, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(local_module.os, "link", link)
    return linked


@pytest.fixture
def local(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


class TestLocalBlobStore:
    def test_sharded_layout(self, local: LocalBlobStore, tmp_path: Path) -> None:
        data = os.urandom(100)
        ref = local.put_stream([data])
        digest = hashlib.sha256(data).hexdigest()
        expected = tmp_path / "blobs" / "objects" / digest[:2] / digest[2:4] / ref.cid
        assert local.path_of(ref.cid) == expected
        assert expected.read_bytes() == data

    @pytest.mark.parametrize("way", ["linked", "renamed"])
    def test_a_put_makes_missing_directories_durably_and_only_when_missing(
        self, local: LocalBlobStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str
    ) -> None:
        import shutil

        import node.blobstore.local as local_module

        if way == "renamed":  # 100-byte blobs take the path of large ones, through tmp/
            monkeypatch.setattr(local_module, "SMALL_BLOB_BYTES", 50)

        synced: list[Path] = []
        made: list[Path] = []
        real_fsync, real_mkdir = os.fsync, Path.mkdir

        def fsync(descriptor: int) -> None:
            synced.append(Path(os.readlink(f"/proc/self/fd/{descriptor}")))
            real_fsync(descriptor)

        def mkdir(self: Path, *args: object, **kwargs: object) -> None:
            made.append(self)
            real_mkdir(self, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(local_module.os, "fsync", fsync)
        monkeypatch.setattr(Path, "mkdir", mkdir)
        root = tmp_path / "blobs"
        # A wiped store (objects and tmp gone, as in a disaster drill) is written again.
        shutil.rmtree(root / "objects")
        shutil.rmtree(root / "tmp")
        data = os.urandom(100)
        ref = local.put_stream([data])
        target = local.path_of(ref.cid)
        digest_hex = hashlib.sha256(data).hexdigest()
        assert target.read_bytes() == data
        assert local.temp_files() == []
        # Each new level's parent was fsynced, then the file and its directory.
        assert {root, root / "objects", target.parent.parent, target.parent} <= set(synced)
        assert {root / "objects", target.parent.parent, target.parent} <= set(made)
        # tmp/ is made again only by a write that goes through it.
        assert (root / "tmp" in made) == (way == "renamed")
        # Another put into an existing shard makes no shard directory.
        made.clear()
        synced.clear()
        again = local.put_stream([data])  # the same blob: idempotent
        assert again == ref
        assert not [level for level in made if level.is_relative_to(root / "objects")]
        assert synced[-1] == target.parent
        # A level another thread made (and may not have fsynced yet) is fsynced in its parent
        # by a durable put too: objects/xx made behind the store's back, then a blob under it.
        data2 = next(
            b
            for b in iter(lambda: os.urandom(32), b"")
            if hashlib.sha256(b).hexdigest()[:2] != digest_hex[:2]
        )
        shard = root / "objects" / hashlib.sha256(data2).hexdigest()[:2]
        real_mkdir(shard)
        synced.clear()
        placed = local.put_stream([data2])
        assert {root / "objects", shard, local.path_of(placed.cid).parent} <= set(synced)
        # A blob whose temp file vanished mid-write (the drill's rmtree) fails, leaving nothing.
        real_replace = os.replace

        def vanish(source: str, destination: Path) -> None:
            os.unlink(source)
            real_replace(source, destination)

        monkeypatch.setattr(local_module.os, "replace", vanish)
        monkeypatch.setattr(local_module, "SMALL_BLOB_BYTES", 50)
        with pytest.raises(FileNotFoundError):
            local.put_stream([os.urandom(100)])
        assert local.temp_files() == []

    def test_a_small_blob_is_linked_into_place_from_an_unnamed_file(
        self, local: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import node.blobstore.local as local_module

        linked = _record_links(monkeypatch)
        renamed: list[object] = []
        real_replace = os.replace

        def replace(source: str, target: Path) -> None:
            renamed.append(target)
            real_replace(source, target)

        monkeypatch.setattr(local_module.os, "replace", replace)
        small = [os.urandom(1000) for _ in range(3)]  # several chunks, one blob
        ref = local.put_stream(small)
        assert _read(local, ref.cid) == b"".join(small)
        assert ref.size == 3000
        target = local.path_of(ref.cid)
        # Written in its own shard directory, as a file with no name until linked there.
        assert len(linked) == 1
        assert linked[0][1] == target
        assert linked[0][0].startswith(f"{target.parent}/#")
        assert linked[0][0].endswith("(deleted)")
        assert renamed == []
        assert [entry.name for entry in target.parent.iterdir()] == [ref.cid]
        assert local.temp_files() == []
        # A blob just over the limit goes through tmp/ and a rename.
        large = os.urandom(local_module.SMALL_BLOB_BYTES + 1)
        big = local.put_stream([large[:1000], large[1000:]])
        assert set(renamed) == {local.path_of(big.cid)}  # retried once its shard was made
        assert len(linked) == 1
        assert _read(local, big.cid) == large

    def test_a_small_blob_is_synced_before_it_is_named_and_its_directory_after(
        self, local: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import node.blobstore.local as local_module

        events: list[tuple[str, str]] = []
        real_fsync, real_link = os.fsync, os.link

        def fsync(descriptor: int) -> None:
            events.append(("fsync", os.readlink(f"/proc/self/fd/{descriptor}")))
            real_fsync(descriptor)

        def link(source: str, target: Path, **kwargs: object) -> None:
            events.append(("link", str(target)))
            real_link(source, target, **kwargs)  # type: ignore[arg-type]

        data = os.urandom(100)
        target = local.path_of(cid_for_sha256(hashlib.sha256(data).digest()))
        target.parent.mkdir(parents=True)  # its shard exists: no directory is made or synced
        monkeypatch.setattr(local_module.os, "fsync", fsync)
        monkeypatch.setattr(local_module.os, "link", link)
        fds_before = len(os.listdir("/proc/self/fd"))
        local.put_stream([data])
        assert len(events) == 3, events
        (first, unnamed), (second, named), (third, directory) = events
        assert (first, second, third) == ("fsync", "link", "fsync")
        assert unnamed.startswith(f"{target.parent}/#")
        assert unnamed.endswith("(deleted)")
        assert (named, directory) == (str(target), str(target.parent))
        assert len(os.listdir("/proc/self/fd")) == fds_before  # the unnamed file was closed
        events.clear()
        local.put_stream([os.urandom(100)], durable=False)  # durable later, by make_durable
        assert [kind for kind, _ in events] == ["link"]

    def test_a_shard_removed_before_the_link_is_made_again(
        self, local: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import shutil

        import node.blobstore.local as local_module

        real_link = os.link
        removed: list[Path] = []

        def wipe_then_link(source: str, target: Path, **kwargs: object) -> None:
            if not removed:  # the drill's rmtree between the write and the link
                removed.append(Path(target).parent)
                shutil.rmtree(Path(target).parent)
            real_link(source, target, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(local_module.os, "link", wipe_then_link)
        data = os.urandom(100)
        ref = local.put_stream([data])
        assert removed == [local.path_of(ref.cid).parent]
        assert _read(local, ref.cid) == data
        # Without /proc there is nothing to link from: written by rename, and from then on.
        monkeypatch.setattr(local_module.os, "link", real_link)
        real_is_dir = Path.is_dir

        def no_proc(self: Path) -> bool:
            return False if str(self) == "/proc/self/fd" else real_is_dir(self)

        attempts: list[str] = []

        def missing(source: str, target: Path, **kwargs: object) -> None:
            attempts.append(source)
            raise FileNotFoundError(2, "No such file or directory", source)

        monkeypatch.setattr(Path, "is_dir", no_proc)
        monkeypatch.setattr(local_module.os, "link", missing)
        other = local.put_stream([b"no proc"])
        assert _read(local, other.cid) == b"no proc"
        assert local.put_stream([b"no proc either"]).size == 14
        assert len(attempts) == 1  # not asked again
        # With /proc present, a link that finds no file twice is an error, not a fallback.
        monkeypatch.setattr(Path, "is_dir", real_is_dir)
        fresh = LocalBlobStore(local.root)
        with pytest.raises(FileNotFoundError):
            fresh.put_stream([b"vanishing"])

    @pytest.mark.parametrize("refusal", [errno.EXDEV, errno.EPERM])
    def test_a_sandbox_that_refuses_the_link_gets_renamed_writes(
        self, local: LocalBlobStore, monkeypatch: pytest.MonkeyPatch, refusal: int
    ) -> None:
        import node.blobstore.local as local_module

        tried: list[Path] = []

        def refuse(source: str, target: Path, **kwargs: object) -> None:
            tried.append(target)
            raise OSError(refusal, os.strerror(refusal))

        monkeypatch.setattr(local_module.os, "link", refuse)
        refs = [local.put_stream([os.urandom(100)]) for _ in range(3)]
        assert len(tried) == 1
        assert all(local.exists(ref.cid) for ref in refs)

    def test_an_error_making_a_shard_is_not_taken_for_a_missing_feature(
        self, local: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def failing_dirs(directory: Path, *, durable: bool = True) -> None:
            raise OSError(errno.EINVAL, "Invalid argument")  # e.g. a directory fsync refused

        monkeypatch.setattr(local, "_make_shard_dirs", failing_dirs)
        with pytest.raises(OSError, match="Invalid argument"):
            local.put_stream([os.urandom(100)])
        monkeypatch.undo()
        linked = _record_links(monkeypatch)
        local.put_stream([os.urandom(100)])
        assert len(linked) == 1  # unnamed files are still used

    def test_a_failed_small_write_leaves_nothing_in_the_shard(
        self, local: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import errno

        import node.blobstore.local as local_module

        data = os.urandom(5000)
        target = local.path_of(cid_for_sha256(hashlib.sha256(data).digest()))
        real_write = os.write

        def full_disk(descriptor: int, payload: bytes) -> int:
            real_write(descriptor, payload[:100])  # some bytes reach the unnamed file
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(local_module.os, "write", full_disk)
        with pytest.raises(OSError, match="No space"):
            local.put_stream([data])
        assert list(target.parent.iterdir()) == []  # its shard was made, and holds nothing
        assert local.temp_files() == []
        assert list(local.iter_cids()) == []

    @pytest.mark.parametrize("refusal", [errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL])
    def test_a_file_system_without_unnamed_files_gets_renamed_writes(
        self, local: LocalBlobStore, monkeypatch: pytest.MonkeyPatch, refusal: int
    ) -> None:
        import node.blobstore.local as local_module

        tried: list[str] = []
        real_open = os.open

        def open_(path: str, flags: int, mode: int = 0o777, **kwargs: object) -> int:
            if flags & local_module._O_TMPFILE == local_module._O_TMPFILE:
                tried.append(str(path))
                raise OSError(refusal, os.strerror(refusal))
            return real_open(path, flags, mode, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(local_module.os, "open", open_)
        refs = [local.put_stream([os.urandom(100)]) for _ in range(3)]
        assert len(tried) == 1  # asked once, then never again
        assert all(local.exists(ref.cid) for ref in refs)
        assert local.temp_files() == []
        # Any other error of the open is the caller's, not a reason to fall back.
        fresh = LocalBlobStore(local.root)
        monkeypatch.setattr(local_module.os, "open", real_open)

        def denied(path: str, flags: int, mode: int = 0o777, **kwargs: object) -> int:
            if flags & local_module._O_TMPFILE == local_module._O_TMPFILE:
                raise PermissionError(errno.EACCES, "Permission denied")
            return real_open(path, flags, mode, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(local_module.os, "open", denied)
        with pytest.raises(PermissionError):
            fresh.put_stream([os.urandom(100)])

    def test_delete_many_removes_each_and_says_which_were_there(
        self, local: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        refs = [local.put_stream([os.urandom(64)]) for _ in range(5)]
        keep = local.put_stream([os.urandom(64)])
        local.delete(refs[1].cid)
        synced: list[Path] = []
        real_fsync = os.fsync

        def fsync(descriptor: int) -> None:
            synced.append(Path(os.readlink(f"/proc/self/fd/{descriptor}")))
            real_fsync(descriptor)

        monkeypatch.setattr(os, "fsync", fsync)
        cids = [r.cid for r in refs] + ["not-a-cid"]
        assert local.delete_many(cids) == [True, False, True, True, True, False]
        assert not any(local.exists(r.cid) for r in refs)
        assert local.exists(keep.cid)
        # each removal made durable: the directory of every removed blob was fsynced, once
        removed = [local.path_of(r.cid).parent for i, r in enumerate(refs) if i != 1]
        assert sorted(synced) == sorted(set(removed))

    def test_other_multibase_spellings_of_a_cid_are_accepted(self, local: LocalBlobStore) -> None:
        data = os.urandom(100)
        ref = local.put_stream([data])
        base58 = str(CID.decode(ref.cid).encode("base58btc"))
        assert base58 != ref.cid
        assert local.exists(base58)
        assert _read(local, base58) == data

    def test_non_raw_cids_are_never_found(self, local: LocalBlobStore) -> None:
        dag_pb = "bafybeifrlajv3wgul3hoks4dnshre353sw6eyythbvtcgfzuoij7nvjgkm"
        cid_v0 = "QmTkzDwWqPbnAh5YiV5VwcTLnGdwSNsNTn2aDxdXBFca7D"
        for cid in (dag_pb, cid_v0):
            assert not local.exists(cid)
            with pytest.raises(BlobNotFoundError):
                local.open_stream(cid)

    @pytest.mark.parametrize("damage", ["flip", "truncate", "append", "replace"])
    def test_corruption_is_caught_by_the_fixity_check(
        self, local: LocalBlobStore, damage: str
    ) -> None:
        data = os.urandom(10_000)
        ref = local.put_stream([data])
        path = local.path_of(ref.cid)
        damaged = bytearray(data)
        if damage == "flip":
            damaged[5000] ^= 0x01
        elif damage == "truncate":
            del damaged[-1]
        elif damage == "append":
            damaged += b"\x00"
        else:
            damaged = bytearray(os.urandom(len(data)))
        path.write_bytes(bytes(damaged))
        with pytest.raises(FixityError) as caught:
            local.verify(ref)
        assert ref.cid in str(caught.value)
        assert isinstance(caught.value, BlobStoreError)
        with pytest.raises(FixityError):
            local.verify_cid(ref.cid)
        # Putting the same content again heals the damaged copy (idempotent put replaces it).
        assert local.put_stream([data]) == ref
        local.verify(ref)
        local.verify_cid(ref.cid)

    def test_a_blob_is_invisible_until_complete(self, local: LocalBlobStore) -> None:
        data = os.urandom(3 * MIB)
        cid = cid_for_sha256(hashlib.sha256(data).digest())
        observed: list[tuple[bool, int]] = []

        def slow_source() -> Iterator[bytes]:
            for index in range(3):
                yield data[index * MIB : (index + 1) * MIB]
                observed.append((local.exists(cid), len(local.temp_files())))

        ref = local.put_stream(slow_source())
        # The first MiB is held in memory (it might have been a small blob); past it, a temp
        # file in tmp/ holds the bytes until the rename.
        assert observed == [(False, 0), (False, 1), (False, 1)]
        assert ref.cid == cid
        assert local.exists(cid)
        assert local.temp_files() == []

    def test_a_failed_write_removes_its_temp_file(self, local: LocalBlobStore) -> None:
        with pytest.raises(WriterFailed):
            local.put_stream(_failing_after([os.urandom(MIB)]))
        assert local.temp_files() == []
        assert list(local.iter_cids()) == []

    def test_stale_temp_files_from_a_crash_are_removed_on_open(self, tmp_path: Path) -> None:
        root = tmp_path / "blobs"
        LocalBlobStore(root)
        stale = root / "tmp" / "put-crashed.part"
        fresh = root / "tmp" / "put-in-progress.part"
        stale.write_bytes(b"half a blob")
        fresh.write_bytes(b"being written")
        two_hours_ago = time.time() - 7200
        os.utime(stale, (two_hours_ago, two_hours_ago))
        reopened = LocalBlobStore(root)
        assert reopened.temp_files() == [fresh]
        assert list(reopened.iter_cids()) == []


# ------------------------------------------------------------------------------------ IPFS only


class TestIpfsBlobStore:
    def test_cids_are_base32_and_sha256_is_of_the_bytes(self, ipfs_daemon: IpfsDaemon) -> None:
        store = IpfsBlobStore(ipfs_daemon.api_addr)
        data = os.urandom(MIB + 5)  # more than one 256 KiB chunk: a dag-pb root
        ref = store.put_stream([data])
        assert ref.cid.startswith("bafybei")
        assert ref.sha256 == hashlib.sha256(data).hexdigest()
        assert ref.cid != cid_for_sha256(hashlib.sha256(data).digest())
        base58 = str(CID.decode(ref.cid).encode("base58btc"))
        assert store.exists(base58)

    def test_delete_unpins_and_collects_the_blocks(self, ipfs_daemon: IpfsDaemon) -> None:
        store = IpfsBlobStore(ipfs_daemon.api_addr)
        client = ipfshttpclient.Client(ipfs_daemon.api_addr)
        try:
            ref = store.put_stream([os.urandom(600 * 1024)])
            leaves = {
                str(CID.decode(entry["Ref"]).encode("base32"))
                for entry in client.unstable.refs(ref.cid)
            }
            assert len(leaves) == 3  # 600 KiB in 256 KiB raw leaves
            local_before = _local_refs(client)
            assert leaves <= local_before
            assert store.delete(ref.cid)
            local_after = _local_refs(client)
            assert not (leaves | {ref.cid}) & local_after
        finally:
            client.close()

    def test_a_failed_write_leaves_no_blocks_and_no_wedged_daemon(
        self, ipfs_daemon: IpfsDaemon
    ) -> None:
        # Regression: aborting an add mid-request makes js-ipfs keep its GC lock forever, after
        # which GC and every later add hang. A short timeout turns such a hang into a failure.
        store = IpfsBlobStore(ipfs_daemon.api_addr, timeout=15)
        client = ipfshttpclient.Client(ipfs_daemon.api_addr)
        try:
            store.collect_garbage()
            before = _local_refs(client)
            with pytest.raises(WriterFailed):
                store.put_stream(_failing_after([os.urandom(MIB), os.urandom(MIB)]))
            store.collect_garbage()
            assert _local_refs(client) <= before  # the partial upload was never pinned
            data = os.urandom(1000)
            assert _read(store, store.put_stream([data]).cid) == data
        finally:
            client.close()

    def test_unreachable_node_is_an_unavailable_error(self) -> None:
        store = IpfsBlobStore(f"/ip4/127.0.0.1/tcp/{free_port()}/http", timeout=2)
        cid = cid_for_sha256(hashlib.sha256(b"x").digest())
        for attempt in (
            lambda: store.put_stream([b"data"]),
            lambda: store.exists(cid),
            lambda: store.open_stream(cid),
            lambda: list(store.iter_cids()),
        ):
            with pytest.raises(BlobStoreUnavailableError) as caught:
                attempt()
            assert isinstance(caught.value, UnavailableError)
            assert isinstance(caught.value, ConnectionError)

    @pytest.mark.slow
    def test_blobs_survive_a_sigkill_and_restart_of_the_daemon(self, tmp_path: Path) -> None:
        daemon = start_ipfs_daemon(tmp_path / "repo")
        try:
            store = IpfsBlobStore(daemon.api_addr)
            data = os.urandom(700 * 1024)
            ref = store.put_stream([data])
            intruder = IpfsDaemon(tmp_path / "repo")
            try:
                with pytest.raises(IpfsDevError):  # a live daemon's lock is never broken
                    intruder.start()
            finally:
                intruder.stop()
            daemon.kill()
            assert (tmp_path / "repo" / "repo.lock").exists()  # what a crash leaves behind
            assert (tmp_path / "repo" / "api").exists()
            daemon.start()  # clears the stale lock and comes back on the same address
            assert daemon.api_addr == store.api_addr
            assert store.exists(ref.cid)
            assert _read(store, ref.cid) == data
            store.verify(ref)
        finally:
            daemon.stop()
        assert not (tmp_path / "repo" / "repo.lock").exists()


def test_missing_jsipfs_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IpfsDevError, match="jsipfs not found"):
        IpfsDaemon(tmp_path / "repo", jsipfs=tmp_path / "no-such-jsipfs").start()


def _local_refs(client: ipfshttpclient.Client) -> set[str]:
    return {
        str(CID.decode(entry["Ref"]).encode("base32")) for entry in client.unstable.refs.local()
    }


# ------------------------------------------------------------------------------------ factory


class TestFactory:
    def test_misconfiguration_is_a_config_error(self, tmp_path: Path) -> None:
        for kind, arguments in (
            ("s3", {"local_root": tmp_path}),
            ("local", {}),
            ("ipfs", {}),
            ("ipfs", {"ipfs_api": "http://127.0.0.1:5001"}),
            ("ipfs", {"ipfs_api": "garbage"}),
        ):
            with pytest.raises(ConfigError):
                open_blob_store(kind, **arguments)

    def test_kinds(self, tmp_path: Path) -> None:
        local_store = open_blob_store("local", local_root=tmp_path)
        assert isinstance(local_store, LocalBlobStore)
        ipfs_store = open_blob_store("ipfs", ipfs_api="/ip4/127.0.0.1/tcp/5001/http")
        assert isinstance(ipfs_store, IpfsBlobStore)
        ipfs_store.close()


# ------------------------------------------------------------------------------------------
# Deferred sync: a batch stored without per-blob fsyncs, made durable at once


def test_a_batch_is_made_durable_at_once(
    local: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import node.blobstore.local as local_module

    assert isinstance(local, DeferredSyncStore)
    synced: list[int] = []
    real_fsync = os.fsync

    def counting_fsync(descriptor: int) -> None:
        synced.append(descriptor)
        real_fsync(descriptor)

    monkeypatch.setattr(local_module.os, "fsync", counting_fsync)
    refs = [local.put_stream([f"blob {n}".encode()], durable=False) for n in range(5)]
    assert synced == []  # no fsync per blob
    assert [_read(local, ref.cid) for ref in refs] == [f"blob {n}".encode() for n in range(5)]
    if os.uname().sysname == "Linux":
        local.make_durable(refs)  # one syncfs of the file system, no fsync per blob
        assert synced == []
    # Where syncfs is not available: every file, its shard directories and the root.
    monkeypatch.setattr(local_module, "_syncfs", lambda path: False)
    local.make_durable(refs)
    directories = {local.path_of(r.cid).parent for r in refs}
    assert len(synced) >= len(refs) + len(directories) + 1
    local.make_durable([])  # nothing to do
    synced.clear()
    local.put_stream([b"durable by default"])
    assert len(synced) >= 2  # the file and its directory

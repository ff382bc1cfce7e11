"""KEK rotation on a real node (SQLite and PostgreSQL): every data key is re-wrapped, content still
decrypts, the old KEK leaves the keystore file; an interrupted rotation resumes where it stopped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from anchoring.events import Purpose, RecordClass, Sensitivity
from node import crypto
from node.keystore import DEV_PASSPHRASE, Keystore, UnknownKekError
from node.models import WrappedKey
from node.principal import Principal, Role
from node.runtime import NodeRuntime
from node.services.archives import NewArchive
from node.services.kek import BatchProgress, KekRotationError


def _new(title: str) -> NewArchive:
    return NewArchive(
        record_class=RecordClass.OUTPATIENT,
        sensitivity=Sensitivity.NORMAL,
        department="general",
        title=title,
        patient_id="MRN-7",
        source_system="HIS",
        media_type="text/plain",
    )


def _populate(node: NodeRuntime, count: int) -> tuple[Principal, dict[str, bytes]]:
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "kek-tester").secret)
    contents: dict[str, bytes] = {}
    for i in range(count):
        body = f"record {i} ".encode() * (50 + i)
        view = node.archives.create(archivist, _new(f"record {i}"), [body])
        contents[view.id] = body
    return archivist, contents


def _holders(node: NodeRuntime) -> dict[str, str]:
    with node.db.session() as session:
        rows = session.execute(select(WrappedKey.archive_id, WrappedKey.holder)).all()
    return {archive_id: holder for archive_id, holder in rows}


def _blobs(node: NodeRuntime) -> dict[str, bytes | None]:
    with node.db.session() as session:
        rows = session.execute(select(WrappedKey.archive_id, WrappedKey.blob)).all()
    return {archive_id: blob for archive_id, blob in rows}


def _assert_all_decrypt(node: NodeRuntime, who: Principal, contents: dict[str, bytes]) -> None:
    for archive_id, body in contents.items():
        stream = node.archives.open_content(who, archive_id, Purpose.QUALITY)
        assert b"".join(stream.chunks) == body


def _reload_keystore(node: NodeRuntime) -> Keystore:
    return Keystore.load(node.keystore.path, DEV_PASSPHRASE)


def test_rotation_rewraps_every_key_and_retires_the_old_kek(node: NodeRuntime) -> None:
    archivist, contents = _populate(node, 5)
    old_id = node.keystore.current_kek_id
    old_kek = node.keystore.kek(old_id)
    before = _blobs(node)
    assert set(_holders(node).values()) == {f"kek:{old_id}"}
    seen: list[BatchProgress] = []

    report = node.kek.rotate(batch_size=2, progress=seen.append)

    new_id = node.keystore.current_kek_id
    assert new_id != old_id
    assert report.current_kek_id == new_id
    assert not report.resumed
    assert report.rewrapped == 5
    assert report.batches == 3
    assert report.retired_kek_ids == (old_id,)
    assert [p.remaining for p in seen] == [3, 1, 0]
    assert set(_holders(node).values()) == {f"kek:{new_id}"}
    after = _blobs(node)
    for archive_id, blob in after.items():
        assert blob is not None
        assert blob != before[archive_id]
        with pytest.raises(crypto.CryptoError):  # the old KEK no longer opens anything
            crypto.unwrap_key_material(old_kek, blob, crypto.kek_wrap_aad(archive_id, old_id))
    # the old KEK is gone from memory and from the file on disk
    with pytest.raises(UnknownKekError):
        node.keystore.kek(old_id)
    on_disk = _reload_keystore(node)
    assert [k.kek_id for k in on_disk.keks] == [new_id]
    assert on_disk.current_kek_id == new_id
    _assert_all_decrypt(node, archivist, contents)
    # new archives are wrapped under the new KEK too
    created = node.archives.create(archivist, _new("after rotation"), [b"fresh content"])
    assert _holders(node)[created.id] == f"kek:{new_id}"


def test_interrupted_rotation_resumes_without_a_second_kek(
    node: NodeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    archivist, contents = _populate(node, 7)
    old_id = node.keystore.current_kek_id
    service = node.kek

    # 1) a crash inside the second batch: that batch's unit of work rolls back as a whole
    real_rewrap = crypto.rewrap
    calls = {"n": 0}

    def failing_rewrap(*args: Any) -> bytes:
        calls["n"] += 1
        if calls["n"] == 5:  # batch size 3: the 2nd row of the 2nd batch
            raise OSError("simulated crash while re-wrapping")
        return real_rewrap(*args)

    monkeypatch.setattr(crypto, "rewrap", failing_rewrap)
    with pytest.raises(OSError, match="simulated crash"):
        service.rotate(batch_size=3)
    monkeypatch.setattr(crypto, "rewrap", real_rewrap)

    new_id = node.keystore.current_kek_id
    assert new_id != old_id
    holders = _holders(node)
    assert sorted(holders.values()).count(f"kek:{new_id}") == 3  # only the committed first batch
    assert sorted(holders.values()).count(f"kek:{old_id}") == 4
    on_disk = _reload_keystore(node)
    assert {k.kek_id for k in on_disk.keks} == {old_id, new_id}  # nothing retired yet
    assert service.pending_kek_ids() == [old_id]
    # a half-done rotation still decrypts everything: every row names its KEK
    _assert_all_decrypt(node, archivist, contents)

    # 2) an interruption between batches (Ctrl-C after the next committed batch)
    def stop_after_one(progress: BatchProgress) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        service.rotate(batch_size=3, progress=stop_after_one)
    assert node.keystore.current_kek_id == new_id  # resumed: no third KEK
    assert list(_holders(node).values()).count(f"kek:{old_id}") == 1

    # 3) the rerun finishes the same rotation and retires the old KEK
    report = service.rotate(batch_size=3)
    assert report.resumed
    assert report.current_kek_id == new_id
    assert report.rewrapped == 1
    assert report.retired_kek_ids == (old_id,)
    assert set(_holders(node).values()) == {f"kek:{new_id}"}
    assert [k.kek_id for k in _reload_keystore(node).keks] == [new_id]
    _assert_all_decrypt(node, archivist, contents)


def test_destroyed_material_does_not_block_retirement(node: NodeRuntime) -> None:
    archivist, contents = _populate(node, 2)
    old_id = node.keystore.current_kek_id
    destroyed_id = next(iter(contents))
    with node.db.transaction() as session:  # what cryptographic erasure leaves behind
        row = session.execute(
            select(WrappedKey).where(WrappedKey.archive_id == destroyed_id)
        ).scalar_one()
        row.blob = None
        row.destroyed_at = row.created_at

    report = node.kek.rotate()

    assert report.rewrapped == 1
    assert report.retired_kek_ids == (old_id,)
    holders = _holders(node)
    assert holders[destroyed_id] == f"kek:{old_id}"  # evidence of what wrapped it, kept
    live = {k: v for k, v in contents.items() if k != destroyed_id}
    _assert_all_decrypt(node, archivist, live)


def test_rows_under_an_unknown_kek_block_rotation_and_change_nothing(node: NodeRuntime) -> None:
    _archivist, contents = _populate(node, 2)
    old_id = node.keystore.current_kek_id
    stray = next(iter(contents))
    with node.db.transaction() as session:
        row = session.execute(select(WrappedKey).where(WrappedKey.archive_id == stray)).scalar_one()
        row.holder = "kek:kek-from-a-lost-keystore"
    before = _blobs(node)

    with pytest.raises(KekRotationError, match="kek-from-a-lost-keystore"):
        node.kek.rotate()

    assert node.keystore.current_kek_id == old_id
    assert [k.kek_id for k in _reload_keystore(node).keks] == [old_id]
    assert _blobs(node) == before


@pytest.mark.parametrize("size", [0, -1, 10_001])
def test_batch_size_is_bounded(node: NodeRuntime, size: int) -> None:
    old_id = node.keystore.current_kek_id
    rotate: Callable[..., object] = node.kek.rotate
    with pytest.raises(ValueError, match="batch size"):
        rotate(batch_size=size)
    assert node.keystore.current_kek_id == old_id

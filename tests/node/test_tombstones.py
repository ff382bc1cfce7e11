"""The tombstone ledger file: appended lines survive, a torn last line (a crash while appending)
is skipped, and nothing but ids, hashes and times is written."""

from __future__ import annotations

from pathlib import Path

from node.tombstones import Tombstone, TombstoneLedger


def test_append_read_and_a_torn_line(tmp_path: Path) -> None:
    ledger = TombstoneLedger(tmp_path / "sub" / "tombstones.jsonl")
    assert ledger.read() == []
    first = Tombstone("01J0Z8Q6J8ZK3W6Y9V5T3N2M1A", "ab" * 32, "2041-12-03T00:00:00Z")
    second = Tombstone("01J0Z8Q6J8ZK3W6Y9V5T3N2M1B", "cd" * 32, "2041-12-04T00:00:00Z")
    ledger.append([first])
    ledger.append([])
    ledger.append([second])
    with ledger.path.open("a") as handle:
        handle.write('{"archive_id":"01J0Z8Q6J8ZK3W6Y9V5T3N2M1C","certif')
    assert ledger.read() == [first, second]
    third = Tombstone("01J0Z8Q6J8ZK3W6Y9V5T3N2M1D", "ef" * 32, "2041-12-05T00:00:00Z")
    ledger.append([third])  # after a torn line: on a line of its own
    assert ledger.read() == [first, second, third]
    lines = ledger.path.read_text().splitlines()
    assert lines[0] == (
        '{"archive_id":"01J0Z8Q6J8ZK3W6Y9V5T3N2M1A","certificate_hash":"' + "ab" * 32 + '",'
        '"destroyed_at":"2041-12-03T00:00:00Z"}'
    )

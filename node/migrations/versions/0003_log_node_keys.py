"""log_nodes: key low subtrees by completion position, upper ones level-major; rowid on SQLite

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 00:30:00.000000

Until 0002 a subtree's key was ``level << 48 | index``. From 0003 (see ``anchoring.storage.node_id``)
a subtree below level 8 is keyed by its completion position (post-order: appends write increasing
keys, a proof's low siblings share B-tree pages) and a subtree at level 8 or above by
``1 << 62 | level << 48 | index`` (each upper level one key range, loaded into memory for proofs).
On SQLite the key also becomes the rowid (``INTEGER PRIMARY KEY``): one B-tree instead of a table
plus a unique index.

The table is rebuilt (``INSERT … SELECT`` in key order, then swapped), in pure SQL on both
backends: about 20 s per 10^7 leaves on SQLite on the build machine.
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

INDEX_BITS = 48
UPPER_LEVEL = 8
UPPER_KEYS = 1 << 62
_INDEX_MASK = (1 << INDEX_BITS) - 1
_FIRST_UPPER_OLD = UPPER_LEVEL << INDEX_BITS

# The old key holds (level, index); the completion position of that subtree is
# ((index + 1) << (level + 1)) - 2 - popcount(index). SQL has no portable popcount: sum the bits.
_POPCOUNT = " + ".join(f"((id >> {bit}) & 1)" for bit in range(INDEX_BITS))
_NEW_KEY = (
    f"CASE WHEN id >= {_FIRST_UPPER_OLD} THEN id + {UPPER_KEYS} "
    f"ELSE (((id & {_INDEX_MASK}) + 1) << (CAST(id >> {INDEX_BITS} AS INTEGER) + 1)) - 2 - "
    f"({_POPCOUNT}) END"
)


def _rebuild(
    id_type: sa.types.TypeEngine[int],
    select_new_rows: str | None = None,
    new_rows: Iterator[list[tuple[int, bytes]]] = iter(()),
) -> None:
    """Create the rekeyed table, fill it (from SQL or from rows read off the old table), swap it in
    for ``log_nodes``."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    table = op.create_table(
        "log_nodes_rekeyed",
        sa.Column("id", id_type, autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_log_nodes" if sqlite else "pk_log_nodes_rekeyed"),
    )
    if select_new_rows is not None:
        op.execute(f"INSERT INTO log_nodes_rekeyed (id, hash) {select_new_rows}")
    for chunk in new_rows:
        op.bulk_insert(table, [{"id": key, "hash": digest} for key, digest in chunk])
    op.drop_table("log_nodes")
    op.rename_table("log_nodes_rekeyed", "log_nodes")
    if not sqlite:
        op.execute("ALTER TABLE log_nodes RENAME CONSTRAINT pk_log_nodes_rekeyed TO pk_log_nodes")


def upgrade() -> None:
    _rebuild(
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        f"SELECT {_NEW_KEY}, hash FROM log_nodes ORDER BY 1",
    )


def _low_subtrees() -> Iterator[tuple[int, int, int]]:
    """``(completion position, level, index)`` of every subtree below ``UPPER_LEVEL``, in the order
    appending leaf after leaf completes them (leaf x completes one per trailing one bit, plus
    itself)."""
    leaf = 0
    while True:
        first = 2 * leaf - leaf.bit_count()
        for level in range(min((~leaf & (leaf + 1)).bit_length(), UPPER_LEVEL)):
            yield first + level, level, leaf >> level
        leaf += 1


def _old_rows(chunk: int = 50_000) -> Iterator[list[tuple[int, bytes]]]:
    """Every stored subtree under its 0002 key (no SQL inverse of the completion position exists:
    the low rows, read in key order, are matched with ``_low_subtrees``)."""
    connection = op.get_bind()
    out: list[tuple[int, bytes]] = []
    subtrees = _low_subtrees()
    for key, digest in connection.execute(
        sa.text("SELECT id, hash FROM log_nodes ORDER BY id")
    ):
        if key >= UPPER_KEYS:
            out.append((key - UPPER_KEYS, bytes(digest)))
        else:
            for position, level, index in subtrees:
                if position == key:
                    break
            out.append(((level << INDEX_BITS) | index, bytes(digest)))
        if len(out) >= chunk:
            yield out
            out = []
    if out:
        yield out


def downgrade() -> None:
    _rebuild(sa.BigInteger(), new_rows=_old_rows())

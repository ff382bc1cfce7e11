"""log nodes: low subtrees keyed by completion position, upper subtrees in log_upper_nodes

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 00:30:00.000000

Until 0003 every subtree was a row of ``log_nodes`` keyed ``level << 48 | index``. From 0004 (see
``anchoring.storage.node_id``) a subtree below level 8 stays in ``log_nodes``, keyed by its
completion position (post-order: appends write increasing keys, a proof's low siblings share
B-tree pages), and a subtree at level 8 or above moves, with its key, to ``log_upper_nodes`` (one
row per 128 leaves, loaded into memory for proofs). On SQLite both keys are the rowid
(``INTEGER PRIMARY KEY``): one B-tree per table instead of a table plus a unique index.

``log_nodes`` is rebuilt (``INSERT … SELECT`` in key order, then swapped) in plain SQL on both
backends: 75 s for a SQLite log of 10^7 leaves on the build machine, which needs room for a second
copy of the table while it runs (the freed pages stay in a SQLite file until ``VACUUM``).
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

INDEX_BITS = 48
UPPER_LEVEL = 8
_INDEX_MASK = (1 << INDEX_BITS) - 1
_FIRST_UPPER = UPPER_LEVEL << INDEX_BITS

# The old key holds (level, index); the completion position of that subtree is
# ((index + 1) << (level + 1)) - 2 - popcount(index). SQL has no portable popcount: sum the bits.
_POPCOUNT = " + ".join(f"((id >> {bit}) & 1)" for bit in range(INDEX_BITS))
_POSITION = (
    f"(((id & {_INDEX_MASK}) + 1) << (CAST(id >> {INDEX_BITS} AS INTEGER) + 1)) - 2 - ({_POPCOUNT})"
)


def _node_table(name: str, id_type: sa.types.TypeEngine[int]) -> sa.Table:
    sqlite = op.get_bind().dialect.name == "sqlite"
    # PostgreSQL names the primary key's index after the constraint: unique per schema.
    final = "log_upper_nodes" if name == "log_upper_nodes" else "log_nodes"
    return op.create_table(
        name,
        sa.Column("id", id_type, autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"pk_{final if sqlite or name == final else name}"),
    )


def _swap_in(name: str) -> None:
    """Replace ``log_nodes`` by the table ``name``."""
    op.drop_table("log_nodes")
    op.rename_table(name, "log_nodes")
    if op.get_bind().dialect.name != "sqlite":
        op.execute(f"ALTER TABLE log_nodes RENAME CONSTRAINT pk_{name} TO pk_log_nodes")


def upgrade() -> None:
    rowid = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    _node_table("log_upper_nodes", rowid)
    first_upper = {"first_upper": _FIRST_UPPER}
    op.execute(
        sa.text(
            "INSERT INTO log_upper_nodes (id, hash) "
            "SELECT id, hash FROM log_nodes WHERE id >= :first_upper ORDER BY id"
        ).bindparams(**first_upper)
    )
    _node_table("log_nodes_rekeyed", rowid)
    rekey = "INSERT INTO log_nodes_rekeyed (id, hash) SELECT {position}, hash FROM log_nodes "
    op.execute(
        sa.text(rekey.format(position=_POSITION) + "WHERE id < :first_upper ORDER BY 1").bindparams(
            **first_upper
        )
    )
    _swap_in("log_nodes_rekeyed")


def _low_subtrees() -> Iterator[tuple[int, int, int]]:
    """``(completion position, level, index)`` of every subtree below ``UPPER_LEVEL``, in the order
    appending leaf after leaf completes them (leaf x completes one per trailing one bit of x, plus
    itself)."""
    leaf = 0
    while True:
        first = 2 * leaf - leaf.bit_count()
        for level in range(min((~leaf & (leaf + 1)).bit_length(), UPPER_LEVEL)):
            yield first + level, level, leaf >> level
        leaf += 1


def _old_low_rows(chunk: int = 50_000) -> Iterator[list[dict[str, object]]]:
    """The rows of ``log_nodes`` under their 0003 keys. No SQL inverse of the completion position
    exists: the rows, read in key order, are matched with ``_low_subtrees``."""
    out: list[dict[str, object]] = []
    subtrees = _low_subtrees()
    for key, digest in op.get_bind().execute(sa.text("SELECT id, hash FROM log_nodes ORDER BY id")):
        _, level, index = next(subtree for subtree in subtrees if subtree[0] == key)
        out.append({"id": (level << INDEX_BITS) | index, "hash": bytes(digest)})
        if len(out) >= chunk:
            yield out
            out = []
    if out:
        yield out


def downgrade() -> None:
    table = _node_table("log_nodes_old", sa.BigInteger())
    for rows in _old_low_rows():
        op.bulk_insert(table, rows)
    op.execute("INSERT INTO log_nodes_old (id, hash) SELECT id, hash FROM log_upper_nodes")
    _swap_in("log_nodes_old")
    op.drop_table("log_upper_nodes")

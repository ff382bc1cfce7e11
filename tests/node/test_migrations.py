"""Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL, and
running them twice changes nothing."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

import node.models  # noqa: F401  (registers the node tables)
from anchoring.storage import metadata
from node import migrations


def test_migrations_match_the_models_and_are_idempotent(database_url: str) -> None:
    migrations.upgrade(database_url)
    migrations.upgrade(database_url)  # a second run finds nothing to do
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
            tables = set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
    assert differences == []
    assert {"log_entries", "log_nodes", "archives", "transfers", "alembic_version"} <= tables

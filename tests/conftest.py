"""Root test configuration: shared fixture plugins."""

pytest_plugins = [
    "tests.fixtures.chain",
    "tests.fixtures.ipfs",
    "tests.fixtures.db",
    "tests.fixtures.node",
]

"""Console and public-page tests reuse the API fixtures: the real app over a real node (real
anvil, both databases, local blob store), over HTTP through the ASGI interface."""

from tests.api.conftest import api, api_node  # noqa: F401  (fixtures)

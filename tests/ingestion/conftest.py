"""Ingestion tests reuse the API fixtures (the real app over a real node, both databases)."""

from tests.api.conftest import api, api_node

__all__ = ["api", "api_node"]

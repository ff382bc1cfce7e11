"""ArchiveChain HTTP API: FastAPI routes over node services. No business rules live here."""

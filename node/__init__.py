"""ArchiveChain hospital node: configuration, storage, encryption, lifecycle services, dev chain, CLI."""

__version__ = "0.1.0"

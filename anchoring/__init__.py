"""ArchiveChain evidence: canonical events, RFC 6962 Merkle log, proofs, bundles, verifier, anchoring.

The verification core (``merkle``, ``events``, ``bundle``, ``verifier``) is pure: it performs no I/O.
Chain facts reach it through the small ``ChainReader`` interface.
"""

__version__ = "0.1.0"

"""Two storage tiers behind one ``BlobStore`` (docs/recovery.md §3): a hot store (the node's
configured store) and a cold store (a second local directory on cheaper media, or an IPFS daemon).

New blobs are written hot. Reads, existence checks and fixity checks look in the hot store first,
then in the cold one, so a blob moved to cold storage opens transparently (slower, when the cold
media are). Deletion removes the blob from both.

The two stores need not name a blob alike: a local store names it by the SHA-256 of its bytes, an
IPFS store by its own CID (a dag-pb root for a blob of more than one block). ``copy`` therefore
returns the copy's id in the other store; the caller (``node.services.tiers``) records it as the
version's ``cid`` in the same unit of work as the TIER_MOVE, and only then drops the old copy with
``drop``. Every copy is checked against the recorded SHA-256 and size, then re-read (``verify``) in
the store it went to, before it counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from node.blobstore.base import BlobNotFoundError, BlobRef, BlobStore, FixityError


class TieredBlobStore:
    """Hot store first, cold store second."""

    def __init__(self, hot: BlobStore, cold: BlobStore) -> None:
        self.hot = hot
        self.cold = cold
        self.kind = hot.kind

    def put_stream(self, chunks: Iterable[bytes]) -> BlobRef:
        """New blobs (uploads, repairs) go to the hot tier."""
        return self.hot.put_stream(chunks)

    def open_stream(self, cid: str) -> Iterator[bytes]:
        """The hot copy if present, else the cold one (``BlobNotFoundError`` if neither)."""
        try:
            return self.hot.open_stream(cid)
        except BlobNotFoundError:
            return self.cold.open_stream(cid)

    def exists(self, cid: str) -> bool:
        return self.hot.exists(cid) or self.cold.exists(cid)

    def tier_of(self, cid: str) -> str | None:
        """``"hot"``, ``"cold"`` or None (absent)."""
        if self.hot.exists(cid):
            return "hot"
        return "cold" if self.cold.exists(cid) else None

    def delete(self, cid: str) -> bool:
        """Remove the blob from both tiers."""
        in_hot = self.hot.delete(cid)
        in_cold = self.cold.delete(cid)
        return in_hot or in_cold

    def verify(self, ref: BlobRef) -> None:
        """Fixity of whichever tier holds the blob."""
        if self.hot.exists(ref.cid):
            self.hot.verify(ref)
        else:
            self.cold.verify(ref)

    def iter_cids(self) -> Iterator[str]:
        seen: set[str] = set()
        for store in (self.hot, self.cold):
            for cid in store.iter_cids():
                if cid not in seen:
                    seen.add(cid)
                    yield cid

    def store(self, tier: str) -> BlobStore:
        """The store of ``tier`` (``"hot"`` or ``"cold"``)."""
        if tier not in ("hot", "cold"):
            raise ValueError(f"unknown tier {tier!r}")
        return self.hot if tier == "hot" else self.cold

    def copy(self, ref: BlobRef, to: str) -> BlobRef:
        """Copy the blob ``ref`` names to tier ``to`` (from the other tier) and return the copy,
        named as that store names it. The copy must have ``ref``'s SHA-256 and size, and is re-read
        there; otherwise it is deleted again and ``FixityError`` raised. Nothing is deleted from
        the source (``drop`` does, once the new id is recorded). Already there: ``ref``."""
        target = self.store(to)
        source = self.cold if target is self.hot else self.hot
        if not source.exists(ref.cid):
            if target.exists(ref.cid):
                return ref  # already moved (same id in both stores)
            raise BlobNotFoundError(f"no blob {ref.cid} in the tier it moves from")
        copied = target.put_stream(source.open_stream(ref.cid))
        if copied.sha256 != ref.sha256 or copied.size != ref.size:
            target.delete(copied.cid)  # other bytes: another id than any recorded copy
            raise FixityError(f"the {to} copy of {ref.cid} does not match its recorded hash")
        target.verify(copied)
        return copied

    def drop(self, cid: str, tier: str) -> bool:
        """Delete the copy ``cid`` from tier ``tier`` only (the old copy after a move, or a copy
        whose move was refused). True if it was there."""
        return self.store(tier).delete(cid)

    def move_to_cold(self, ref: BlobRef) -> BlobRef:
        """Copy to cold, check it, delete the hot copy (callers that record the copy's id: use
        ``copy`` and ``drop``)."""
        copied = self.copy(ref, "cold")
        if copied is not ref:
            self.drop(ref.cid, "hot")
        return copied

    def move_to_hot(self, ref: BlobRef) -> BlobRef:
        """Copy back to hot, check it, delete the cold copy."""
        copied = self.copy(ref, "hot")
        if copied is not ref:
            self.drop(ref.cid, "cold")
        return copied

    def close(self) -> None:
        self.hot.close()
        self.cold.close()

"""Two storage tiers behind one ``BlobStore`` (docs/recovery.md §3): a hot store (the node's
configured store) and a cold store (a second local directory, e.g. on cheaper media).

New blobs are written hot. Reads, existence checks and fixity checks look in the hot store first,
then in the cold one, so a blob moved to cold storage opens transparently (slower, when the cold
media are). Deletion removes the blob from both. ``move_to_cold`` copies a blob to the cold store,
checks its SHA-256 there, and only then deletes the hot copy.
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

    def move_to_cold(self, ref: BlobRef) -> BlobRef:
        """Copy to cold, check the copy against ``ref``, then delete the hot copy."""
        if not self.hot.exists(ref.cid):
            if self.cold.exists(ref.cid):
                return ref
            raise BlobNotFoundError(f"no blob {ref.cid}")
        copy = self.cold.put_stream(self.hot.open_stream(ref.cid))
        if copy.sha256 != ref.sha256 or copy.size != ref.size:
            self.cold.delete(copy.cid)
            raise FixityError(f"the cold copy of {ref.cid} does not match its hash")
        self.cold.verify(copy)
        self.hot.delete(ref.cid)
        return copy

    def move_to_hot(self, ref: BlobRef) -> BlobRef:
        """Copy back to hot, check the copy against ``ref``, then delete the cold copy."""
        if not self.cold.exists(ref.cid):
            if self.hot.exists(ref.cid):
                return ref
            raise BlobNotFoundError(f"no blob {ref.cid}")
        copy = self.hot.put_stream(self.cold.open_stream(ref.cid))
        if copy.sha256 != ref.sha256 or copy.size != ref.size:
            self.hot.delete(copy.cid)
            raise FixityError(f"the hot copy of {ref.cid} does not match its hash")
        self.hot.verify(copy)
        self.cold.delete(ref.cid)
        return copy

    def close(self) -> None:
        self.hot.close()
        self.cold.close()

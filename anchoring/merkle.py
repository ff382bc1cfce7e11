"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification (pure, no I/O).

Three layers:

* hashing and verification: ``leaf_hash``, ``node_hash``, ``verify_inclusion``,
  ``verify_consistency`` (the RFC 9162 algorithms, as in transparency-dev/merkle);
* an in-memory reference (``root_from_leaf_hashes``, ``inclusion_proof``, ``consistency_proof``)
  that follows the recursive definitions of RFC 6962 §2.1 literally, for tests and small trees;
* the arithmetic the database log uses to serve any proof from stored hashes: a proof is a list of
  leaf ranges ``[lo, hi)`` (``inclusion_ranges``, ``consistency_ranges``); each range's hash is
  the fold (``hash_from_subtrees``) of the aligned perfect subtrees that cover it
  (``perfect_subtrees``), and ``append_leaf`` reports every perfect subtree a new leaf completes
  so it can be stored (``completion_position`` numbers them in that order).

Every range a proof for a tree of size ``n`` names ends at or before ``n`` and starts on a boundary
aligned to a power of two at least as large as the range, so its perfect subtrees are all complete
in that tree and their right-to-left fold is exactly the range's RFC 6962 hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from anchoring.errors import (
    ConsistencyProofError,
    InclusionProofError,
    LogError,
    RootMismatchError,
)

HASH_SIZE = 32
"""Length in bytes of every hash (SHA-256)."""

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"

EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root of the empty tree: SHA-256 of the empty string (RFC 6962 §2.1)."""

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 ‖ data): the hash of one log entry."""
    return _sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 ‖ left ‖ right): the hash of an interior node."""
    return _sha256(NODE_PREFIX + left + right).digest()


def _largest_power_of_two_below(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n`` >= 2): RFC 6962's split point."""
    return 1 << ((n - 1).bit_length() - 1)


# --------------------------------------------------------------------------------------------
# In-memory reference (RFC 6962 §2.1, recursive definitions)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over already-hashed leaves; ``EMPTY_ROOT`` for no leaves."""
    if not hashes:
        return EMPTY_ROOT
    if len(hashes) == 1:
        return hashes[0]
    k = _largest_power_of_two_below(len(hashes))
    return node_hash(root_from_leaf_hashes(hashes[:k]), root_from_leaf_hashes(hashes[k:]))


def _check_tree(size: int, leaf_hashes: Sequence[bytes]) -> None:
    if size > len(leaf_hashes):
        raise LogError(f"tree size {size} exceeds the {len(leaf_hashes)} leaves given")


def inclusion_proof(index: int, size: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PATH(index, D[size]) computed from the leaf hashes (reference; O(size log size))."""
    _check_tree(size, leaf_hashes)
    if not 0 <= index < size:
        raise InclusionProofError(f"leaf index {index} is outside a tree of size {size}")

    def path(m: int, leaves: Sequence[bytes]) -> list[bytes]:
        if len(leaves) == 1:
            return []
        k = _largest_power_of_two_below(len(leaves))
        if m < k:
            return [*path(m, leaves[:k]), root_from_leaf_hashes(leaves[k:])]
        return [*path(m - k, leaves[k:]), root_from_leaf_hashes(leaves[:k])]

    return path(index, leaf_hashes[:size])


def consistency_proof(size1: int, size2: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """PROOF(size1, D[size2]) computed from the leaf hashes (reference; O(size2 log size2))."""
    _check_tree(size2, leaf_hashes)
    if not 0 < size1 <= size2:
        raise ConsistencyProofError(f"no consistency proof from size {size1} to size {size2}")

    def subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
        n = len(leaves)
        if m == n:
            return [] if complete else [root_from_leaf_hashes(leaves)]
        k = _largest_power_of_two_below(n)
        if m <= k:
            return [*subproof(m, leaves[:k], complete), root_from_leaf_hashes(leaves[k:])]
        return [*subproof(m - k, leaves[k:], False), root_from_leaf_hashes(leaves[:k])]

    return subproof(size1, leaf_hashes[:size2], True)


# --------------------------------------------------------------------------------------------
# Verification (RFC 9162 §2.1.3.2 and §2.1.4.2, in the decomposed form of transparency-dev/merkle)


def _require_hash(
    value: bytes, what: str, error: type[InclusionProofError | ConsistencyProofError]
) -> None:
    if len(value) != HASH_SIZE:
        raise error(f"{what} must be {HASH_SIZE} bytes, got {len(value)}")


def _inner_proof_size(index: int, size: int) -> int:
    """Number of proof elements below the level where the paths to ``index`` and ``size-1`` meet."""
    return (index ^ (size - 1)).bit_length()


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` yields for ``leaf`` at ``index`` in a tree of ``size`` leaves."""
    if not 0 <= index < size:
        raise InclusionProofError(f"leaf index {index} is outside a tree of size {size}")
    _require_hash(leaf, "leaf hash", InclusionProofError)
    inner = _inner_proof_size(index, size)
    border = (index >> inner).bit_count()
    if len(proof) != inner + border:
        raise InclusionProofError(
            f"wrong proof length: expected {inner + border} hashes for leaf {index} of {size}, "
            f"got {len(proof)}"
        )
    if not set(map(len, proof)) <= {HASH_SIZE}:  # the common case costs one C-level pass
        for position, element in enumerate(proof):
            _require_hash(element, f"proof[{position}]", InclusionProofError)
    sha, join, prefix = _sha256, b"".join, NODE_PREFIX
    seed, bits = leaf, index
    for element in proof[:inner]:
        if bits & 1:
            seed = sha(join((prefix, element, seed))).digest()
        else:
            seed = sha(join((prefix, seed, element))).digest()
        bits >>= 1
    for element in proof[inner:]:
        seed = sha(join((prefix, element, seed))).digest()
    return seed


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves with ``root``.

    Raises ``InclusionProofError`` for malformed input and ``RootMismatchError`` (expected vs
    calculated) when the proof leads elsewhere.
    """
    _require_hash(root, "root", InclusionProofError)
    calculated = root_from_inclusion_proof(index, size, leaf_hash, proof)
    if calculated != root:
        raise RootMismatchError(root, calculated, what="inclusion root")


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``size1`` leaves with ``root1`` is a prefix of ``size2``/``root2``.

    Conventions (shared with the contract): a proof from size 0 is refused (it proves nothing);
    equal sizes need an empty proof and byte-equal roots; otherwise the proof must have exactly the
    RFC 9162 length and both roots must be reproduced. Raises ``ConsistencyProofError`` or
    ``RootMismatchError``.
    """
    if size1 < 0 or size2 < 0:
        raise ConsistencyProofError(f"negative tree size ({size1}, {size2})")
    if size1 == 0:
        raise ConsistencyProofError("a consistency proof from the empty tree proves nothing")
    if size2 < size1:
        raise ConsistencyProofError(f"size2 ({size2}) is smaller than size1 ({size1})")
    if size1 == size2:
        if proof:
            raise ConsistencyProofError("equal sizes need an empty proof")
        if root1 != root2:
            raise RootMismatchError(root1, root2, what="root2")
        return
    _require_hash(root1, "root1", ConsistencyProofError)
    _require_hash(root2, "root2", ConsistencyProofError)
    if not proof:
        raise ConsistencyProofError("empty proof for different sizes")
    for position, element in enumerate(proof):
        _require_hash(element, f"proof[{position}]", ConsistencyProofError)

    inner = _inner_proof_size(size1 - 1, size2)
    border = ((size1 - 1) >> inner).bit_count()
    shift = (size1 & -size1).bit_length() - 1  # trailing zeros of size1; shift < inner here
    inner -= shift
    # The proof starts with the hash of the perfect subtree of 2^shift leaves ending at size1,
    # unless size1 is that subtree itself, in which case root1 is the seed.
    if size1 == 1 << shift:
        seed, rest = root1, proof
    else:
        seed, rest = proof[0], proof[1:]
    expected_length = len(proof) - len(rest) + inner + border
    if len(proof) != expected_length:
        raise ConsistencyProofError(
            f"wrong proof length: expected {expected_length} hashes from {size1} to {size2}, "
            f"got {len(proof)}"
        )
    mask = (size1 - 1) >> shift
    hash1 = hash2 = seed
    for level in range(inner):
        element = rest[level]
        if (mask >> level) & 1:
            hash1 = node_hash(element, hash1)
            hash2 = node_hash(element, hash2)
        else:
            hash2 = node_hash(hash2, element)
    for element in rest[inner:]:
        hash1 = node_hash(element, hash1)
        hash2 = node_hash(element, hash2)
    if hash1 != root1:
        raise RootMismatchError(root1, hash1, what="root1")
    if hash2 != root2:
        raise RootMismatchError(root2, hash2, what="root2")


# --------------------------------------------------------------------------------------------
# Range arithmetic for serving proofs from stored perfect-subtree hashes


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges ``[lo, hi)`` whose tree hashes are PATH(index, D[size]), in proof order."""
    if not 0 <= index < size:
        raise InclusionProofError(f"leaf index {index} is outside a tree of size {size}")
    inner = _inner_proof_size(index, size)
    ranges: list[tuple[int, int]] = []
    for level in range(inner):
        sibling = (index >> level) ^ 1
        lo = sibling << level
        ranges.append((lo, min(lo + (1 << level), size)))
    for level in range(inner, index.bit_length()):
        if (index >> level) & 1:
            sibling = (index >> level) ^ 1
            ranges.append((sibling << level, (sibling + 1) << level))
    return ranges


def consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """The leaf ranges whose tree hashes are PROOF(size1, D[size2]), in proof order.

    Equal sizes give an empty list; ``size1`` of 0 or above ``size2`` is refused.
    """
    if not 0 < size1 <= size2:
        raise ConsistencyProofError(f"no consistency proof from size {size1} to size {size2}")
    # Walk SUBPROOF(m, D[lo:hi], complete) of RFC 6962 §2.1.2 top-down; the proof lists the
    # deepest element first, so the per-level elements are collected and reversed at the end.
    lo, hi, m, complete = 0, size2, size1, True
    upper: list[tuple[int, int]] = []
    while m != hi - lo:
        k = _largest_power_of_two_below(hi - lo)
        if m <= k:
            upper.append((lo + k, hi))
            hi = lo + k
        else:
            upper.append((lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    upper.reverse()
    return upper if complete else [(lo, hi), *upper]


def perfect_subtrees(lo: int, hi: int) -> list[tuple[int, int]]:
    """The aligned perfect subtrees ``(level, index)`` covering ``[lo, hi)``, left to right.

    Subtree ``(level, index)`` spans leaves ``[index << level, (index + 1) << level)``. The cover
    is the minimal one (largest aligned block first at each step).
    """
    if not 0 <= lo < hi:
        raise LogError(f"empty or negative leaf range [{lo}, {hi})")
    subtrees: list[tuple[int, int]] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        if lo:
            level = min(level, (lo & -lo).bit_length() - 1)
        subtrees.append((level, lo >> level))
        lo += 1 << level
    return subtrees


def hash_from_subtrees(hashes_left_to_right: Sequence[bytes]) -> bytes:
    """Fold perfect-subtree hashes right to left with ``node_hash``: the range's RFC 6962 hash.

    Applied to a tree's frontier it gives the tree's root.
    """
    if not hashes_left_to_right:
        raise LogError("no subtree hashes to combine")
    result = hashes_left_to_right[-1]
    for left in reversed(hashes_left_to_right[:-1]):
        result = node_hash(left, result)
    return result


def nodes_before_leaf(size: int) -> int:
    """Subtrees (leaves included) completed by the first ``size`` leaves: 2·size - popcount(size).

    Appending leaf ``size`` completes the subtrees at completion positions from this one on, one
    per level from the leaf up, in that order."""
    return 2 * size - size.bit_count()


def completion_position(level: int, index: int) -> int:
    """Where subtree ``(level, index)`` falls in the order appends complete subtrees (post-order).

    Leaf ``r = ((index + 1) << level) - 1`` completes it after the ``level`` subtrees below it, so
    its position is ``nodes_before_leaf(r) + level``. The sibling at level ``l`` of leaf ``i`` sits
    within about ``2^(l+1)`` positions of ``2i``: keyed this way, a proof's low siblings share
    pages of a B-tree."""
    if level < 0 or index < 0:
        raise LogError(f"no subtree at level {level}, index {index}")
    return ((index + 1) << (level + 1)) - 2 - index.bit_count()


def append_leaf(
    frontier: Sequence[bytes], size: int, leaf_hash: bytes
) -> tuple[list[bytes], list[tuple[int, int, bytes]]]:
    """Append one leaf to a tree given by its right frontier.

    ``frontier`` holds the hashes of the perfect subtrees of the tree of ``size`` leaves, one per
    set bit of ``size``, largest (leftmost) first. Returns the new frontier and every perfect
    subtree ``(level, index, hash)`` this leaf completes, the leaf itself (level 0) first.
    """
    if size < 0 or len(frontier) != size.bit_count():
        raise LogError(
            f"a tree of size {size} has {max(size, 0).bit_count()} frontier hashes, "
            f"got {len(frontier)}"
        )
    if len(leaf_hash) != HASH_SIZE:
        raise LogError(f"leaf hash must be {HASH_SIZE} bytes, got {len(leaf_hash)}")
    new_frontier = list(frontier)
    completed = [(0, size, leaf_hash)]
    current, level, index = leaf_hash, 0, size
    while (size >> level) & 1:
        current = node_hash(new_frontier.pop(), current)
        level += 1
        index >>= 1
        completed.append((level, index, current))
    new_frontier.append(current)
    return new_frontier, completed

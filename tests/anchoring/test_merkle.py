"""RFC 6962 Merkle hashing, proofs, verification and the range arithmetic used by the stored log.

Golden vectors come from transparency-dev/merkle (``../shared/testdata/rfc6962``); properties run
over every tree size up to 1,000 and compare three independent computations: the recursive RFC
6962 reference, the RFC 9162 verifiers, and proofs assembled from ``append_leaf``'s stored subtrees
through ``inclusion_ranges``/``consistency_ranges``/``perfect_subtrees``/``hash_from_subtrees``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anchoring import merkle
from anchoring.errors import (
    AnchoringError,
    ConsistencyProofError,
    InclusionProofError,
    LogError,
    ProofError,
    RootMismatchError,
)
from tests.support import require_rfc6962_testdata, rfc6962_testdata_dir

MAX_SIZE = 1000
LEAVES = [merkle.leaf_hash(f"leaf {i}".encode()) for i in range(MAX_SIZE)]


def _build_store() -> tuple[dict[tuple[int, int], bytes], list[list[bytes]]]:
    """Append every leaf with ``append_leaf``: stored subtrees and the frontier after each size."""
    store: dict[tuple[int, int], bytes] = {}
    frontiers: list[list[bytes]] = [[]]
    frontier: list[bytes] = []
    for size, leaf in enumerate(LEAVES):
        frontier, completed = merkle.append_leaf(frontier, size, leaf)
        for level, index, digest in completed:
            assert (level, index) not in store, "a subtree was completed twice"
            store[(level, index)] = digest
        frontiers.append(frontier)
    return store, frontiers


STORE, FRONTIERS = _build_store()


def _stored_range_hashes(ranges: Sequence[tuple[int, int]], size: int) -> list[bytes]:
    """What the database log does: each range from the stored perfect subtrees that cover it."""
    hashes = []
    for lo, hi in ranges:
        assert 0 <= lo < hi <= size
        subtrees = merkle.perfect_subtrees(lo, hi)
        for level, index in subtrees:
            assert (index + 1) << level <= size, "range needs a subtree not complete at this size"
        hashes.append(merkle.hash_from_subtrees([STORE[key] for key in subtrees]))
    return hashes


def _flip(data: bytes, bit: int) -> bytes:
    bit %= len(data) * 8
    flipped = bytearray(data)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


# ------------------------------------------------------------------------------------------
# Hash primitives


def test_leaf_and_node_hashes_follow_rfc6962_domain_separation() -> None:
    assert hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT
    assert merkle.leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    left, right = LEAVES[0], LEAVES[1]
    assert merkle.node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    assert merkle.node_hash(left, right) != merkle.node_hash(right, left)
    assert merkle.root_from_leaf_hashes([]) == merkle.EMPTY_ROOT
    assert merkle.root_from_leaf_hashes([left]) == left


def test_known_root_of_the_rfc6962_reference_tree() -> None:
    # The eight-leaf tree of the transparency-dev vectors (leaves "", 0x00, 0x10, 0x2021, ...).
    data = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ]
    root = merkle.root_from_leaf_hashes([merkle.leaf_hash(d) for d in data])
    assert root.hex() == "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


# ------------------------------------------------------------------------------------------
# Golden vectors


def _vector_files(kind: str) -> list[Path]:
    folder = rfc6962_testdata_dir() / kind
    return sorted(folder.rglob("*.json")) if folder.is_dir() else []


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _vector_id(path: Path) -> str:
    return str(path.relative_to(rfc6962_testdata_dir()))


@pytest.mark.parametrize("path", _vector_files("inclusion"), ids=_vector_id)
def test_inclusion_vector(path: Path) -> None:
    require_rfc6962_testdata()
    case: dict[str, Any] = json.loads(path.read_text())
    proof = [_b64(p) for p in case["proof"] or []]
    args = (case["leafIdx"], case["treeSize"], _b64(case["leafHash"]), proof, _b64(case["root"]))
    if case["wantErr"]:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)


@pytest.mark.parametrize("path", _vector_files("consistency"), ids=_vector_id)
def test_consistency_vector(path: Path) -> None:
    require_rfc6962_testdata()
    case: dict[str, Any] = json.loads(path.read_text())
    proof = [_b64(p) for p in case["proof"] or []]
    args = (case["size1"], case["size2"], _b64(case["root1"]), _b64(case["root2"]), proof)
    if case["wantErr"]:
        with pytest.raises(ProofError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)


def test_vector_folder_is_complete_when_present() -> None:
    require_rfc6962_testdata()
    assert len(_vector_files("inclusion")) >= 90
    assert len(_vector_files("consistency")) >= 90


# ------------------------------------------------------------------------------------------
# Typed refusals


def test_inclusion_refusals_are_typed_and_say_what_mismatched() -> None:
    proof = merkle.inclusion_proof(2, 5, LEAVES)
    root = merkle.root_from_leaf_hashes(LEAVES[:5])
    merkle.verify_inclusion(2, 5, LEAVES[2], proof, root)
    with pytest.raises(InclusionProofError, match="outside a tree of size 5"):
        merkle.verify_inclusion(5, 5, LEAVES[2], proof, root)
    with pytest.raises(InclusionProofError, match="outside"):
        merkle.verify_inclusion(-1, 5, LEAVES[2], proof, root)
    with pytest.raises(InclusionProofError, match="wrong proof length"):
        merkle.verify_inclusion(2, 5, LEAVES[2], proof[:-1], root)
    with pytest.raises(InclusionProofError, match="wrong proof length"):
        merkle.verify_inclusion(2, 5, LEAVES[2], [*proof, proof[0]], root)
    with pytest.raises(InclusionProofError, match=r"proof\[1\] must be 32 bytes"):
        merkle.verify_inclusion(2, 5, LEAVES[2], [proof[0], proof[1][:31], proof[2]], root)
    with pytest.raises(InclusionProofError, match="leaf hash must be 32 bytes"):
        merkle.verify_inclusion(2, 5, LEAVES[2] + b"\x00", proof, root)
    with pytest.raises(InclusionProofError, match="root must be 32 bytes"):
        merkle.verify_inclusion(2, 5, LEAVES[2], proof, root[:16])
    with pytest.raises(RootMismatchError) as caught:
        merkle.verify_inclusion(2, 5, LEAVES[3], proof, root)
    assert caught.value.expected == root
    assert caught.value.calculated != root
    assert f"expected {root.hex()}, calculated {caught.value.calculated.hex()}" in str(caught.value)
    assert isinstance(caught.value, AnchoringError)
    assert isinstance(caught.value, ValueError)
    assert caught.value.code == "root_mismatch"


def test_consistency_refusals_follow_the_vector_conventions() -> None:
    root3 = merkle.root_from_leaf_hashes(LEAVES[:3])
    root7 = merkle.root_from_leaf_hashes(LEAVES[:7])
    proof = merkle.consistency_proof(3, 7, LEAVES)
    merkle.verify_consistency(3, 7, root3, root7, proof)
    with pytest.raises(ConsistencyProofError, match="empty tree"):
        merkle.verify_consistency(0, 7, merkle.EMPTY_ROOT, root7, [])
    with pytest.raises(ConsistencyProofError, match="empty tree"):
        merkle.verify_consistency(0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, [])
    with pytest.raises(ConsistencyProofError, match="smaller"):
        merkle.verify_consistency(7, 3, root7, root3, proof)
    with pytest.raises(ConsistencyProofError, match="empty proof"):
        merkle.verify_consistency(3, 3, root3, root3, proof)
    merkle.verify_consistency(3, 3, root3, root3, [])
    with pytest.raises(RootMismatchError):
        merkle.verify_consistency(3, 3, root3, root7, [])
    with pytest.raises(ConsistencyProofError, match="empty proof"):
        merkle.verify_consistency(3, 7, root3, root7, [])
    with pytest.raises(ConsistencyProofError, match="wrong proof length"):
        merkle.verify_consistency(3, 7, root3, root7, proof[:-1])
    with pytest.raises(ConsistencyProofError, match="root1 must be 32 bytes"):
        merkle.verify_consistency(3, 7, root3[:31], root7, proof)
    with pytest.raises(ConsistencyProofError, match=r"proof\[0\] must be 32 bytes"):
        merkle.verify_consistency(3, 7, root3, root7, [b"", *proof[1:]])
    with pytest.raises(RootMismatchError, match="root1 mismatch"):
        merkle.verify_consistency(3, 7, root7, root7, proof)
    with pytest.raises(RootMismatchError, match="root2 mismatch"):
        merkle.verify_consistency(3, 7, root3, root3, proof)


def test_range_and_append_refusals() -> None:
    with pytest.raises(InclusionProofError):
        merkle.inclusion_ranges(4, 4)
    with pytest.raises(ConsistencyProofError):
        merkle.consistency_ranges(0, 4)
    with pytest.raises(ConsistencyProofError):
        merkle.consistency_ranges(5, 4)
    assert merkle.consistency_ranges(4, 4) == []
    with pytest.raises(LogError):
        merkle.perfect_subtrees(3, 3)
    with pytest.raises(LogError):
        merkle.hash_from_subtrees([])
    with pytest.raises(LogError, match="frontier"):
        merkle.append_leaf([LEAVES[0]], 3, LEAVES[1])
    with pytest.raises(LogError, match="32 bytes"):
        merkle.append_leaf([], 0, b"short")
    with pytest.raises(LogError):
        merkle.inclusion_proof(0, 5, LEAVES[:4])
    with pytest.raises(InclusionProofError):
        merkle.inclusion_proof(5, 5, LEAVES)
    with pytest.raises(ConsistencyProofError, match="negative"):
        merkle.verify_consistency(-1, 5, LEAVES[0], LEAVES[1], [])
    with pytest.raises(ConsistencyProofError):
        merkle.consistency_proof(0, 4, LEAVES)


# ------------------------------------------------------------------------------------------
# Range arithmetic: exact shapes


def test_perfect_subtrees_cover_ranges_minimally() -> None:
    assert merkle.perfect_subtrees(0, 1) == [(0, 0)]
    assert merkle.perfect_subtrees(0, 8) == [(3, 0)]
    assert merkle.perfect_subtrees(0, 7) == [(2, 0), (1, 2), (0, 6)]
    assert merkle.perfect_subtrees(4, 7) == [(1, 2), (0, 6)]
    assert merkle.perfect_subtrees(3, 9) == [(0, 3), (2, 1), (0, 8)]
    assert merkle.perfect_subtrees(8, 16) == [(3, 1)]


def test_ranges_of_small_trees_match_rfc6962_examples() -> None:
    # RFC 6962 §2.1.3: tree of 7 leaves d0..d6; path for d3 is [d2, a, i].
    assert merkle.inclusion_ranges(3, 7) == [(2, 3), (0, 2), (4, 7)]
    # path for d6 in the 7-leaf tree is [j, i] = [d4..d5, d0..d3].
    assert merkle.inclusion_ranges(6, 7) == [(4, 6), (0, 4)]
    # RFC 6962 §2.1.3 consistency examples in the 7-leaf tree.
    assert merkle.consistency_ranges(3, 7) == [(2, 3), (3, 4), (0, 2), (4, 7)]
    assert merkle.consistency_ranges(4, 7) == [(4, 7)]
    assert merkle.consistency_ranges(6, 7) == [(4, 6), (6, 7), (0, 4)]


def test_append_leaf_reports_every_completed_subtree() -> None:
    frontier: list[bytes] = []
    frontier, completed = merkle.append_leaf(frontier, 0, LEAVES[0])
    assert completed == [(0, 0, LEAVES[0])]
    frontier, completed = merkle.append_leaf(frontier, 1, LEAVES[1])
    assert [(level, index) for level, index, _ in completed] == [(0, 1), (1, 0)]
    assert completed[1][2] == merkle.node_hash(LEAVES[0], LEAVES[1])
    frontier, completed = merkle.append_leaf(frontier, 2, LEAVES[2])
    assert [(level, index) for level, index, _ in completed] == [(0, 2)]
    frontier, completed = merkle.append_leaf(frontier, 3, LEAVES[3])
    assert [(level, index) for level, index, _ in completed] == [(0, 3), (1, 1), (2, 0)]
    assert frontier == [merkle.root_from_leaf_hashes(LEAVES[:4])]
    # On average two stored nodes per leaf.
    assert len(STORE) == 2 * MAX_SIZE - MAX_SIZE.bit_count()


def test_every_frontier_root_equals_the_reference_root() -> None:
    for size in range(MAX_SIZE + 1):
        frontier = FRONTIERS[size]
        assert len(frontier) == size.bit_count()
        root = merkle.hash_from_subtrees(frontier) if frontier else merkle.EMPTY_ROOT
        assert root == merkle.root_from_leaf_hashes(LEAVES[:size]), size


def test_stored_tree_heads_match_reference_for_every_size() -> None:
    for size in range(1, MAX_SIZE + 1):
        (head,) = _stored_range_hashes([(0, size)], size)
        assert head == merkle.hash_from_subtrees(FRONTIERS[size])


def test_all_proofs_of_small_trees_exhaustively() -> None:
    for size in range(1, 65):
        root = merkle.root_from_leaf_hashes(LEAVES[:size])
        for index in range(size):
            proof = merkle.inclusion_proof(index, size, LEAVES)
            assert _stored_range_hashes(merkle.inclusion_ranges(index, size), size) == proof
            merkle.verify_inclusion(index, size, LEAVES[index], proof, root)
        for size1 in range(1, size + 1):
            proof = merkle.consistency_proof(size1, size, LEAVES)
            assert _stored_range_hashes(merkle.consistency_ranges(size1, size), size) == proof
            root1 = merkle.root_from_leaf_hashes(LEAVES[:size1])
            merkle.verify_consistency(size1, size, root1, root, proof)


# ------------------------------------------------------------------------------------------
# Properties over all sizes up to 1,000

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)


@st.composite
def leaf_in_tree(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(1, MAX_SIZE))
    return draw(st.integers(0, size - 1)), size


@st.composite
def two_sizes(draw: st.DrawFn) -> tuple[int, int]:
    size2 = draw(st.integers(1, MAX_SIZE))
    return draw(st.integers(1, size2)), size2


@PROPERTY_SETTINGS
@given(leaf_in_tree(), st.integers(0, 2**16))
def test_inclusion_proofs_verify_and_any_bit_flip_fails(case: tuple[int, int], bit: int) -> None:
    index, size = case
    root = merkle.root_from_leaf_hashes(LEAVES[:size])
    proof = merkle.inclusion_proof(index, size, LEAVES)
    assert _stored_range_hashes(merkle.inclusion_ranges(index, size), size) == proof
    assert len(proof) <= size.bit_length()
    merkle.verify_inclusion(index, size, LEAVES[index], proof, root)

    with pytest.raises(RootMismatchError):
        merkle.verify_inclusion(index, size, _flip(LEAVES[index], bit), proof, root)
    with pytest.raises(RootMismatchError):
        merkle.verify_inclusion(index, size, LEAVES[index], proof, _flip(root, bit))
    for position in range(len(proof)):
        tampered = list(proof)
        tampered[position] = _flip(proof[position], bit)
        with pytest.raises(RootMismatchError):
            merkle.verify_inclusion(index, size, LEAVES[index], tampered, root)
    if size > 1:
        other = (index + 1 + bit % (size - 1)) % size
        with pytest.raises(ProofError):
            merkle.verify_inclusion(other, size, LEAVES[index], proof, root)


@PROPERTY_SETTINGS
@given(two_sizes(), st.integers(0, 2**16))
def test_consistency_proofs_verify_and_any_bit_flip_fails(case: tuple[int, int], bit: int) -> None:
    size1, size2 = case
    root1 = merkle.root_from_leaf_hashes(LEAVES[:size1])
    root2 = merkle.root_from_leaf_hashes(LEAVES[:size2])
    proof = merkle.consistency_proof(size1, size2, LEAVES)
    assert _stored_range_hashes(merkle.consistency_ranges(size1, size2), size2) == proof
    merkle.verify_consistency(size1, size2, root1, root2, proof)

    with pytest.raises(RootMismatchError):
        merkle.verify_consistency(size1, size2, _flip(root1, bit), root2, proof)
    with pytest.raises(RootMismatchError):
        merkle.verify_consistency(size1, size2, root1, _flip(root2, bit), proof)
    for position in range(len(proof)):
        tampered = list(proof)
        tampered[position] = _flip(proof[position], bit)
        with pytest.raises(RootMismatchError):
            merkle.verify_consistency(size1, size2, root1, root2, tampered)
    if size1 < size2:
        # A different history of the same length is not consistent with the old root.
        forked = [*LEAVES[: size1 - 1], _flip(LEAVES[size1 - 1], bit), *LEAVES[size1:size2]]
        forked_root = merkle.root_from_leaf_hashes(forked)
        with pytest.raises(RootMismatchError):
            merkle.verify_consistency(size1, size2, root1, forked_root, proof)


@PROPERTY_SETTINGS
@given(st.integers(0, MAX_SIZE - 1), st.integers(1, MAX_SIZE))
def test_perfect_subtrees_tile_any_range(lo: int, length: int) -> None:
    hi = min(lo + length, MAX_SIZE)
    if hi <= lo:
        return
    subtrees = merkle.perfect_subtrees(lo, hi)
    position = lo
    for level, index in subtrees:
        assert index << level == position, "subtrees must be contiguous, left to right"
        position = (index + 1) << level
    assert position == hi
    assert len(subtrees) <= 2 * (hi - lo).bit_length()


def test_completion_positions_follow_the_order_appends_complete_subtrees() -> None:
    frontier: list[bytes] = []
    position = 0
    for size in range(3000):
        assert merkle.nodes_before_leaf(size) == position
        frontier, completed = merkle.append_leaf(frontier, size, LEAVES[size % len(LEAVES)])
        for level, index, _ in completed:
            assert merkle.completion_position(level, index) == position
            position += 1


@PROPERTY_SETTINGS
@given(st.integers(0, 40), st.integers(0, 2**40))
def test_completion_position_of_any_subtree(level: int, index: int) -> None:
    position = merkle.completion_position(level, index)
    # Completed by leaf ((index + 1) << level) - 1, after the ``level`` subtrees below it.
    last_leaf = ((index + 1) << level) - 1
    assert position == merkle.nodes_before_leaf(last_leaf) + level
    # Every subtree completed later (here: its parent and its right neighbour) comes after it.
    assert merkle.completion_position(level + 1, index // 2) > position
    assert merkle.completion_position(level, index + 1) > position


def test_negative_subtrees_and_positions_are_refused() -> None:
    with pytest.raises(LogError):
        merkle.completion_position(-1, 0)
    with pytest.raises(LogError):
        merkle.completion_position(0, -1)


# ------------------------------------------------------------------------------------------
# Agreement with the Solidity verifier (ArchiveNotary.verifyConsistency on a real anvil)


@pytest.fixture(scope="module")
def solidity_verifier(consortium: Any, chain_rpc: Any) -> Callable[..., bool]:
    """``ArchiveNotary.verifyConsistency`` (a pure function) called through eth_call."""
    from anchoring.chain import RpcChain

    chain = RpcChain(chain_rpc, consortium.deployment)

    def verify(size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]) -> bool:
        (ok,) = chain.call(
            "ArchiveNotary", "verifyConsistency", [size1, size2, root1, root2, list(proof)]
        )
        return bool(ok)

    return verify


def _python_accepts(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> bool:
    try:
        merkle.verify_consistency(size1, size2, root1, root2, proof)
    except ProofError:
        return False
    return True


def test_solidity_and_python_agree_on_every_encodable_vector(
    solidity_verifier: Callable[..., bool],
) -> None:
    require_rfc6962_testdata()
    checked = 0
    for path in _vector_files("consistency"):
        case: dict[str, Any] = json.loads(path.read_text())
        proof = [_b64(p) for p in case["proof"] or []]
        root1, root2 = _b64(case["root1"]), _b64(case["root2"])
        if any(len(h) != merkle.HASH_SIZE for h in (root1, root2, *proof)):
            continue  # bytes32 cannot carry it; the ABI encoder refuses such input
        args = (case["size1"], case["size2"], root1, root2, proof)
        assert solidity_verifier(*args) == _python_accepts(*args) == (not case["wantErr"]), path
        checked += 1
    assert checked >= 70


@settings(max_examples=60, deadline=None)
@given(two_sizes(), st.integers(0, 2**16), st.sampled_from(["none", "proof", "root1", "root2"]))
def test_solidity_and_python_agree_on_random_proofs(
    solidity_verifier: Callable[..., bool], case: tuple[int, int], bit: int, flip: str
) -> None:
    size1, size2 = case
    root1 = merkle.root_from_leaf_hashes(LEAVES[:size1])
    root2 = merkle.root_from_leaf_hashes(LEAVES[:size2])
    proof = merkle.consistency_proof(size1, size2, LEAVES)
    if flip == "proof" and proof:
        proof[bit % len(proof)] = _flip(proof[bit % len(proof)], bit)
    elif flip == "root1":
        root1 = _flip(root1, bit)
    elif flip == "root2":
        root2 = _flip(root2, bit)
    tampered = flip != "none" and (flip != "proof" or bool(proof))
    args = (size1, size2, root1, root2, proof)
    assert solidity_verifier(*args) == _python_accepts(*args) == (not tampered)

"""The Solidity consistency verifier (``ArchiveNotary.verifyConsistency``, the code
``anchorCheckpoint`` runs) against the RFC 6962 vectors of transparency-dev/merkle and, differentially,
against the Python verifier ``anchoring.merkle.verify_consistency`` on generated and mutated proofs."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anchoring import merkle
from anchoring.chain import AbiError, ContractRevertError, RpcChain
from anchoring.errors import ProofError
from tests.contracts.helpers import MerkleLog
from tests.support import require_rfc6962_testdata


@dataclass(frozen=True)
class Vector:
    """One consistency vector."""

    name: str
    size1: int
    size2: int
    root1: bytes
    root2: bytes
    proof: list[bytes]
    want_error: bool

    @property
    def fits_bytes32(self) -> bool:
        """Whether every hash is 32 bytes (anything else cannot even be put in a bytes32)."""
        return all(len(x) == 32 for x in (self.root1, self.root2, *self.proof))


def load_vectors(folder: Path) -> list[Vector]:
    """Every ``consistency/**/*.json`` vector."""
    vectors = []
    for path in sorted((folder / "consistency").rglob("*.json")):
        doc = json.loads(path.read_text())
        vectors.append(
            Vector(
                name=str(path.relative_to(folder)),
                size1=doc["size1"],
                size2=doc["size2"],
                root1=base64.b64decode(doc["root1"]),
                root2=base64.b64decode(doc["root2"]),
                proof=[base64.b64decode(p) for p in doc["proof"] or []],
                want_error=doc["wantErr"],
            )
        )
    return vectors


def on_chain(
    chain: RpcChain, size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]
) -> bool:
    """The contract's verdict; a revert counts as a refusal."""
    try:
        (ok,) = chain.call(
            "ArchiveNotary", "verifyConsistency", [size1, size2, root1, root2, proof]
        )
    except ContractRevertError:
        return False
    return bool(ok)


def in_python(size1: int, size2: int, root1: bytes, root2: bytes, proof: list[bytes]) -> bool:
    """``anchoring.merkle``'s verdict."""
    try:
        merkle.verify_consistency(size1, size2, root1, root2, proof)
    except ProofError:
        return False
    return True


def test_consistency_vectors(chain: RpcChain) -> None:
    vectors = load_vectors(require_rfc6962_testdata())
    assert len(vectors) > 90
    wrong: list[str] = []
    for v in vectors:
        if not v.fits_bytes32:
            continue
        verdict = on_chain(chain, v.size1, v.size2, v.root1, v.root2, v.proof)
        if verdict == v.want_error:
            wrong.append(f"{v.name}: contract says {verdict}, wantErr {v.want_error}")
    assert wrong == []
    happy = [v for v in vectors if not v.want_error and v.fits_bytes32]
    refused = [v for v in vectors if v.want_error and v.fits_bytes32]
    assert len(happy) >= 5  # the happy path of every size folder
    assert len(refused) >= 60


def test_vectors_with_wrong_length_hashes_cannot_reach_the_contract(chain: RpcChain) -> None:
    """Hashes that are not 32 bytes are refused by the ABI layer instead of being zero-padded
    (eth_abi would pad them silently); on chain a hash is a ``bytes32`` by construction."""
    odd = [v for v in load_vectors(require_rfc6962_testdata()) if not v.fits_bytes32]
    assert odd, "the vectors include wrong-length hashes (trailing garbage, 'don't care' roots)"
    wrong: list[str] = []
    for v in odd:
        with pytest.raises(AbiError, match="bytes32 needs exactly 32 bytes"):
            chain.notary.encode_call(
                "verifyConsistency", [v.size1, v.size2, v.root1, v.root2, v.proof]
            )
        # Even zero-padded (what a careless client would send) each gets the expected verdict.
        padded = [x.ljust(32, b"\0") for x in (v.root1, v.root2, *v.proof)]
        verdict = on_chain(chain, v.size1, v.size2, padded[0], padded[1], padded[2:])
        if verdict == v.want_error:
            wrong.append(f"{v.name}: contract says {verdict} when padded, wantErr {v.want_error}")
    assert wrong == []


LOG = MerkleLog(300, seed="differential")
MUTATIONS = [
    "none",
    "flip",
    "drop_last",
    "drop_first",
    "append",
    "swap_roots",
    "size1+1",
    "size2-1",
]


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.tuples(st.integers(1, 300), st.integers(1, 300)).map(sorted),
    mutation=st.sampled_from(MUTATIONS),
    position=st.integers(0, 40),
)
def test_contract_agrees_with_python_verifier(
    chain: RpcChain, sizes: list[int], mutation: str, position: int
) -> None:
    size1, size2 = sizes
    root1, root2 = LOG.root(size1), LOG.root(size2)
    proof = LOG.consistency(size1, size2)
    if mutation == "flip" and proof:
        i = position % len(proof)
        proof[i] = bytes([proof[i][0] ^ 0x80]) + proof[i][1:]
    elif mutation == "drop_last" and proof:
        proof = proof[:-1]
    elif mutation == "drop_first" and proof:
        proof = proof[1:]
    elif mutation == "append":
        proof = [*proof, LOG.leaf_hashes[position]]
    elif mutation == "swap_roots":
        root1, root2 = root2, root1
    elif mutation == "size1+1":
        size1 += 1
    elif mutation == "size2-1":
        size2 -= 1
    expected = in_python(size1, size2, root1, root2, proof)
    assert on_chain(chain, size1, size2, root1, root2, proof) is expected
    if mutation == "none":
        assert expected is True

"""The local blob store writes and reads its CIDs without multiformats on the common path (the
fixity audit opens every blob); the strings and digests must be exactly multiformats' own."""

from __future__ import annotations

import os

from multiformats import CID, multihash

from node.blobstore.local import _digest_of, cid_for_sha256


def test_cids_are_multiformats_cids() -> None:
    for _ in range(500):
        digest = os.urandom(32)
        expected = str(CID("base32", 1, "raw", multihash.wrap(digest, "sha2-256")))
        assert cid_for_sha256(digest) == expected
        assert _digest_of(expected) == digest
        for base in ("base58btc", "base32upper", "base36"):  # other multibases: the slow path
            assert (
                _digest_of(str(CID(base, 1, "raw", multihash.wrap(digest, "sha2-256")))) == digest
            )


def test_what_is_not_a_raw_sha256_cid_names_no_blob() -> None:
    digest = os.urandom(32)
    good = cid_for_sha256(digest)
    dag_pb = str(CID("base32", 1, "dag-pb", multihash.wrap(digest, "sha2-256")))
    sha512 = str(CID("base32", 1, "raw", multihash.wrap(os.urandom(64), "sha2-512")))
    for bad in ("b" + "a" * 58, good[:-1] + "1", good[:-1], dag_pb, sha512, "", "b", "../etc"):
        assert _digest_of(bad) is None, bad

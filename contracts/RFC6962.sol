// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @title RFC6962
/// @notice Merkle tree hashing of RFC 6962 (node = SHA-256(0x01 || left || right)) and verification of
/// consistency proofs following RFC 9162 section 2.1.4.2, with the sha256 precompile.
/// @dev Conventions: a proof from size 0 is refused (nothing to be consistent with); equal sizes need
/// an empty proof and equal roots; a proof with extra or missing hashes is refused.
library RFC6962 {
    /// @notice Hash of an interior node.
    /// @dev Calls the sha256 precompile (address 2) directly on 65 bytes laid out just past the
    /// free-memory pointer, and reads the digest from scratch space. The only inline assembly of the
    /// project: the builtin `sha256(abi.encodePacked(...))` costs about 700 gas more per hash (it
    /// allocates and copies its input), which puts `anchorCheckpoint` with a 10^6-entry proof
    /// (20 to 21 nodes, up to 38 hashes) at 126k-132k gas instead of 109k-112k. Calling a precompile
    /// from assembly counts as reading the environment, hence `view`.
    /// @param left Hash of the left subtree.
    /// @param right Hash of the right subtree.
    /// @return result SHA-256(0x01 || left || right).
    function nodeHash(bytes32 left, bytes32 right) internal view returns (bytes32 result) {
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore8(ptr, 0x01)
            mstore(add(ptr, 1), left)
            mstore(add(ptr, 33), right)
            if iszero(staticcall(gas(), 0x02, ptr, 65, 0x00, 0x20)) { revert(0, 0) }
            result := mload(0x00)
        }
    }

    /// @notice Whether `proof` shows that the tree of `size2` leaves with root `root2` extends the tree
    /// of `size1` leaves with root `root1`.
    /// @param size1 Size of the older tree (must be positive).
    /// @param size2 Size of the newer tree (at least `size1`).
    /// @param root1 Root of the older tree.
    /// @param root2 Root of the newer tree.
    /// @param proof Consistency proof nodes, as produced by RFC 9162 section 2.1.4.1.
    /// @return True when the proof verifies.
    function verifyConsistency(
        uint64 size1,
        uint64 size2,
        bytes32 root1,
        bytes32 root2,
        bytes32[] calldata proof
    ) internal view returns (bool) {
        if (size1 == 0 || size1 > size2) return false;
        if (size1 == size2) return proof.length == 0 && root1 == root2;
        if (proof.length == 0) return false;
        unchecked {
            // Step numbers refer to RFC 9162 section 2.1.4.2. All arithmetic below is on values
            // that cannot wrap: sizes are positive here and only shifted right afterwards.
            uint256 next;
            bytes32 fr;
            if (size1 & (size1 - 1) == 0) {
                fr = root1; // step 2: size1 is a power of two, first_hash is prepended
            } else {
                fr = proof[0];
                next = 1;
            }
            bytes32 sr = fr; // step 5
            uint256 fn = size1 - 1; // step 3
            uint256 sn = size2 - 1;
            while (fn & 1 == 1) {
                // step 4
                fn >>= 1;
                sn >>= 1;
            }
            uint256 length = proof.length;
            for (; next < length; ++next) {
                // step 6
                if (sn == 0) return false;
                bytes32 c = proof[next];
                if (fn & 1 == 1 || fn == sn) {
                    fr = nodeHash(c, fr);
                    sr = nodeHash(c, sr);
                    while (fn & 1 == 0 && fn != 0) {
                        fn >>= 1;
                        sn >>= 1;
                    }
                } else {
                    sr = nodeHash(sr, c);
                }
                fn >>= 1;
                sn >>= 1;
            }
            return sn == 0 && fr == root1 && sr == root2; // step 7
        }
    }
}

// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {ConsortiumRegistry, ROLE_HOSPITAL} from "./ConsortiumRegistry.sol";
import {ArchiveNotary} from "./ArchiveNotary.sol";

/// @title AttestationRevocations
/// @notice Revocation list of the insurer attestations hospitals sign (docs/attestations.md). A
/// hospital revokes one of its own attestations with one cheap mapping write; a verifier checks
/// that an attestation is not revoked with one read, `revokedAt(issuer, attestationId) == 0`.
/// @dev Revocations are kept per issuer: a hospital writes only into its own namespace
/// (`msg.sender`), so no member can revoke another hospital's attestation. Only an active
/// hospital member of the registry the notary uses may revoke. A revocation is final.
contract AttestationRevocations {
    ArchiveNotary private immutable _notary;
    ConsortiumRegistry private immutable _registry;
    mapping(address issuer => mapping(bytes32 attestationId => uint64 revokedAt)) private _revoked;

    /// @notice Hospital `issuer` revoked its attestation `attestationId` at `revokedAt` (unix s).
    event AttestationRevoked(address indexed issuer, bytes32 indexed attestationId, uint64 revokedAt);

    /// @notice The caller is not an active hospital member.
    error RevocationsUnauthorized(address account);
    /// @notice The attestation id is zero.
    error RevocationsZeroId();
    /// @notice The caller already revoked this attestation.
    error RevocationsAlreadyRevoked(address issuer, bytes32 attestationId);

    /// @param notary_ The consortium's ArchiveNotary (its registry decides membership, and its
    /// address is the attestations' EIP-712 `verifyingContract`).
    constructor(ArchiveNotary notary_) {
        _notary = notary_;
        _registry = ConsortiumRegistry(notary_.registry());
    }

    /// @notice Revoke the caller's own attestation `attestationId`.
    /// @param attestationId The attestation's id (its `attestationId` field).
    function revoke(bytes32 attestationId) external {
        if (!_registry.isActive(msg.sender, ROLE_HOSPITAL)) revert RevocationsUnauthorized(msg.sender);
        if (attestationId == bytes32(0)) revert RevocationsZeroId();
        if (_revoked[msg.sender][attestationId] != 0) {
            revert RevocationsAlreadyRevoked(msg.sender, attestationId);
        }
        uint64 revokedTime = uint64(block.timestamp);
        _revoked[msg.sender][attestationId] = revokedTime;
        emit AttestationRevoked(msg.sender, attestationId, revokedTime);
    }

    /// @notice When `issuer` revoked `attestationId` (unix seconds), 0 when it is not revoked.
    /// @param issuer The hospital that signed the attestation.
    /// @param attestationId The attestation's id.
    /// @return The revocation time, or 0.
    function revokedAt(address issuer, bytes32 attestationId) external view returns (uint64) {
        return _revoked[issuer][attestationId];
    }

    /// @notice The ArchiveNotary this list belongs to.
    /// @return The notary.
    function notary() external view returns (ArchiveNotary) {
        return _notary;
    }

    /// @notice The registry deciding who may revoke.
    /// @return The registry.
    function registry() external view returns (ConsortiumRegistry) {
        return _registry;
    }
}

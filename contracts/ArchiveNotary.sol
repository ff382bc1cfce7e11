// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

import {
    ConsortiumRegistry, MAX_RECORD_CLASS, ROLE_HOSPITAL, ROLE_REGULATOR
} from "./ConsortiumRegistry.sol";
import {RFC6962} from "./RFC6962.sol";

/// @dev On-chain custody states of an archive, stored as `uint8`.
uint8 constant STATE_NONE = 0;
uint8 constant STATE_ARCHIVED = 1;
uint8 constant STATE_TRANSFER_PENDING = 2;
uint8 constant STATE_DESTROYED = 3;

/// @dev How far past the block time a trigger date may lie: a trigger is a calendar day sent as its
/// 00:00 UTC, and a day that has begun in a hospital's time zone (up to UTC+14) starts up to 14 hours
/// after 00:00 UTC of the same date; one day also absorbs clock skew between node and chain.
uint64 constant TRIGGER_DATE_SLACK = 1 days;

/// @title ArchiveNotary
/// @notice Anchors the checkpoints of every hospital's RFC 6962 event log (each one proven consistent
/// with the previous, so no hospital can rewrite its history) and keeps the custody state machine of
/// archives: NONE -> ARCHIVED <-> TRANSFER_PENDING -> DESTROYED, plus a legal-hold flag.
/// @dev Checks run in a fixed order: the caller's active role, then the archive's state, then the
/// caller's relation to the archive (custodian, recipient), then holds, then the arguments.
/// Membership and roles come from the `ConsortiumRegistry`, so a suspended member cannot act.
contract ArchiveNotary {

    /// @notice The custody record of one archive. `custodian` is the zero address while `state` is
    /// NONE; `pendingRecipient` is set only while TRANSFER_PENDING; `certificateHash` only once
    /// DESTROYED. `holdByRegulator` tells who placed the hold when `onHold` is true.
    struct ArchiveRecord {
        address custodian;
        uint8 state;
        bool onHold;
        bool holdByRegulator;
        uint8 recordClass;
        uint64 retentionDeadline;
        bytes32 commitment;
        address pendingRecipient;
        bytes32 certificateHash;
    }

    /// @notice One archive to register in `registerBatch`.
    struct Registration {
        bytes32 id;
        uint8 recordClass;
        uint64 triggerDate;
        uint64 retentionDeadline;
        bytes32 commitment;
        bytes32 holdReasonHash;
    }

    /// @notice One archive to destroy in `destroyBatch`.
    struct Destruction {
        bytes32 id;
        bytes32 certificateHash;
    }

    struct Checkpoint {
        uint64 size;
        uint64 anchoredAt;
        bytes32 root;
    }

    /// @dev Per-hospital summary kept in one slot so anchoring reads the previous size cheaply.
    struct LogHead {
        uint64 count;
        uint64 size;
    }

    ConsortiumRegistry private immutable _registry;
    mapping(bytes32 id => ArchiveRecord) private _archives;
    mapping(address hospital => LogHead) private _heads;
    mapping(address hospital => mapping(uint256 index => Checkpoint)) private _checkpoints;
    /// @dev The regulator whose hold is in force on an archive (zero when none, or when the hold is
    /// the custodian's own: the custodian is known from the record, and not storing it keeps a
    /// custodian's hold as cheap as before).
    mapping(bytes32 id => address placedBy) private _holdPlacedBy;

    /// @notice `hospital` anchored its log's checkpoint number `index` (0-based): `size` leaves, `root`.
    event CheckpointAnchored(address indexed hospital, uint64 indexed index, uint64 size, bytes32 root);
    /// @notice Archive `id` was registered with `custodian` as its first custodian.
    event ArchiveRegistered(
        bytes32 indexed id,
        address indexed custodian,
        uint8 recordClass,
        uint64 triggerDate,
        uint64 retentionDeadline,
        bytes32 commitment
    );
    /// @notice Custodian `from` offered archive `id` to hospital `to`.
    event TransferOffered(bytes32 indexed id, address indexed from, address indexed to);
    /// @notice Hospital `to` accepted archive `id` from `from` and is now its custodian.
    event TransferAccepted(bytes32 indexed id, address indexed from, address indexed to);
    /// @notice Custodian `from` withdrew its offer of archive `id` to `to`.
    event TransferCancelled(bytes32 indexed id, address indexed from, address indexed to);
    /// @notice Recipient `to` refused archive `id` offered by `from`.
    event TransferRejected(
        bytes32 indexed id, address indexed from, address indexed to, bytes32 reasonHash
    );
    /// @notice `by` placed (or, for a regulator over a custodian's hold, took over) a hold on `id`.
    event HoldPlaced(bytes32 indexed id, address indexed by, bool byRegulator, bytes32 reasonHash);
    /// @notice `by` released the hold on archive `id`.
    event HoldReleased(bytes32 indexed id, address indexed by, bytes32 reasonHash);
    /// @notice The custodian moved the retention deadline of `id` later.
    event RetentionExtended(
        bytes32 indexed id, address indexed custodian, uint64 previousDeadline, uint64 newDeadline
    );
    /// @notice Archive `id` was destroyed by its custodian; `certificateHash` identifies the
    /// destruction certificate.
    event ArchiveDestroyed(bytes32 indexed id, address indexed custodian, bytes32 certificateHash);

    /// @notice The registry address has no contract code.
    error NotaryInvalidRegistry(address registry);
    /// @notice `account` is not an active member with role `neededRole`.
    error NotaryUnauthorized(address account, uint8 neededRole);
    /// @notice Archive `id` is in state `current` where `expected` is required.
    error NotaryUnexpectedState(bytes32 id, uint8 current, uint8 expected);
    /// @notice `account` is not the custodian (`custodian`) of archive `id`.
    error NotaryNotCustodian(bytes32 id, address account, address custodian);
    /// @notice `account` is not the pending recipient (`recipient`) of archive `id`.
    error NotaryNotRecipient(bytes32 id, address account, address recipient);
    /// @notice `recipient` is not an active hospital other than the custodian.
    error NotaryInvalidRecipient(bytes32 id, address recipient);
    /// @notice Archive `id` is on hold (placed by a regulator when `byRegulator`).
    error NotaryOnHold(bytes32 id, bool byRegulator);
    /// @notice Archive `id` is already on hold by a party of at least the caller's standing.
    error NotaryAlreadyOnHold(bytes32 id, bool byRegulator);
    /// @notice Archive `id` is not on hold.
    error NotaryNotOnHold(bytes32 id);
    /// @notice Archive `id` is under the hold of regulator `placedBy`, still active: only it may
    /// release the hold.
    error NotaryHoldPlacedByAnother(bytes32 id, address placedBy);
    /// @notice Archive `id` must be kept until `deadline`; the block time is `timestamp`.
    error NotaryRetentionNotReached(bytes32 id, uint64 deadline, uint64 timestamp);
    /// @notice A retention deadline may only move later: `requested` is not after `current`.
    error NotaryRetentionNotExtended(bytes32 id, uint64 current, uint64 requested);
    /// @notice `recordClass` is not a known record class (0..6).
    error NotaryInvalidRecordClass(bytes32 id, uint8 recordClass);
    /// @notice A retention deadline must be positive.
    error NotaryInvalidRetentionDeadline(bytes32 id);
    /// @notice The trigger date `triggerDate` of archive `id` lies more than one day after the
    /// block time `timestamp`.
    error NotaryTriggerInFuture(bytes32 id, uint64 triggerDate, uint64 timestamp);
    /// @notice `retentionDeadline` of archive `id` is earlier than `minimumDeadline`: its trigger
    /// date plus `floorYears`, the floor of `recordClass`.
    error NotaryRetentionBelowFloor(
        bytes32 id,
        uint8 recordClass,
        uint16 floorYears,
        uint64 minimumDeadline,
        uint64 retentionDeadline
    );
    /// @notice A content commitment must not be zero.
    error NotaryMissingCommitment(bytes32 id);
    /// @notice A destruction certificate hash must not be zero.
    error NotaryMissingCertificate(bytes32 id);
    /// @notice `registerBatch` needs at least one archive.
    error NotaryEmptyBatch();
    /// @notice A checkpoint must be larger than the previous one (`previousSize`, 0 when none).
    error NotaryCheckpointNotGrowing(address hospital, uint64 previousSize, uint64 size);
    /// @notice The consistency proof from `previousSize` to `size` does not verify (the first
    /// checkpoint must come with an empty proof).
    error NotaryInvalidConsistencyProof(address hospital, uint64 previousSize, uint64 size);
    /// @notice `hospital` has `count` checkpoints, none at `index`.
    error NotaryUnknownCheckpoint(address hospital, uint64 index, uint64 count);

    /// @param registryContract The consortium registry that says who holds which role.
    constructor(ConsortiumRegistry registryContract) {
        if (address(registryContract).code.length == 0) {
            revert NotaryInvalidRegistry(address(registryContract));
        }
        _registry = registryContract;
    }

    // ------------------------------------------------------------------------------------------
    // Checkpoints

    /// @notice Anchor a new checkpoint of the caller's event log. Active hospitals only.
    /// @param size Number of leaves; strictly larger than the previous checkpoint's.
    /// @param root RFC 6962 root of the log at `size`.
    /// @param consistencyProof RFC 9162 consistency proof from the previous checkpoint; empty for the
    /// first checkpoint.
    function anchorCheckpoint(uint64 size, bytes32 root, bytes32[] calldata consistencyProof)
        external
    {
        _requireRole(ROLE_HOSPITAL);
        LogHead memory head = _heads[msg.sender];
        if (size <= head.size) revert NotaryCheckpointNotGrowing(msg.sender, head.size, size);
        if (head.count == 0) {
            if (consistencyProof.length != 0) {
                revert NotaryInvalidConsistencyProof(msg.sender, 0, size);
            }
        } else {
            bytes32 previousRoot = _checkpoints[msg.sender][head.count - 1].root;
            if (!RFC6962.verifyConsistency(head.size, size, previousRoot, root, consistencyProof)) {
                revert NotaryInvalidConsistencyProof(msg.sender, head.size, size);
            }
        }
        _checkpoints[msg.sender][head.count] =
            Checkpoint({size: size, anchoredAt: uint64(block.timestamp), root: root});
        _heads[msg.sender] = LogHead({count: head.count + 1, size: size});
        emit CheckpointAnchored(msg.sender, head.count, size, root);
    }

    /// @notice Number of checkpoints `hospital` anchored.
    /// @param hospital The hospital.
    /// @return The count.
    function checkpointCount(address hospital) external view returns (uint64) {
        return _heads[hospital].count;
    }

    /// @notice Checkpoint number `index` (0-based) of `hospital`.
    /// @param hospital The hospital.
    /// @param index Below `checkpointCount(hospital)`.
    /// @return size Number of leaves.
    /// @return root RFC 6962 root.
    /// @return anchoredAt Block time at which it was anchored.
    function checkpointAt(address hospital, uint64 index)
        external
        view
        returns (uint64 size, bytes32 root, uint64 anchoredAt)
    {
        uint64 count = _heads[hospital].count;
        if (index >= count) revert NotaryUnknownCheckpoint(hospital, index, count);
        Checkpoint storage c = _checkpoints[hospital][index];
        return (c.size, c.root, c.anchoredAt);
    }

    /// @notice Check an RFC 9162 consistency proof exactly as `anchorCheckpoint` does.
    /// @param size1 Older tree size (positive).
    /// @param size2 Newer tree size.
    /// @param root1 Older root.
    /// @param root2 Newer root.
    /// @param proof The proof.
    /// @return True when the proof verifies.
    function verifyConsistency(
        uint64 size1,
        uint64 size2,
        bytes32 root1,
        bytes32 root2,
        bytes32[] calldata proof
    ) external view returns (bool) {
        return RFC6962.verifyConsistency(size1, size2, root1, root2, proof);
    }

    // ------------------------------------------------------------------------------------------
    // Custody

    /// @notice Register archive `id` with the caller as custodian. Active hospitals only.
    /// @dev A record the custodian put on legal hold before archiving it is registered on hold, in
    /// the same transaction, so the chain never shows it unheld (`HoldPlaced` follows
    /// `ArchiveRegistered`).
    /// @param id The archive id (16 zero bytes followed by the 16 ULID bytes).
    /// The deadline must be at least the class's floor (`ConsortiumRegistry.retentionFloor`) after
    /// the trigger date, counted in calendar years (`minimumDeadline`).
    /// @param recordClass Record class 0..6.
    /// @param triggerDate Unix time of 00:00 UTC of the day the retention clock runs from (last
    /// visit, last discharge or the record's date); at most one day after the block time.
    /// @param retentionDeadline Unix time before which the archive cannot be destroyed (positive,
    /// at least `minimumDeadline(recordClass, triggerDate)`).
    /// @param commitment Content commitment (non-zero).
    /// @param holdReasonHash Zero, or the reason hash of the custodian's hold in force at archiving.
    function register(
        bytes32 id,
        uint8 recordClass,
        uint64 triggerDate,
        uint64 retentionDeadline,
        bytes32 commitment,
        bytes32 holdReasonHash
    ) external {
        uint256 floors = _requireHospitalFloors();
        _register(
            id,
            recordClass,
            _floorOf(floors, recordClass),
            triggerDate,
            retentionDeadline,
            commitment,
            holdReasonHash
        );
    }

    /// @notice Register several archives at once with the caller as custodian; all or nothing.
    /// Active hospitals only.
    /// @param registrations The archives (at least one), each as for `register`.
    function registerBatch(Registration[] calldata registrations) external {
        uint256 floors = _requireHospitalFloors();
        uint256 n = registrations.length;
        if (n == 0) revert NotaryEmptyBatch();
        for (uint256 i = 0; i < n;) {
            // The six words of `registrations[i]` read directly (the ABI decoder checked at entry
            // that the whole array lies within the calldata), each narrow field range-checked as
            // the decoder would: a cheaper loop than one decoder call per field.
            bytes32 id;
            uint256 recordClass;
            uint256 triggerDate;
            uint256 retentionDeadline;
            bytes32 commitment;
            bytes32 holdReasonHash;
            assembly ("memory-safe") {
                let p := add(registrations.offset, mul(i, 0xc0))
                id := calldataload(p)
                recordClass := calldataload(add(p, 0x20))
                triggerDate := calldataload(add(p, 0x40))
                retentionDeadline := calldataload(add(p, 0x60))
                commitment := calldataload(add(p, 0x80))
                holdReasonHash := calldataload(add(p, 0xa0))
            }
            if (
                recordClass > type(uint8).max || triggerDate > type(uint64).max
                    || retentionDeadline > type(uint64).max
            ) revert();
            _register(
                id,
                recordClass,
                _floorOf(floors, recordClass),
                triggerDate,
                retentionDeadline,
                commitment,
                holdReasonHash
            );
            unchecked {
                ++i;
            }
        }
    }

    /// @notice Offer custody of archive `id` to hospital `to`. Custodian only, not on hold.
    /// @param id The archive (ARCHIVED).
    /// @param to An active hospital other than the caller.
    function offerTransfer(bytes32 id, address to) external {
        _requireRole(ROLE_HOSPITAL);
        ArchiveRecord storage a = _archives[id];
        _requireState(id, a.state, STATE_ARCHIVED);
        _requireCustodian(id, a);
        _requireNoHold(id, a);
        if (to == msg.sender || !_registry.isActive(to, ROLE_HOSPITAL)) {
            revert NotaryInvalidRecipient(id, to);
        }
        a.state = STATE_TRANSFER_PENDING;
        a.pendingRecipient = to;
        emit TransferOffered(id, msg.sender, to);
    }

    /// @notice Accept custody of archive `id`. Pending recipient only, not on hold.
    /// @param id The archive (TRANSFER_PENDING).
    function acceptTransfer(bytes32 id) external {
        _requireRole(ROLE_HOSPITAL);
        ArchiveRecord storage a = _archives[id];
        _requireState(id, a.state, STATE_TRANSFER_PENDING);
        _requireRecipient(id, a);
        _requireNoHold(id, a);
        address from = a.custodian;
        a.custodian = msg.sender;
        a.state = STATE_ARCHIVED;
        a.pendingRecipient = address(0);
        emit TransferAccepted(id, from, msg.sender);
    }

    /// @notice Withdraw the pending offer of archive `id`. Custodian only.
    /// @param id The archive (TRANSFER_PENDING).
    function cancelTransfer(bytes32 id) external {
        _requireRole(ROLE_HOSPITAL);
        ArchiveRecord storage a = _archives[id];
        _requireState(id, a.state, STATE_TRANSFER_PENDING);
        _requireCustodian(id, a);
        address to = a.pendingRecipient;
        a.state = STATE_ARCHIVED;
        a.pendingRecipient = address(0);
        emit TransferCancelled(id, msg.sender, to);
    }

    /// @notice Refuse the offer of archive `id`. Pending recipient only.
    /// @param id The archive (TRANSFER_PENDING).
    /// @param reasonHash Hash of the reason, kept off chain.
    function rejectTransfer(bytes32 id, bytes32 reasonHash) external {
        _requireRole(ROLE_HOSPITAL);
        ArchiveRecord storage a = _archives[id];
        _requireState(id, a.state, STATE_TRANSFER_PENDING);
        _requireRecipient(id, a);
        a.state = STATE_ARCHIVED;
        a.pendingRecipient = address(0);
        emit TransferRejected(id, a.custodian, msg.sender, reasonHash);
    }

    /// @notice Place a legal hold on archive `id`. An active regulator, or the custodian. A regulator
    /// placing a hold over the custodian's own hold takes it over (only a regulator can then release it).
    /// A regulator's hold records the regulator (`holdPlacedBy`).
    /// @param id The archive (ARCHIVED or TRANSFER_PENDING).
    /// @param reasonHash Hash of the reason, kept off chain.
    function placeHold(bytes32 id, bytes32 reasonHash) external {
        bool byRegulator = _requireRegulatorOrHospital();
        ArchiveRecord storage a = _archives[id];
        _requireLive(id, a);
        if (!byRegulator) _requireCustodian(id, a);
        if (a.onHold && (a.holdByRegulator || !byRegulator)) {
            revert NotaryAlreadyOnHold(id, a.holdByRegulator);
        }
        a.onHold = true;
        a.holdByRegulator = byRegulator;
        if (byRegulator) _holdPlacedBy[id] = msg.sender;
        emit HoldPlaced(id, msg.sender, byRegulator, reasonHash);
    }

    /// @notice Release the hold on archive `id`. A regulator's hold only by the regulator that
    /// placed it — or, once that regulator is no longer an active regulator (suspended, role
    /// changed), by any active regulator, so a hold never outlives its only releaser; a hospital
    /// never releases a regulator's hold. The custodian's own hold only by the custodian.
    /// @param id The archive (ARCHIVED or TRANSFER_PENDING, on hold).
    /// @param reasonHash Hash of the reason, kept off chain.
    function releaseHold(bytes32 id, bytes32 reasonHash) external {
        bool byRegulator = _requireRegulatorOrHospital();
        ArchiveRecord storage a = _archives[id];
        _requireLive(id, a);
        if (!a.onHold) revert NotaryNotOnHold(id);
        if (a.holdByRegulator) {
            if (!byRegulator) revert NotaryUnauthorized(msg.sender, ROLE_REGULATOR);
            address placedBy = _holdPlacedBy[id];
            if (
                placedBy != msg.sender && placedBy != address(0)
                    && _registry.isActive(placedBy, ROLE_REGULATOR)
            ) {
                revert NotaryHoldPlacedByAnother(id, placedBy);
            }
            delete _holdPlacedBy[id];
        } else {
            _requireCustodian(id, a);
        }
        a.onHold = false;
        a.holdByRegulator = false;
        emit HoldReleased(id, msg.sender, reasonHash);
    }

    /// @notice The regulator whose hold is in force on archive `id` (zero when not on hold or when
    /// the hold is the custodian's own).
    /// @param id The archive.
    /// @return The placer's address.
    function holdPlacedBy(bytes32 id) external view returns (address) {
        return _holdPlacedBy[id];
    }

    /// @notice Move the retention deadline of archive `id` later. Custodian only.
    /// @param id The archive (ARCHIVED or TRANSFER_PENDING).
    /// @param newDeadline Strictly after the current deadline.
    function extendRetention(bytes32 id, uint64 newDeadline) external {
        _requireRole(ROLE_HOSPITAL);
        ArchiveRecord storage a = _archives[id];
        _requireLive(id, a);
        _requireCustodian(id, a);
        uint64 current = a.retentionDeadline;
        if (newDeadline <= current) revert NotaryRetentionNotExtended(id, current, newDeadline);
        a.retentionDeadline = newDeadline;
        emit RetentionExtended(id, msg.sender, current, newDeadline);
    }

    /// @notice Record the destruction of archive `id` (terminal). Custodian only, not on hold, not
    /// pending transfer, and only once the retention deadline has passed.
    /// @param id The archive (ARCHIVED).
    /// @param certificateHash Hash of the destruction certificate (non-zero).
    function destroy(bytes32 id, bytes32 certificateHash) external {
        _requireRole(ROLE_HOSPITAL);
        _destroy(id, certificateHash);
    }

    /// @notice Record the destruction of several archives at once; all or nothing (one refusal
    /// reverts the whole batch with that archive's error). Each archive as for `destroy`.
    /// @param destructions The archives and their certificate hashes (at least one).
    function destroyBatch(Destruction[] calldata destructions) external {
        _requireRole(ROLE_HOSPITAL);
        uint256 n = destructions.length;
        if (n == 0) revert NotaryEmptyBatch();
        for (uint256 i = 0; i < n; ++i) {
            Destruction calldata d = destructions[i];
            _destroy(d.id, d.certificateHash);
        }
    }

    /// @notice The whole custody record of archive `id` (all zero when never registered).
    /// @param id The archive.
    /// @return The record.
    function archive(bytes32 id) external view returns (ArchiveRecord memory) {
        return _archives[id];
    }

    /// @notice The earliest retention deadline `register` accepts for `recordClass` and
    /// `triggerDate`: 00:00 UTC of the trigger's day plus the class's floor in calendar years
    /// (29 February plus a number of years landing in a common year gives 28 February).
    /// @param recordClass Record class 0..6.
    /// @param triggerDate Unix time within the trigger's day.
    /// @return Unix time of the minimum deadline.
    function minimumDeadline(uint8 recordClass, uint64 triggerDate)
        external
        view
        returns (uint64)
    {
        if (recordClass > MAX_RECORD_CLASS) revert NotaryInvalidRecordClass(0, recordClass);
        return uint64(_addYears(triggerDate, _registry.retentionFloor(recordClass)));
    }

    /// @notice The consortium registry this notary asks about roles.
    /// @return The registry's address.
    function registry() external view returns (address) {
        return address(_registry);
    }

    // ------------------------------------------------------------------------------------------
    // Internals

    /// @dev `floorYears` is the floor of `recordClass` (0 when the class is unknown: refused here).
    /// Arguments are full words holding in-range values (`recordClass` below 2^8, the times below
    /// 2^64): the callers' ABI decoding or range checks guarantee it.
    function _register(
        bytes32 id,
        uint256 recordClass,
        uint256 floorYears,
        uint256 triggerDate,
        uint256 retentionDeadline,
        bytes32 commitment,
        bytes32 holdReasonHash
    ) private {
        ArchiveRecord storage a = _archives[id];
        uint8 current = a.state;
        if (current != STATE_NONE) revert NotaryUnexpectedState(id, current, STATE_NONE);
        if (recordClass > MAX_RECORD_CLASS) revert NotaryInvalidRecordClass(id, uint8(recordClass));
        if (retentionDeadline == 0) revert NotaryInvalidRetentionDeadline(id);
        uint256 latestTrigger;
        unchecked {
            latestTrigger = block.timestamp + TRIGGER_DATE_SLACK; // no block time comes near 2^256
        }
        if (triggerDate > latestTrigger) {
            revert NotaryTriggerInFuture(id, uint64(triggerDate), uint64(block.timestamp));
        }
        uint256 minimum = _addYears(triggerDate, floorYears);
        if (retentionDeadline < minimum) {
            revert NotaryRetentionBelowFloor(
                id,
                uint8(recordClass),
                uint16(floorYears),
                uint64(minimum),
                uint64(retentionDeadline)
            );
        }
        if (commitment == bytes32(0)) revert NotaryMissingCommitment(id);
        bool held = holdReasonHash != bytes32(0);
        // The record's first slot (custodian, state, onHold, holdByRegulator, recordClass,
        // retentionDeadline, in declaration order from the low bytes) is all zero while the state
        // is NONE: written in one SSTORE instead of five read-modify-writes.
        uint256 first = uint256(uint160(msg.sender)) | (uint256(STATE_ARCHIVED) << 160)
            | (held ? uint256(1) << 168 : 0) | (recordClass << 184) | (retentionDeadline << 192);
        assembly ("memory-safe") {
            sstore(a.slot, first)
        }
        a.commitment = commitment;
        emit ArchiveRegistered(
            id,
            msg.sender,
            uint8(recordClass),
            uint64(triggerDate),
            uint64(retentionDeadline),
            commitment
        );
        if (held) emit HoldPlaced(id, msg.sender, false, holdReasonHash);
    }

    /// @dev The destruction of one archive; the caller checked the role.
    function _destroy(bytes32 id, bytes32 certificateHash) private {
        ArchiveRecord storage a = _archives[id];
        _requireState(id, a.state, STATE_ARCHIVED);
        _requireCustodian(id, a);
        _requireNoHold(id, a);
        if (certificateHash == bytes32(0)) revert NotaryMissingCertificate(id);
        if (block.timestamp < a.retentionDeadline) {
            revert NotaryRetentionNotReached(id, a.retentionDeadline, uint64(block.timestamp));
        }
        a.state = STATE_DESTROYED;
        a.certificateHash = certificateHash;
        emit ArchiveDestroyed(id, msg.sender, certificateHash);
    }

    /// @dev 00:00 UTC of the day of `time`, plus `yearCount` calendar years (29 February to 28
    /// February in a common year). After H. Hinnant, "chrono-compatible low-level date algorithms"
    /// (days_from_civil / civil_from_days), in years that begin on 1 March: adding years keeps the
    /// day of such a year, whose last day (365) is 29 February, so only that day needs a look at
    /// the target year; day counts from 1 March of year 0, for dates from 1970 on.
    function _addYears(uint256 time, uint256 yearCount) private pure returns (uint256) {
        // Unchecked: every intermediate is non-negative and far below 2^256 for a time below 2^64
        // and a year count below 2^16.
        unchecked {
            uint256 z = time / 1 days + 719_468;
            uint256 era = z / 146_097;
            uint256 doe = z - era * 146_097;
            uint256 yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
            uint256 doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
            uint256 year = era * 400 + yoe + yearCount; // its February is in calendar year + 1
            if (doy == 365) {
                uint256 february = year + 1;
                if (february % 4 != 0 || (february % 100 == 0 && february % 400 != 0)) doy = 364;
            }
            return (year * 365 + year / 4 - year / 100 + year / 400 + doy - 719_468) * 1 days;
        }
    }

    /// @dev The one state guard: archive `id` must be in state `expected`.
    function _requireState(bytes32 id, uint8 current, uint8 expected) private pure {
        if (current != expected) revert NotaryUnexpectedState(id, current, expected);
    }

    /// @dev ARCHIVED or TRANSFER_PENDING; anything else is reported against ARCHIVED.
    function _requireLive(bytes32 id, ArchiveRecord storage a) private view {
        uint8 current = a.state;
        if (current != STATE_TRANSFER_PENDING) _requireState(id, current, STATE_ARCHIVED);
    }

    /// @dev The caller must be an active hospital (as `_requireRole(ROLE_HOSPITAL)`); returns the
    /// registry's packed retention floors, read in the same call.
    function _requireHospitalFloors() private view returns (uint256 floors) {
        bool active;
        (active, floors) = _registry.activeWithFloors(msg.sender, ROLE_HOSPITAL);
        if (!active) revert NotaryUnauthorized(msg.sender, ROLE_HOSPITAL);
    }

    /// @dev The floor in years of `recordClass` in the packed `floors` (meaningless for a class
    /// above `MAX_RECORD_CLASS`, which `_register` refuses before using it).
    function _floorOf(uint256 floors, uint256 recordClass) private pure returns (uint256) {
        return (floors >> (recordClass << 4)) & 0xffff;
    }

    function _requireRole(uint8 role) private view {
        if (!_registry.isActive(msg.sender, role)) revert NotaryUnauthorized(msg.sender, role);
    }

    /// @dev Returns true for an active regulator, false for an active hospital, reverts otherwise.
    function _requireRegulatorOrHospital() private view returns (bool) {
        if (_registry.isActive(msg.sender, ROLE_REGULATOR)) return true;
        if (_registry.isActive(msg.sender, ROLE_HOSPITAL)) return false;
        revert NotaryUnauthorized(msg.sender, ROLE_REGULATOR);
    }

    function _requireCustodian(bytes32 id, ArchiveRecord storage a) private view {
        if (a.custodian != msg.sender) revert NotaryNotCustodian(id, msg.sender, a.custodian);
    }

    function _requireRecipient(bytes32 id, ArchiveRecord storage a) private view {
        if (a.pendingRecipient != msg.sender) {
            revert NotaryNotRecipient(id, msg.sender, a.pendingRecipient);
        }
    }

    function _requireNoHold(bytes32 id, ArchiveRecord storage a) private view {
        if (a.onHold) revert NotaryOnHold(id, a.holdByRegulator);
    }
}

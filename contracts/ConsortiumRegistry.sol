// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.37;

/// @dev Member roles, stored as `uint8`. 0 means "not a member".
uint8 constant ROLE_NONE = 0;
uint8 constant ROLE_HOSPITAL = 1;
uint8 constant ROLE_REGULATOR = 2;
uint8 constant ROLE_INSURER = 3;
uint8 constant ROLE_AUDITOR = 4;

/// @dev Member status, stored as `uint8`.
uint8 constant STATUS_NONE = 0;
uint8 constant STATUS_ACTIVE = 1;
uint8 constant STATUS_SUSPENDED = 2;

/// @dev Proposal kinds, stored as `uint8`.
uint8 constant PROPOSAL_ADMIT = 1;
uint8 constant PROPOSAL_SUSPEND = 2;
uint8 constant PROPOSAL_REINSTATE = 3;
uint8 constant PROPOSAL_CHANGE_ROLE = 4;
uint8 constant PROPOSAL_RETENTION_FLOOR = 5;

/// @dev Record classes run from 0 (OUTPATIENT) to 6 (ADMINISTRATIVE), in the order of
/// `anchoring.events.RecordClass`: OUTPATIENT, EMERGENCY, INPATIENT, LAB, IMAGING, NURSING,
/// ADMINISTRATIVE.
uint8 constant MAX_RECORD_CLASS = 6;
/// @dev Upper bound of a retention floor, in years (keeps the notary's date arithmetic in range).
uint16 constant MAX_RETENTION_FLOOR_YEARS = 200;

/// @dev Proposal states as reported by `proposalState`.
uint8 constant PROPOSAL_STATE_NONE = 0;
uint8 constant PROPOSAL_STATE_OPEN = 1;
uint8 constant PROPOSAL_STATE_EXECUTED = 2;
uint8 constant PROPOSAL_STATE_EXPIRED = 3;

/// @title ConsortiumRegistry
/// @notice Members of an ArchiveChain consortium: their role (HOSPITAL=1, REGULATOR=2, INSURER=3,
/// AUDITOR=4), display name, 33-byte compressed secp256k1 encryption public key and status
/// (ACTIVE=1, SUSPENDED=2).
/// @dev The deployer bootstraps the first hospitals and then calls `finishBootstrap`, after which it
/// has no power at all. From then on admitting, suspending, reinstating a member or changing its role
/// goes through propose -> approve -> execute, each step by an active hospital, before the proposal
/// expires, with approvals from a strict majority of the hospitals that are active when it executes.
contract ConsortiumRegistry {
    /// @notice A member record (`role` 0 and `status` 0 for an address that is not a member).
    struct Member {
        uint8 role;
        uint8 status;
        uint64 joinedAt;
        string name;
        bytes publicKey;
    }

    /// @notice A governance proposal. `role` is the role to give (ADMIT, CHANGE_ROLE), or the record
    /// class whose floor changes (RETENTION_FLOOR, years in `proposedRetentionFloor`); `name` and
    /// `publicKey` are only set for ADMIT; `subject` is the zero address for RETENTION_FLOOR. `approvers` lists every hospital that approved, in order.
    struct Proposal {
        uint8 kind;
        uint8 role;
        bool executed;
        uint64 createdAt;
        uint64 expiresAt;
        address proposer;
        address subject;
        string name;
        bytes publicKey;
        address[] approvers;
    }

    uint256 private constant _MAX_NAME_BYTES = 64;
    uint256 private constant _PUBLIC_KEY_BYTES = 33;

    address private immutable _deployer;
    uint64 private immutable _proposalLifetime;

    bool private _bootstrapping = true;
    uint256 private _activeHospitals;
    address[] private _memberList;
    mapping(address account => Member) private _members;
    uint256 private _proposalCount;
    mapping(uint256 id => Proposal) private _proposals;
    mapping(uint256 id => mapping(address approver => bool)) private _approved;
    /// @dev Minimum retention in years per record class (one slot); the legal floors of
    /// 医疗机构病历管理规定 (2013) from deployment on, changed only by governance.
    uint16[7] private _retentionFloorYears = [uint16(15), 15, 30, 1, 1, 1, 1];
    mapping(uint256 id => uint16 floorYears) private _proposedFloorYears;

    /// @notice A member joined (by bootstrap when `proposalId` is 0, otherwise by that proposal).
    event MemberAdmitted(
        address indexed account, uint8 role, string name, bytes publicKey, uint256 indexed proposalId
    );
    /// @notice A member was suspended by proposal `proposalId`.
    event MemberSuspended(address indexed account, uint256 indexed proposalId);
    /// @notice A suspended member was made active again by proposal `proposalId`.
    event MemberReinstated(address indexed account, uint256 indexed proposalId);
    /// @notice A member's role changed from `previousRole` to `newRole` by proposal `proposalId`.
    event MemberRoleChanged(
        address indexed account, uint8 previousRole, uint8 newRole, uint256 indexed proposalId
    );
    /// @notice A member replaced its own encryption public key.
    event PublicKeyRotated(address indexed account, bytes publicKey);
    /// @notice The deployer closed the bootstrap phase with `hospitalCount` active hospitals.
    event BootstrapFinished(uint256 hospitalCount);
    /// @notice A hospital proposed a change; the proposer's approval is already counted.
    event ProposalCreated(
        uint256 indexed id,
        uint8 kind,
        address indexed subject,
        address indexed proposer,
        uint8 role,
        uint64 expiresAt
    );
    /// @notice A hospital approved proposal `id`.
    event ProposalApproved(uint256 indexed id, address indexed approver);
    /// @notice Proposal `id` was executed by `executor`.
    event ProposalExecuted(uint256 indexed id, address indexed executor);
    /// @notice Proposal `id` would set the retention floor of `recordClass` to `floorYears`.
    event RetentionFloorProposed(uint256 indexed id, uint8 indexed recordClass, uint16 floorYears);
    /// @notice The retention floor of `recordClass` changed from `previousYears` to `floorYears`
    /// by proposal `proposalId`.
    event RetentionFloorChanged(
        uint8 indexed recordClass, uint16 previousYears, uint16 floorYears, uint256 indexed proposalId
    );

    /// @notice Only the deployer may do this, and only during bootstrap.
    error RegistryNotDeployer(address account);
    /// @notice The bootstrap phase is over.
    error RegistryBootstrapFinished();
    /// @notice Governance starts only after `finishBootstrap`.
    error RegistryBootstrapNotFinished();
    /// @notice Bootstrap cannot finish without at least one hospital.
    error RegistryNoHospitals();
    /// @notice `account` lacks the active role `neededRole`.
    error RegistryUnauthorized(address account, uint8 neededRole);
    /// @notice The zero address cannot be a member.
    error RegistryZeroAddress();
    /// @notice `role` is not one of HOSPITAL, REGULATOR, INSURER, AUDITOR.
    error RegistryInvalidRole(uint8 role);
    /// @notice A display name must be 1 to 64 bytes long; this one is `length` bytes.
    error RegistryInvalidName(uint256 length);
    /// @notice A public key must be a 33-byte compressed secp256k1 key (prefix 0x02 or 0x03).
    error RegistryInvalidPublicKey(bytes publicKey);
    /// @notice `account` is already a member.
    error RegistryAlreadyMember(address account);
    /// @notice `account` is not a member.
    error RegistryNotMember(address account);
    /// @notice `account` has status `current` where `expected` is required.
    error RegistryUnexpectedStatus(address account, uint8 current, uint8 expected);
    /// @notice `account` already has role `role`.
    error RegistrySameRole(address account, uint8 role);
    /// @notice The change would leave the consortium without an active hospital.
    error RegistryLastHospital(address account);
    /// @notice No proposal has id `id`.
    error RegistryUnknownProposal(uint256 id);
    /// @notice Proposal `id` expired at `expiresAt`.
    error RegistryProposalExpired(uint256 id, uint64 expiresAt);
    /// @notice Proposal `id` was already executed.
    error RegistryProposalAlreadyExecuted(uint256 id);
    /// @notice `account` already approved proposal `id`.
    error RegistryAlreadyApproved(uint256 id, address account);
    /// @notice Proposal `id` has `approvals` valid approvals; `required` are needed.
    error RegistryQuorumNotReached(uint256 id, uint256 approvals, uint256 required);
    /// @notice `index` is not below the member count `count`.
    error RegistryIndexOutOfRange(uint256 index, uint256 count);
    /// @notice A proposal lifetime must be positive.
    error RegistryInvalidLifetime();
    /// @notice `recordClass` is not a known record class (0..6).
    error RegistryInvalidRecordClass(uint8 recordClass);
    /// @notice A retention floor must be 1 to `maxYears` years; `floorYears` is not.
    error RegistryInvalidRetentionFloor(uint8 recordClass, uint16 floorYears, uint16 maxYears);
    /// @notice The retention floor of `recordClass` is already `floorYears`.
    error RegistrySameRetentionFloor(uint8 recordClass, uint16 floorYears);

    /// @param lifetime Seconds a proposal stays open for approval and execution.
    constructor(uint64 lifetime) {
        if (lifetime == 0) revert RegistryInvalidLifetime();
        _deployer = msg.sender;
        _proposalLifetime = lifetime;
    }

    // ------------------------------------------------------------------------------------------
    // Bootstrap

    /// @notice Admit a founding hospital. Deployer only, before `finishBootstrap`.
    /// @param account The hospital's address.
    /// @param name Display name (1 to 64 bytes).
    /// @param publicKey 33-byte compressed secp256k1 encryption public key.
    function bootstrapHospital(address account, string calldata name, bytes calldata publicKey)
        external
    {
        _requireBootstrapDeployer();
        _validateAdmission(account, ROLE_HOSPITAL, name, publicKey);
        _admit(account, ROLE_HOSPITAL, name, publicKey, 0);
    }

    /// @notice End the bootstrap phase for good; the deployer keeps no power afterwards.
    function finishBootstrap() external {
        _requireBootstrapDeployer();
        if (_activeHospitals == 0) revert RegistryNoHospitals();
        _bootstrapping = false;
        emit BootstrapFinished(_activeHospitals);
    }

    // ------------------------------------------------------------------------------------------
    // Governance

    /// @notice Propose admitting a new member. Active hospitals only; counts as the proposer's approval.
    /// @param account The future member's address.
    /// @param role HOSPITAL, REGULATOR, INSURER or AUDITOR.
    /// @param name Display name (1 to 64 bytes).
    /// @param publicKey 33-byte compressed secp256k1 encryption public key.
    /// @return id The new proposal's id.
    function proposeAdmission(
        address account,
        uint8 role,
        string calldata name,
        bytes calldata publicKey
    ) external returns (uint256 id) {
        _requireGovernor();
        _validateAdmission(account, role, name, publicKey);
        id = _createProposal(PROPOSAL_ADMIT, account, role);
        Proposal storage p = _proposals[id];
        p.name = name;
        p.publicKey = publicKey;
    }

    /// @notice Propose suspending an active member. Active hospitals only.
    /// @param account The member to suspend.
    /// @return id The new proposal's id.
    function proposeSuspension(address account) external returns (uint256 id) {
        _requireGovernor();
        _validateChange(PROPOSAL_SUSPEND, account, ROLE_NONE);
        id = _createProposal(PROPOSAL_SUSPEND, account, ROLE_NONE);
    }

    /// @notice Propose making a suspended member active again. Active hospitals only.
    /// @param account The suspended member.
    /// @return id The new proposal's id.
    function proposeReinstatement(address account) external returns (uint256 id) {
        _requireGovernor();
        _validateChange(PROPOSAL_REINSTATE, account, ROLE_NONE);
        id = _createProposal(PROPOSAL_REINSTATE, account, ROLE_NONE);
    }

    /// @notice Propose giving a member another role. Active hospitals only.
    /// @param account The member.
    /// @param newRole HOSPITAL, REGULATOR, INSURER or AUDITOR, different from the current one.
    /// @return id The new proposal's id.
    function proposeRoleChange(address account, uint8 newRole) external returns (uint256 id) {
        _requireGovernor();
        _validateChange(PROPOSAL_CHANGE_ROLE, account, newRole);
        id = _createProposal(PROPOSAL_CHANGE_ROLE, account, newRole);
    }

    /// @notice Propose a new minimum retention for a record class (raising or lowering it, e.g. after
    /// the law changes). Active hospitals only; applied by `execute` like every proposal. The notary
    /// refuses to register an archive whose deadline is earlier than its trigger date plus the floor.
    /// @param recordClass Record class 0..6.
    /// @param floorYears The new floor, 1 to 200 years, different from the current one.
    /// @return id The new proposal's id.
    function proposeRetentionFloor(uint8 recordClass, uint16 floorYears)
        external
        returns (uint256 id)
    {
        _requireGovernor();
        _validateRetentionFloor(recordClass, floorYears);
        id = _createProposal(PROPOSAL_RETENTION_FLOOR, address(0), recordClass);
        _proposedFloorYears[id] = floorYears;
        emit RetentionFloorProposed(id, recordClass, floorYears);
    }

    /// @notice Approve an open proposal. Active hospitals only, once each.
    /// @param id The proposal.
    function approve(uint256 id) external {
        _requireGovernor();
        Proposal storage p = _requireOpenProposal(id);
        if (_approved[id][msg.sender]) revert RegistryAlreadyApproved(id, msg.sender);
        _approved[id][msg.sender] = true;
        p.approvers.push(msg.sender);
        emit ProposalApproved(id, msg.sender);
    }

    /// @notice Apply an open proposal once a strict majority of the active hospitals approved it.
    /// Active hospitals only. Approvals of members that are no longer active hospitals do not count.
    /// @param id The proposal.
    function execute(uint256 id) external {
        _requireGovernor();
        Proposal storage p = _requireOpenProposal(id);
        uint256 approvals = _validApprovals(p);
        uint256 required = quorum();
        if (approvals < required) revert RegistryQuorumNotReached(id, approvals, required);
        p.executed = true;
        if (p.kind == PROPOSAL_ADMIT) {
            _validateAdmission(p.subject, p.role, p.name, p.publicKey);
            _admit(p.subject, p.role, p.name, p.publicKey, id);
        } else if (p.kind == PROPOSAL_RETENTION_FLOOR) {
            uint16 floorYears = _proposedFloorYears[id];
            _validateRetentionFloor(p.role, floorYears);
            uint16 previous = _retentionFloorYears[p.role];
            _retentionFloorYears[p.role] = floorYears;
            emit RetentionFloorChanged(p.role, previous, floorYears, id);
        } else {
            _validateChange(p.kind, p.subject, p.role);
            _applyChange(p.kind, p.subject, p.role, id);
        }
        emit ProposalExecuted(id, msg.sender);
    }

    /// @notice Replace the caller's own encryption public key. Active members only.
    /// @param publicKey 33-byte compressed secp256k1 public key.
    function rotatePublicKey(bytes calldata publicKey) external {
        _requireStatus(msg.sender, STATUS_ACTIVE);
        _requirePublicKey(publicKey);
        _members[msg.sender].publicKey = publicKey;
        emit PublicKeyRotated(msg.sender, publicKey);
    }

    // ------------------------------------------------------------------------------------------
    // Reads

    /// @notice Whether `account` is an active member holding `role`.
    /// @param account The address to check.
    /// @param role The role it must hold.
    /// @return True when active with exactly that role.
    function isActive(address account, uint8 role) external view returns (bool) {
        Member storage m = _members[account];
        return role != ROLE_NONE && m.status == STATUS_ACTIVE && m.role == role;
    }

    /// @notice The member record of `account` (all zero when not a member).
    /// @param account The address.
    /// @return The record.
    function member(address account) external view returns (Member memory) {
        return _members[account];
    }

    /// @notice Number of addresses that ever became members (suspended ones included).
    /// @return The count.
    function memberCount() external view returns (uint256) {
        return _memberList.length;
    }

    /// @notice The `index`-th member address in admission order.
    /// @param index 0-based position, below `memberCount()`.
    /// @return The member's address.
    function memberAt(uint256 index) external view returns (address) {
        if (index >= _memberList.length) revert RegistryIndexOutOfRange(index, _memberList.length);
        return _memberList[index];
    }

    /// @notice Number of active hospitals (the electorate of governance).
    /// @return The count.
    function activeHospitalCount() external view returns (uint256) {
        return _activeHospitals;
    }

    /// @notice Approvals a proposal needs to execute now: a strict majority of active hospitals.
    /// @return The quorum.
    function quorum() public view returns (uint256) {
        return _activeHospitals / 2 + 1;
    }

    /// @notice Number of proposals created; ids run from 1 to this value.
    /// @return The count.
    function proposalCount() external view returns (uint256) {
        return _proposalCount;
    }

    /// @notice Proposal `id` (reverts for an unknown id).
    /// @param id The proposal.
    /// @return The proposal.
    function proposal(uint256 id) external view returns (Proposal memory) {
        return _requireProposal(id);
    }

    /// @notice State of proposal `id`: NONE=0, OPEN=1, EXECUTED=2, EXPIRED=3.
    /// @param id The proposal.
    /// @return The state.
    function proposalState(uint256 id) public view returns (uint8) {
        if (id == 0 || id > _proposalCount) return PROPOSAL_STATE_NONE;
        Proposal storage p = _proposals[id];
        if (p.executed) return PROPOSAL_STATE_EXECUTED;
        if (block.timestamp >= p.expiresAt) return PROPOSAL_STATE_EXPIRED;
        return PROPOSAL_STATE_OPEN;
    }

    /// @notice Approvals of proposal `id` that count now (approvers that are active hospitals).
    /// @param id The proposal.
    /// @return The count.
    function approvalCount(uint256 id) external view returns (uint256) {
        return _validApprovals(_requireProposal(id));
    }

    /// @notice Whether `account` approved proposal `id`.
    /// @param id The proposal.
    /// @param account The hospital.
    /// @return True when it approved.
    function hasApproved(uint256 id, address account) external view returns (bool) {
        return _approved[id][account];
    }

    /// @notice Whether the deployer may still bootstrap hospitals.
    /// @return True during bootstrap.
    function bootstrapping() external view returns (bool) {
        return _bootstrapping;
    }

    /// @notice The address that deployed the registry (powerless after bootstrap).
    /// @return The deployer.
    function deployer() external view returns (address) {
        return _deployer;
    }

    /// @notice Seconds a proposal stays open.
    /// @return The lifetime.
    function proposalLifetime() external view returns (uint64) {
        return _proposalLifetime;
    }

    /// @notice Minimum retention in years of record class `recordClass` (0..6).
    /// @param recordClass The record class.
    /// @return The floor in years.
    function retentionFloor(uint8 recordClass) external view returns (uint16) {
        if (recordClass > MAX_RECORD_CLASS) revert RegistryInvalidRecordClass(recordClass);
        return _retentionFloorYears[recordClass];
    }

    /// @notice Every class's minimum retention in years, indexed by record class (one storage read).
    /// @return The seven floors.
    function retentionFloors() external view returns (uint16[7] memory) {
        return _retentionFloorYears;
    }

    /// @notice Whether `account` is an active member holding `role` (as `isActive`), and every
    /// class's floor in one word: class `c`'s years in bits `16c` to `16c + 15` (the storage slot
    /// of `retentionFloors`). The two reads a registration needs, in one call.
    /// @param account The address to check.
    /// @param role The role it must hold.
    /// @return active True when active with exactly that role.
    /// @return floors The seven floors, packed.
    function activeWithFloors(address account, uint8 role)
        external
        view
        returns (bool active, uint256 floors)
    {
        Member storage m = _members[account];
        active = role != ROLE_NONE && m.status == STATUS_ACTIVE && m.role == role;
        assembly ("memory-safe") {
            floors := sload(_retentionFloorYears.slot)
        }
    }

    /// @notice The floor proposal `id` would set (0 for a proposal of another kind).
    /// @param id The proposal.
    /// @return The proposed floor in years.
    function proposedRetentionFloor(uint256 id) external view returns (uint16) {
        return _proposedFloorYears[id];
    }

    // ------------------------------------------------------------------------------------------
    // Internals

    function _requireBootstrapDeployer() private view {
        if (msg.sender != _deployer) revert RegistryNotDeployer(msg.sender);
        if (!_bootstrapping) revert RegistryBootstrapFinished();
    }

    function _requireGovernor() private view {
        if (_bootstrapping) revert RegistryBootstrapNotFinished();
        Member storage m = _members[msg.sender];
        if (m.status != STATUS_ACTIVE || m.role != ROLE_HOSPITAL) {
            revert RegistryUnauthorized(msg.sender, ROLE_HOSPITAL);
        }
    }

    /// @dev The one status guard: `account` must have status `expected`.
    function _requireStatus(address account, uint8 expected) private view {
        uint8 current = _members[account].status;
        if (current != expected) revert RegistryUnexpectedStatus(account, current, expected);
    }

    function _requireProposal(uint256 id) private view returns (Proposal storage) {
        if (id == 0 || id > _proposalCount) revert RegistryUnknownProposal(id);
        return _proposals[id];
    }

    function _requireOpenProposal(uint256 id) private view returns (Proposal storage p) {
        p = _requireProposal(id);
        if (p.executed) revert RegistryProposalAlreadyExecuted(id);
        if (block.timestamp >= p.expiresAt) revert RegistryProposalExpired(id, p.expiresAt);
    }

    function _requireValidRole(uint8 role) private pure {
        if (role == ROLE_NONE || role > ROLE_AUDITOR) revert RegistryInvalidRole(role);
    }

    function _requirePublicKey(bytes memory publicKey) private pure {
        if (
            publicKey.length != _PUBLIC_KEY_BYTES
                || (publicKey[0] != 0x02 && publicKey[0] != 0x03)
        ) revert RegistryInvalidPublicKey(publicKey);
    }

    function _validateAdmission(
        address account,
        uint8 role,
        string memory name,
        bytes memory publicKey
    ) private view {
        if (account == address(0)) revert RegistryZeroAddress();
        if (_members[account].status != STATUS_NONE) revert RegistryAlreadyMember(account);
        _requireValidRole(role);
        uint256 nameLength = bytes(name).length;
        if (nameLength == 0 || nameLength > _MAX_NAME_BYTES) revert RegistryInvalidName(nameLength);
        _requirePublicKey(publicKey);
    }

    function _validateRetentionFloor(uint8 recordClass, uint16 floorYears) private view {
        if (recordClass > MAX_RECORD_CLASS) revert RegistryInvalidRecordClass(recordClass);
        if (floorYears == 0 || floorYears > MAX_RETENTION_FLOOR_YEARS) {
            revert RegistryInvalidRetentionFloor(recordClass, floorYears, MAX_RETENTION_FLOOR_YEARS);
        }
        if (_retentionFloorYears[recordClass] == floorYears) {
            revert RegistrySameRetentionFloor(recordClass, floorYears);
        }
    }

    function _validateChange(uint8 kind, address account, uint8 newRole) private view {
        Member storage m = _members[account];
        if (m.status == STATUS_NONE) revert RegistryNotMember(account);
        bool isLastHospital = m.status == STATUS_ACTIVE && m.role == ROLE_HOSPITAL
            && _activeHospitals == 1;
        if (kind == PROPOSAL_SUSPEND) {
            _requireStatus(account, STATUS_ACTIVE);
            if (isLastHospital) revert RegistryLastHospital(account);
        } else if (kind == PROPOSAL_REINSTATE) {
            _requireStatus(account, STATUS_SUSPENDED);
        } else {
            _requireValidRole(newRole);
            if (m.role == newRole) revert RegistrySameRole(account, newRole);
            if (isLastHospital) revert RegistryLastHospital(account);
        }
    }

    function _createProposal(uint8 kind, address subject, uint8 role)
        private
        returns (uint256 id)
    {
        id = ++_proposalCount;
        Proposal storage p = _proposals[id];
        p.kind = kind;
        p.role = role;
        p.createdAt = uint64(block.timestamp);
        p.expiresAt = uint64(block.timestamp) + _proposalLifetime;
        p.proposer = msg.sender;
        p.subject = subject;
        p.approvers.push(msg.sender);
        _approved[id][msg.sender] = true;
        emit ProposalCreated(id, kind, subject, msg.sender, role, p.expiresAt);
    }

    function _validApprovals(Proposal storage p) private view returns (uint256 count) {
        uint256 n = p.approvers.length;
        for (uint256 i = 0; i < n; ++i) {
            Member storage m = _members[p.approvers[i]];
            if (m.status == STATUS_ACTIVE && m.role == ROLE_HOSPITAL) ++count;
        }
    }

    function _admit(
        address account,
        uint8 role,
        string memory name,
        bytes memory publicKey,
        uint256 proposalId
    ) private {
        _members[account] = Member({
            role: role,
            status: STATUS_ACTIVE,
            joinedAt: uint64(block.timestamp),
            name: name,
            publicKey: publicKey
        });
        _memberList.push(account);
        if (role == ROLE_HOSPITAL) ++_activeHospitals;
        emit MemberAdmitted(account, role, name, publicKey, proposalId);
    }

    function _applyChange(uint8 kind, address account, uint8 newRole, uint256 proposalId) private {
        Member storage m = _members[account];
        uint8 previousRole = m.role;
        bool wasActiveHospital = m.status == STATUS_ACTIVE && previousRole == ROLE_HOSPITAL;
        if (kind == PROPOSAL_SUSPEND) {
            m.status = STATUS_SUSPENDED;
        } else if (kind == PROPOSAL_REINSTATE) {
            m.status = STATUS_ACTIVE;
        } else {
            m.role = newRole;
        }
        bool isActiveHospital = m.status == STATUS_ACTIVE && m.role == ROLE_HOSPITAL;
        if (wasActiveHospital && !isActiveHospital) --_activeHospitals;
        if (!wasActiveHospital && isActiveHospital) ++_activeHospitals;
        if (kind == PROPOSAL_SUSPEND) {
            emit MemberSuspended(account, proposalId);
        } else if (kind == PROPOSAL_REINSTATE) {
            emit MemberReinstated(account, proposalId);
        } else {
            emit MemberRoleChanged(account, previousRole, newRole, proposalId);
        }
    }
}

"""Consortium governance from the node side: admitting a member through the registry's
propose → approve → execute flow with a strict-majority quorum of active hospitals.

Every step is idempotent so an interrupted admission resumes: a member that already has the role is
left alone, an open admission proposal for the same subject is reused instead of proposing twice,
hospitals that already approved are skipped. Used by ``archivechain up`` (and the test fixtures
build the same admissions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from eth_account.signers.local import LocalAccount

from anchoring.chain import ContractWriter, MemberStatus, Role, RpcChain
from anchoring.ids import normalize_address
from node.errors import ConflictError

PROPOSAL_ADMIT = 1
"""``ConsortiumRegistry`` proposal kind of an admission."""
PROPOSAL_STATE_OPEN = 1
"""``ConsortiumRegistry.proposalState`` of a proposal that can still be approved and executed."""
_REGISTRY: Final = "ConsortiumRegistry"


class GovernanceError(ConflictError):
    """An admission cannot go through (other role already held, not enough hospitals to approve)."""

    code = "governance_refused"


@dataclass(frozen=True, slots=True)
class Admission:
    """Outcome of ``admit_member``: the proposal used (None when nothing had to be done)."""

    address: str
    role: Role
    proposal_id: int | None
    already_member: bool


def find_open_admission(chain: RpcChain, subject: str, role: Role) -> int | None:
    """Id of the newest open admission proposal of ``subject`` for ``role``, if any."""
    wanted = normalize_address(subject)
    (count,) = chain.call(_REGISTRY, "proposalCount")
    for proposal_id in range(int(count), 0, -1):
        (state,) = chain.call(_REGISTRY, "proposalState", [proposal_id])
        if int(state) != PROPOSAL_STATE_OPEN:
            continue
        (proposal,) = chain.call(_REGISTRY, "proposal", [proposal_id])
        kind, proposed_role, subject_address = _proposal_fields(proposal)
        if kind == PROPOSAL_ADMIT and proposed_role == role and subject_address == wanted:
            return proposal_id
    return None


def _proposal_fields(proposal: Any) -> tuple[int, int, str]:
    """(kind, role, subject) of a decoded ``Proposal`` struct."""
    kind, role, _executed, _created, _expires, _proposer, subject = proposal[:7]
    return int(kind), int(role), normalize_address(str(subject))


def admit_member(
    chain: RpcChain,
    proposer: LocalAccount,
    voters: Sequence[LocalAccount],
    *,
    address: str,
    role: Role,
    name: str,
    public_key: bytes,
) -> Admission:
    """Admit ``address`` with ``role`` through governance, resuming any earlier attempt.

    ``proposer`` and ``voters`` must be active hospitals; voters approve (in order) only until the
    quorum is met. Raises ``GovernanceError`` if the address holds another role or the voters cannot
    reach the quorum.
    """
    subject = normalize_address(address)
    member = chain.member(subject)
    if member.role is role and member.status is MemberStatus.ACTIVE:
        return Admission(subject, role, None, already_member=True)
    if member.role is not Role.NONE:
        raise GovernanceError(
            f"{subject} is already a member with role {member.role.name} "
            f"({member.status.name}); it cannot be admitted as {role.name}"
        )
    proposing = ContractWriter(chain, proposer)
    proposal_id = find_open_admission(chain, subject, role)
    if proposal_id is None:
        receipt = proposing.transact(
            "proposeAdmission", [subject, int(role), name, public_key], contract=_REGISTRY
        )
        proposal_id = int(receipt.event("ProposalCreated").args["id"])
    (quorum,) = chain.call(_REGISTRY, "quorum")
    (approvals,) = chain.call(_REGISTRY, "approvalCount", [proposal_id])
    approvals = int(approvals)
    for voter in voters:
        if approvals >= int(quorum):
            break
        (done,) = chain.call(_REGISTRY, "hasApproved", [proposal_id, voter.address])
        if done or not chain.is_active(voter.address, Role.HOSPITAL):
            continue
        ContractWriter(chain, voter).transact("approve", [proposal_id], contract=_REGISTRY)
        approvals += 1
    if approvals < int(quorum):
        raise GovernanceError(
            f"proposal {proposal_id} has {approvals} approvals but needs {int(quorum)}: "
            "not enough active hospitals among the voters"
        )
    proposing.transact("execute", [proposal_id], contract=_REGISTRY)
    return Admission(subject, role, proposal_id, already_member=False)

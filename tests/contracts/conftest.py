"""Fixtures of the contract tests (on top of tests/fixtures/chain.py)."""

from __future__ import annotations

import pytest
from eth_account.signers.local import LocalAccount

from anchoring.chain import RpcChain
from devtools.deploy import deploy_contracts
from tests.fixtures.chain import PROPOSAL_LIFETIME


@pytest.fixture
def bootstrapping_chain(chain: RpcChain, deployer: LocalAccount) -> RpcChain:
    """A second deployment on the isolated chain, still in its bootstrap phase (no members)."""
    deployment = deploy_contracts(chain.rpc, deployer, proposal_lifetime=PROPOSAL_LIFETIME)
    return RpcChain(chain.rpc, deployment)

"""Figures for the access policy and member sign-in (docs/regulators.md "Figures"): policy
decisions per second over the whole default matrix, and EIP-4361 parse + EIP-191 signer
recovery per second (the CPU part of ``POST /auth/verify``; the registry read and the database
write come on top). Pure Python, no chain: ``.venv/bin/python scripts/bench_doors.py``."""

from __future__ import annotations

import itertools
import os
import platform
import time

from eth_account import Account

from anchoring.events import Purpose, Sensitivity
from node.policy import AccessPolicy, PolicyAction, Relation, default_policy
from node.principal import Role
from node.siwe import SiweMessage, parse_message, recover_signer, sign_message


def main() -> None:
    policy = AccessPolicy(default_policy())
    matrix = list(itertools.product(Role, Sensitivity, Relation, Purpose, PolicyAction))
    rounds = 50
    start = time.perf_counter()
    for _ in range(rounds):
        for role, sensitivity, rel, purpose, action in matrix:
            policy.decide(role, sensitivity, rel, purpose, action)
    elapsed = time.perf_counter() - start
    decisions = rounds * len(matrix)
    account = Account.create()
    text = SiweMessage(
        domain="node.example:8600",
        address=account.address,
        statement="Sign in to an ArchiveChain hospital node as a consortium member.",
        uri="https://node.example:8600",
        chain_id=31337,
        nonce="0123456789abcdef0123456789abcdef",
        issued_at="2026-12-02T07:00:00Z",
        expiration_time="2026-12-02T07:05:00Z",
        resources=("urn:archivechain:role:regulator",),
    ).text()
    signature = sign_message(text, bytes(account.key))
    checks = 300
    start = time.perf_counter()
    for _ in range(checks):
        assert recover_signer(parse_message(text).text(), signature) == account.address
    verify = time.perf_counter() - start
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    print(f"policy decisions: {decisions / elapsed:,.0f}/s ({len(matrix)} cases x {rounds})")
    print(f"sign-in message parse + signer recovery: {checks / verify:,.0f}/s "
          f"({verify / checks * 1000:.2f} ms each)")  # fmt: skip


if __name__ == "__main__":
    main()

"""A Besu QBFT network for production: one validator per hospital, generated as files.

``generate_network`` writes, under one output directory::

    genesis.json                 QBFT genesis (extraData with the validators, block period, epoch,
                                 request timeout, every fork up to Shanghai at genesis, zero base fee)
    static-nodes.json            every validator's enode URL
    permissions_config.toml      local node allowlist (the validators' enodes) and account allowlist
    docker-compose.besu.yml      compose override: Besu validators instead of ganache
    network.json                 summary: hospitals, validator addresses, enode ids, ports
    hospital-<i>/key.json        the validator's node key, encrypted (Web3 Secret Storage v3, scrypt)
    hospital-<i>/key.pub         its public key (hex, 64 bytes), the enode id
    hospital-<i>/address         its validator address

Besu itself cannot run on the development machines (no JVM image can be pulled); the tests check
the files' structure and the ``extraData`` encoding against the vector in Besu's documentation.
See docs/deployment.md for the operator's runbook.
"""

from __future__ import annotations

import ipaddress
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from eth_account import Account
from eth_keys.datatypes import PrivateKey
from eth_utils.address import to_checksum_address

__all__ = [
    "BESU_IMAGE",
    "DEFAULT_BLOCK_PERIOD_SECONDS",
    "DEFAULT_CHAIN_ID",
    "DEFAULT_EPOCH_LENGTH",
    "DEFAULT_REQUEST_TIMEOUT_SECONDS",
    "BesuConfigError",
    "BesuNetwork",
    "Validator",
    "decrypt_validator_key",
    "generate_network",
    "qbft_extra_data",
    "rlp_encode",
]

BESU_IMAGE: Final = "hyperledger/besu:25.10.0"
DEFAULT_CHAIN_ID: Final = 1981
DEFAULT_BLOCK_PERIOD_SECONDS: Final = 2
DEFAULT_EPOCH_LENGTH: Final = 30000
DEFAULT_REQUEST_TIMEOUT_SECONDS: Final = 4
P2P_PORT: Final = 30303
RPC_PORT: Final = 8545
GAS_LIMIT: Final = 0x1FFFFFFFFFFFFF
"""Block gas limit: free gas networks raise it (Besu's free-gas guide); anchoring batches are big."""
ALLOC_BALANCE: Final = hex(10**24)
"""Genesis balance of each allowed account: gas is free, but the dev init job funds the members
with value transfers from the deployer (no ether has any worth on this chain)."""
MIX_HASH: Final = "0x63746963616c2062797a616e74696e65206661756c7420746f6c6572616e6365"
"""QBFT's fixed mixHash ("ctical byzantine fault tolerance"), as Besu requires in the genesis."""
PRE_MERGE_FORK_BLOCKS: Final = (
    "homesteadBlock",
    "eip150Block",
    "eip155Block",
    "eip158Block",
    "byzantiumBlock",
    "constantinopleBlock",
    "petersburgBlock",
    "istanbulBlock",
    "muirGlacierBlock",
    "berlinBlock",
    "londonBlock",
)
EVM_VERSION_FORKS: Final = {"shanghai": "shanghaiTime", "cancun": "cancunTime"}
"""The time-based fork to activate at genesis for each EVM version the artifacts may target."""


class BesuConfigError(ValueError):
    """The requested network cannot be generated (bad count, existing output, bad passphrase)."""


# -- RLP -----------------------------------------------------------------------------------------

RlpItem = bytes | Sequence["RlpItem"]


def _length_prefix(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes([offset + length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([offset + 55 + len(encoded)]) + encoded


def rlp_encode(item: RlpItem) -> bytes:
    """RLP of a byte string or a (nested) list of them (Ethereum Yellow Paper, appendix B)."""
    if isinstance(item, bytes | bytearray):
        if len(item) == 1 and item[0] < 0x80:
            return bytes(item)
        return _length_prefix(len(item), 0x80) + bytes(item)
    payload = b"".join(rlp_encode(element) for element in item)
    return _length_prefix(len(payload), 0xC0) + payload


def qbft_extra_data(validators: Sequence[str], vanity: bytes = bytes(32)) -> str:
    """The genesis ``extraData`` of a QBFT network with block-header validator selection.

    ``RLP([32-byte vanity, [validator addresses], [] (no vote), round, [] (no seals)])`` where the
    round is the integer 0, written as an RLP scalar (the empty string, ``0x80``), exactly as
    ``besu rlp encode --type=QBFT_EXTRA_DATA`` writes it (the vector in Besu's QBFT guide is a
    test of this function).
    """
    if len(vanity) != 32:
        raise BesuConfigError("the QBFT vanity is exactly 32 bytes")
    addresses = [bytes.fromhex(address.removeprefix("0x")) for address in validators]
    if any(len(address) != 20 for address in addresses):
        raise BesuConfigError("a validator address is 20 bytes")
    return "0x" + rlp_encode([vanity, addresses, [], b"", []]).hex()


# -- keys ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Validator:
    """One hospital's validator: its name, address, public key (enode id), compose service name,
    and the IP address and port other validators reach it on."""

    name: str
    address: str
    public_key: str
    host: str
    ip: str
    p2p_port: int
    rpc_port: int

    @property
    def enode(self) -> str:
        return f"enode://{self.public_key}@{self.ip}:{self.p2p_port}"


def decrypt_validator_key(key_file: Path, passphrase: str) -> bytes:
    """The validator's raw node key from its encrypted file (for ``--node-private-key-file``)."""
    document = json.loads(key_file.read_text(encoding="utf-8"))
    return bytes(Account.decrypt(document, passphrase))


@dataclass(frozen=True, slots=True)
class BesuNetwork:
    """What ``generate_network`` wrote."""

    out: Path
    validators: tuple[Validator, ...]
    genesis: dict[str, Any]


def _genesis(
    validators: Sequence[Validator],
    accounts: Sequence[str],
    *,
    chain_id: int,
    evm_version: str,
    block_period: int,
    epoch_length: int,
    request_timeout: int,
) -> dict[str, Any]:
    if evm_version not in EVM_VERSION_FORKS:
        raise BesuConfigError(f"no Besu fork setting is known for EVM version {evm_version!r}")
    config: dict[str, Any] = {"chainId": chain_id}
    config.update(dict.fromkeys(PRE_MERGE_FORK_BLOCKS, 0))
    for fork in ("shanghai", "cancun"):  # every time fork up to the artifacts' EVM version
        config[EVM_VERSION_FORKS[fork]] = 0
        if fork == evm_version:
            break
    config["zeroBaseFee"] = True
    config["contractSizeLimit"] = 2147483647
    config["qbft"] = {
        "blockperiodseconds": block_period,
        "epochlength": epoch_length,
        "requesttimeoutseconds": request_timeout,
    }
    return {
        "config": config,
        "nonce": "0x0",
        "timestamp": "0x0",
        "gasLimit": hex(GAS_LIMIT),
        "difficulty": "0x1",
        "baseFeePerGas": "0x0",
        "mixHash": MIX_HASH,
        "coinbase": "0x" + "00" * 20,
        "alloc": {
            account.lower().removeprefix("0x"): {"balance": ALLOC_BALANCE} for account in accounts
        },
        "extraData": qbft_extra_data([v.address for v in validators]),
    }


def _permissions_toml(validators: Sequence[Validator], accounts: Sequence[str]) -> str:
    def toml_list(values: Sequence[str]) -> str:
        return "[" + ", ".join(json.dumps(value) for value in values) + "]"

    return (
        "# Besu local permissioning (generated by `archivechain besu init`).\n"
        "# nodes-allowlist: the validators' enode URLs; accounts-allowlist: the accounts allowed\n"
        "# to send transactions (the deployer and every hospital node's address).\n"
        f"nodes-allowlist={toml_list([v.enode for v in validators])}\n"
        f"accounts-allowlist={toml_list(list(accounts))}\n"
    )


def _compose_override(validators: Sequence[Validator]) -> str:
    """A compose override that runs one Besu validator per hospital instead of ganache.

    Each validator's key is decrypted by a one-shot ``archivechain besu unlock-key`` into a tmpfs
    volume (never on disk), with the passphrase from a compose secret."""
    first = validators[0]
    lines = [
        "# Generated by `archivechain besu init`: run Besu QBFT validators instead of ganache.",
        "# Put this directory at ./besu next to docker-compose.yml, then:",
        "#   ARCHIVECHAIN_DEPLOYER_KEY=... docker compose -f docker-compose.yml \\",
        "#       -f besu/docker-compose.besu.yml up",
        "# `chain` no longer runs ganache: it only waits for the first validator's RPC (the URL",
        "# every node and the init job use) and is healthy once it answers.",
        "services:",
        "  chain:",
        "    image: archivechain-node:latest",
        "    entrypoint: [python3, -c]",
        "    command:",
        "      - |",
        "        import time",
        "        while True:",
        "            time.sleep(3600)",
        "    healthcheck:",
        '      test: [CMD, python3, -c, "import json,urllib.request; urllib.request.urlopen(',
        f"             urllib.request.Request('http://127.0.0.1:{first.rpc_port}', data=json.dumps(",
        "             {'jsonrpc':'2.0','id':1,'method':'eth_blockNumber','params':[]}).encode(),",
        "             headers={'Content-Type':'application/json'}), timeout=2)\"]",
        "      interval: 5s",
        "      retries: 60",
        "    depends_on:",
        "      besu-1:",
        "        condition: service_started",
        "  init:",
        "    environment:",
        "      ARCHIVECHAIN_DEPLOYER_KEY: ${ARCHIVECHAIN_DEPLOYER_KEY:?the deployer key (an --account of besu init)}",
    ]
    for index, validator in enumerate(validators, start=1):
        name = validator.host
        lines += [
            f"  {name}-key:",
            "    image: archivechain-node:latest",
            "    network_mode: host",
            "    user: '1000:1000'",
            "    entrypoint: [archivechain, besu, unlock-key]",
            f"    command: [--key, /besu/hospital-{index}/key.json, --out, /keys/key,",
            f"              --passphrase-file, /run/secrets/{name}_key_passphrase]",
            f"    secrets: [{name}_key_passphrase]",
            "    volumes:",
            "      - ./besu:/besu:ro",
            f"      - {name}-key:/keys",
            f"  {name}:",
            f"    image: {BESU_IMAGE}",
            "    network_mode: host",
            "    depends_on:",
            f"      {name}-key:",
            "        condition: service_completed_successfully",
            "    command:",
            "      - --genesis-file=/besu/genesis.json",
            "      - --node-private-key-file=/keys/key",
            "      - --data-path=/data",
            f"      - --p2p-port={validator.p2p_port}",
            "      - --rpc-http-enabled",
            "      - --rpc-http-host=127.0.0.1",
            f"      - --rpc-http-port={validator.rpc_port}",
            "      - --rpc-http-api=ETH,NET,WEB3,QBFT",
            "      - --min-gas-price=0",
            "      - --static-nodes-file=/besu/static-nodes.json",
            "      - --permissions-nodes-config-file-enabled",
            "      - --permissions-accounts-config-file-enabled",
            "      - --permissions-nodes-config-file=/besu/permissions_config.toml",
            "      - --permissions-accounts-config-file=/besu/permissions_config.toml",
            "      - --metrics-enabled",
            "      - --metrics-host=127.0.0.1",
            f"      - --metrics-port={9545 + index - 1}",
            "    volumes:",
            "      - ./besu:/besu:ro",
            f"      - {name}-key:/keys:ro",
            f"      - {name}-data:/data",
            "    healthcheck:",
            "      test: [CMD, curl, -sf, -X, POST, -H, 'Content-Type: application/json',",
            '             --data, \'{"jsonrpc":"2.0","method":"eth_blockNumber","id":1}\',',
            f"             'http://127.0.0.1:{validator.rpc_port}']",
            "      interval: 10s",
            "      retries: 30",
        ]
    lines.append("volumes:")
    for validator in validators:
        lines += [
            f"  {validator.host}-key:",
            "    driver_opts: {type: tmpfs, device: tmpfs, o: 'size=1m,uid=1000,gid=1000,mode=0700'}",
            f"  {validator.host}-data: {{}}",
        ]
    lines.append("secrets:")
    for validator in validators:
        lines += [
            f"  {validator.host}_key_passphrase:",
            f"    file: ./secrets/{validator.host}_key_passphrase",
        ]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def generate_network(
    out: Path,
    hospitals: int,
    passphrase: str,
    *,
    accounts: Sequence[str] = (),
    ips: Sequence[str] = (),
    evm_version: str = "shanghai",
    chain_id: int = DEFAULT_CHAIN_ID,
    block_period: int = DEFAULT_BLOCK_PERIOD_SECONDS,
    epoch_length: int = DEFAULT_EPOCH_LENGTH,
    request_timeout: int = DEFAULT_REQUEST_TIMEOUT_SECONDS,
    scrypt_n: int = 1 << 17,
) -> BesuNetwork:
    """Generate the network's files under ``out`` (which must not exist or be empty).

    ``ips`` gives each validator's IP address (one per hospital, each on port 30303); without it
    every validator is on 127.0.0.1 with its own port (30303, 30304, ...), as the compose override
    runs them on one host."""
    if not 1 <= hospitals <= 64:
        raise BesuConfigError("--hospitals must be between 1 and 64")
    if ips and len(ips) != hospitals:
        raise BesuConfigError(f"give one --ip per hospital ({hospitals}), not {len(ips)}")
    for ip in ips:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise BesuConfigError(
                f"not an IP address (Besu's enode URLs need one): {ip!r}"
            ) from None
    if out.exists() and any(out.iterdir()):
        raise BesuConfigError(f"{out} is not empty; refusing to overwrite a network's keys")
    checked_accounts = []
    for account in accounts:
        try:
            checked_accounts.append(to_checksum_address(account))
        except ValueError:
            raise BesuConfigError(f"not an account address: {account!r}") from None
    out.mkdir(parents=True, exist_ok=True)
    validators = []
    for index in range(1, hospitals + 1):
        account = Account.create()
        private = PrivateKey(bytes(account.key))
        validator = Validator(
            name=f"hospital-{index}",
            address=to_checksum_address(private.public_key.to_checksum_address()),
            public_key=private.public_key.to_bytes().hex(),
            host=f"besu-{index}",
            ip=ips[index - 1] if ips else "127.0.0.1",
            p2p_port=P2P_PORT if ips else P2P_PORT + index - 1,
            rpc_port=RPC_PORT if ips else RPC_PORT + index - 1,
        )
        directory = out / validator.name
        directory.mkdir(mode=0o700)
        encrypted = Account.encrypt(
            bytes(account.key), passphrase, kdf="scrypt", iterations=scrypt_n
        )
        _write(directory / "key.json", json.dumps(encrypted, indent=2) + "\n", 0o600)
        _write(directory / "key.pub", validator.public_key + "\n")
        _write(directory / "address", validator.address + "\n")
        validators.append(validator)
    genesis = _genesis(
        validators,
        checked_accounts,
        chain_id=chain_id,
        evm_version=evm_version,
        block_period=block_period,
        epoch_length=epoch_length,
        request_timeout=request_timeout,
    )
    _write(out / "genesis.json", json.dumps(genesis, indent=2) + "\n")
    _write(out / "static-nodes.json", json.dumps([v.enode for v in validators], indent=2) + "\n")
    _write(out / "permissions_config.toml", _permissions_toml(validators, checked_accounts))
    _write(out / "docker-compose.besu.yml", _compose_override(validators))
    summary = {
        "format": "archivechain.besu-network/v1",
        "chain_id": chain_id,
        "evm_version": evm_version,
        "validators": [
            {
                "name": v.name,
                "address": v.address,
                "enode": v.enode,
                "rpc_port": v.rpc_port,
                "p2p_port": v.p2p_port,
            }
            for v in validators
        ],
        "accounts_allowlist": checked_accounts,
    }
    _write(out / "network.json", json.dumps(summary, indent=2) + "\n")
    return BesuNetwork(out=out, validators=tuple(validators), genesis=genesis)

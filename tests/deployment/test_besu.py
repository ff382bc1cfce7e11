"""``archivechain besu init``: the QBFT genesis (extraData checked against Besu's documented
vector), encrypted validator keys, static nodes, allowlists and the compose override."""

from __future__ import annotations

import json
import stat
import tomllib
from pathlib import Path

import pytest
import rlp
import yaml
from eth_account import Account
from eth_keys import keys as eth_keys

from archivechain import main
from devtools.besu import (
    PRE_MERGE_FORK_BLOCKS,
    BesuConfigError,
    decrypt_validator_key,
    generate_network,
    qbft_extra_data,
    rlp_encode,
)

PASSPHRASE = "correct horse battery staple"

# The genesis of Besu's QBFT guide ("Configure QBFT consensus", block header validator selection):
# these four validators encode, with `besu rlp encode --type=QBFT_EXTRA_DATA`, to this extraData.
BESU_DOC_VALIDATORS = [
    "0x64a702e6263b7297a96638cac6ae65e6541f4169",
    "0x3923390ad55e90c237593b3b0e401f3b08a03185",
    "0xaefdb9a738c9f433e5b6b212a6d62f6370c2f692",
    "0xc7eeb9a4e00ce683cf93039b212648e01c6c6b78",
]
BESU_DOC_EXTRA_DATA = (
    "0xf87aa00000000000000000000000000000000000000000000000000000000000000000f8549464a702e626"
    "3b7297a96638cac6ae65e6541f4169943923390ad55e90c237593b3b0e401f3b08a0318594aefdb9a738c9f4"
    "33e5b6b212a6d62f6370c2f69294c7eeb9a4e00ce683cf93039b212648e01c6c6b78c080c0"
)


def test_extra_data_matches_besus_documented_vector() -> None:
    assert qbft_extra_data(BESU_DOC_VALIDATORS) == BESU_DOC_EXTRA_DATA
    # Checksummed input encodes the same bytes.
    assert qbft_extra_data([a.upper().replace("0X", "0x") for a in BESU_DOC_VALIDATORS]) == (
        BESU_DOC_EXTRA_DATA
    )


def test_extra_data_layout_vanity_validators_no_vote_round_zero_no_seals() -> None:
    vanity, validators, vote, round_, seals = rlp.decode(bytes.fromhex(BESU_DOC_EXTRA_DATA[2:]))
    assert vanity == bytes(32)
    assert ["0x" + v.hex() for v in validators] == BESU_DOC_VALIDATORS
    assert vote == []
    assert seals == []
    assert round_ == b""  # the integer 0 as an RLP scalar (0x80), as Besu writes it


def test_rlp_encoder_agrees_with_the_reference_library_on_long_items() -> None:
    for item in (b"", b"\x00", b"\x7f", b"\x80", b"x" * 55, b"y" * 56, b"z" * 1024,
                 [[b"a" * 60] * 3, [], b"q"]):  # fmt: skip
        assert rlp_encode(item) == rlp.encode(item)


def test_extra_data_refuses_bad_addresses_and_vanity() -> None:
    with pytest.raises(BesuConfigError):
        qbft_extra_data(["0x1234"])
    with pytest.raises(BesuConfigError):
        qbft_extra_data(BESU_DOC_VALIDATORS, vanity=b"short")


def test_generated_network_structure(tmp_path: Path) -> None:
    out = tmp_path / "net"
    deployer = Account.create().address
    network = generate_network(out, 4, PASSPHRASE, accounts=[deployer], scrypt_n=1 << 4)
    genesis = json.loads((out / "genesis.json").read_text())
    config = genesis["config"]
    assert config["qbft"] == {
        "blockperiodseconds": 2,
        "epochlength": 30000,
        "requesttimeoutseconds": 4,
    }
    assert all(config[fork] == 0 for fork in PRE_MERGE_FORK_BLOCKS)
    assert config["shanghaiTime"] == 0
    assert "cancunTime" not in config
    assert config["zeroBaseFee"] is True
    assert genesis["baseFeePerGas"] == "0x0"
    assert genesis["difficulty"] == "0x1"
    assert genesis["alloc"] == {deployer.lower()[2:]: {"balance": hex(10**24)}}
    assert genesis["mixHash"] == (
        "0x63746963616c2062797a616e74696e65206661756c7420746f6c6572616e6365"
    )

    # extraData names exactly the validators whose (encrypted) keys were written.
    _, encoded_validators, vote, round_, seals = rlp.decode(bytes.fromhex(genesis["extraData"][2:]))
    assert (vote, round_, seals) == ([], b"", [])
    addresses_in_genesis = ["0x" + v.hex() for v in encoded_validators]
    static_nodes = json.loads((out / "static-nodes.json").read_text())
    permissions = tomllib.loads((out / "permissions_config.toml").read_text())
    assert permissions["accounts-allowlist"] == [deployer]
    assert permissions["nodes-allowlist"] == static_nodes
    for index, validator in enumerate(network.validators, start=1):
        key_file = out / f"hospital-{index}" / "key.json"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        raw = decrypt_validator_key(key_file, PASSPHRASE)
        assert raw.hex() not in key_file.read_text()  # encrypted at rest
        private = eth_keys.PrivateKey(raw)
        assert private.public_key.to_checksum_address() == validator.address
        assert addresses_in_genesis[index - 1] == validator.address.lower()
        public = (out / f"hospital-{index}" / "key.pub").read_text().strip()
        assert public == private.public_key.to_bytes().hex()
        assert static_nodes[index - 1] == f"enode://{public}@127.0.0.1:{30303 + index - 1}"

    override = yaml.safe_load((out / "docker-compose.besu.yml").read_text())
    services = override["services"]
    chain = services["chain"]  # no longer ganache: a health gate on the first validator's RPC
    assert chain["image"] == "archivechain-node:latest"
    assert "http://127.0.0.1:8545" in " ".join(chain["healthcheck"]["test"])
    assert "ARCHIVECHAIN_DEPLOYER_KEY" in services["init"]["environment"]
    for index in range(1, 5):
        besu = services[f"besu-{index}"]
        assert "--node-private-key-file=/keys/key" in besu["command"]
        assert f"--p2p-port={30303 + index - 1}" in besu["command"]
        assert "--permissions-accounts-config-file-enabled" in besu["command"]
        assert besu["depends_on"][f"besu-{index}-key"]["condition"] == (
            "service_completed_successfully"
        )
        assert override["volumes"][f"besu-{index}-key"]["driver_opts"]["type"] == "tmpfs"
        assert f"besu-{index}_key_passphrase" in override["secrets"]
    summary = json.loads((out / "network.json").read_text())
    assert [v["address"] for v in summary["validators"]] == [v.address for v in network.validators]


def test_one_ip_per_validator_gives_standard_ports(tmp_path: Path) -> None:
    ips = ["10.0.0.1", "10.0.0.2"]
    network = generate_network(tmp_path / "n", 2, PASSPHRASE, ips=ips, scrypt_n=1 << 4)
    assert [v.enode.split("@")[1] for v in network.validators] == [
        "10.0.0.1:30303",
        "10.0.0.2:30303",
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"hospitals": 0}, "between 1 and 64"),
        ({"hospitals": 2, "ips": ["10.0.0.1"]}, "one --ip per hospital"),
        ({"hospitals": 1, "ips": ["besu.example"]}, "not an IP address"),
        ({"hospitals": 1, "accounts": ["0xnope"]}, "not an account address"),
        ({"hospitals": 1, "evm_version": "paris"}, "no Besu fork setting"),
    ],
)
def test_generation_refusals(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(BesuConfigError, match=message):
        generate_network(tmp_path / "n", passphrase=PASSPHRASE, scrypt_n=1 << 4, **kwargs)  # type: ignore[arg-type]


def test_refuses_to_overwrite_an_existing_network(tmp_path: Path) -> None:
    generate_network(tmp_path / "n", 1, PASSPHRASE, scrypt_n=1 << 4)
    before = (tmp_path / "n" / "hospital-1" / "key.json").read_bytes()
    with pytest.raises(BesuConfigError, match="not empty"):
        generate_network(tmp_path / "n", 1, PASSPHRASE, scrypt_n=1 << 4)
    assert (tmp_path / "n" / "hospital-1" / "key.json").read_bytes() == before


def test_cli_init_then_unlock_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    passphrase_file = tmp_path / "pass"
    passphrase_file.write_text(PASSPHRASE + "\n")
    out = tmp_path / "net"
    code = main(["besu", "init", "--hospitals", "1", "--out", str(out),
                 "--passphrase-file", str(passphrase_file)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    address = (out / "hospital-1" / "address").read_text().strip()
    assert address in printed
    assert "shanghai" in printed
    assert "account allowlist is empty" in printed

    key_out = tmp_path / "tmpfs-key"
    code = main(["besu", "unlock-key", "--key", str(out / "hospital-1" / "key.json"),
                 "--out", str(key_out), "--passphrase-file", str(passphrase_file)])  # fmt: skip
    assert code == 0
    assert stat.S_IMODE(key_out.stat().st_mode) == 0o600
    raw = bytes.fromhex(key_out.read_text().strip()[2:])
    assert eth_keys.PrivateKey(raw).public_key.to_checksum_address() == address

    # Wrong passphrase: refused, nothing written.
    monkeypatch.setenv("ARCHIVECHAIN_BESU_KEY_PASSPHRASE", "another long passphrase")
    code = main(["besu", "unlock-key", "--key", str(out / "hospital-1" / "key.json"),
                 "--out", str(tmp_path / "k2")])  # fmt: skip
    assert code == 2
    assert "wrong passphrase" in capsys.readouterr().err
    assert not (tmp_path / "k2").exists()


def test_cli_refuses_an_insecure_or_missing_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ARCHIVECHAIN_BESU_KEY_PASSPHRASE", raising=False)
    assert main(["besu", "init", "--hospitals", "1", "--out", str(tmp_path / "a")]) == 2
    assert "no key passphrase" in capsys.readouterr().err
    monkeypatch.setenv("ARCHIVECHAIN_BESU_KEY_PASSPHRASE", "short")
    assert main(["besu", "init", "--hospitals", "1", "--out", str(tmp_path / "a")]) == 2
    assert "insecure" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()

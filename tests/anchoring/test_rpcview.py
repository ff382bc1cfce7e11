"""``anchoring.rpcview``: the verifier's standard-library JSON-RPC reader, against the real
ArchiveNotary on anvil (it must agree with the node's web3-based ``RpcChain``), against addresses
that hold no notary, and against endpoints that fail."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount

from anchoring import merkle
from anchoring.bundle import BundleCheckpoint, BundleEntry, ProofBundle
from anchoring.chain import ContractWriter, RpcChain
from anchoring.chainview import CustodyState
from anchoring.errors import ChainError, NotANotaryError
from anchoring.events import CreateData, CreateEvent, RecordClass, Sensitivity, canonical_bytes
from anchoring.ids import archive_key
from anchoring.rpcview import (
    HttpJsonRpc,
    NotaryReader,
    archive_calldata,
    checkpoint_at_calldata,
    checkpoint_count_calldata,
    shown_url,
)
from anchoring.verifier import Code, Status, verify_bundle
from node.ports import free_port
from tests.fixtures.chain import Consortium

ARCHIVE = "01HZY3Z4Q8Q1V6S9N0M5K2J3H4"
COMMITMENT = bytes.fromhex("c1" * 32)
DEADLINE = int(datetime(2054, 5, 1, tzinfo=UTC).timestamp())

Writer = Callable[[LocalAccount], ContractWriter]


class CountingRpc(HttpJsonRpc):
    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.methods: list[str] = []

    def request(self, method: str, params: list[Any]) -> Any:
        self.methods.append(method)
        return super().request(method, params)


@pytest.fixture
def anchored(chain: RpcChain, writer: Writer, hospital_a: LocalAccount) -> list[bytes]:
    """Two checkpoints of hospital A's log (3, then 5 leaves) and one registered archive."""
    leaves = [merkle.leaf_hash(b"event %d" % i) for i in range(5)]
    sender = writer(hospital_a)
    sender.transact("anchorCheckpoint", [3, merkle.root_from_leaf_hashes(leaves[:3]), []])
    proof = merkle.consistency_proof(3, 5, leaves)
    sender.transact("anchorCheckpoint", [5, merkle.root_from_leaf_hashes(leaves), proof])
    sender.transact("register", [archive_key(ARCHIVE), 2, 0, DEADLINE, COMMITMENT, bytes(32)])
    return leaves


def test_calldata_is_the_example_of_the_spec() -> None:
    """docs/proof-format.md §6.1: ``checkpointAt(0x70997970…79C8, 2)``."""
    hospital = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    assert checkpoint_at_calldata(hospital, 2).hex() == (
        "5cfa0e30"
        "00000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c8"
        "0000000000000000000000000000000000000000000000000000000000000002"
    )
    assert checkpoint_count_calldata(hospital).hex() == (
        "76a8234200000000000000000000000070997970c51812dc3a010c7d01b50e0d17dc79c8"
    )
    assert archive_calldata("01M8BTZS5ZM33QJ5A8FWEK5GCN").hex() == (
        "a995db260000000000000000000000000000000001a217afe4bfa0c77915487f1d32c195"
    )


def test_reader_agrees_with_the_nodes_rpc_chain(
    chain: RpcChain, consortium: Consortium, hospital_a: LocalAccount, anchored: list[bytes]
) -> None:
    reader = NotaryReader(consortium.rpc_url, consortium.deployment.notary.address.lower())
    hospital = hospital_a.address
    assert reader.notary_address() == consortium.deployment.notary.address  # EIP-55
    assert reader.chain_id() == chain.chain_id()
    assert reader.checkpoint_count(hospital) == chain.checkpoint_count(hospital) == 2
    for index in (0, 1):
        assert reader.checkpoint_at(hospital, index) == chain.checkpoint_at(hospital, index)
    assert reader.checkpoint_at(hospital, 1).root == merkle.root_from_leaf_hashes(anchored)
    assert reader.custody(ARCHIVE) == chain.custody(ARCHIVE)
    record = reader.custody(ARCHIVE)
    assert (record.state, record.custodian, record.record_class) == (
        CustodyState.ARCHIVED,
        hospital,
        2,
    )
    assert (record.retention_deadline, record.commitment) == (DEADLINE, COMMITMENT)
    never = "01HZY3Z4Q8Q1V6S9N0M5K2J3H9"
    assert reader.custody(never) == chain.custody(never)
    assert reader.custody(never).state is CustodyState.NONE
    assert reader.checkpoint_count(consortium.accounts.hospital_b.address) == 0


def test_checkpoints_are_read_once_per_reader(
    consortium: Consortium, hospital_a: LocalAccount, anchored: list[bytes]
) -> None:
    rpc = CountingRpc(consortium.rpc_url)
    reader = NotaryReader(rpc, consortium.deployment.notary.address)
    for _ in range(3):
        reader.chain_id()
        reader.checkpoint_at(hospital_a.address, 0)
        reader.checkpoint_count(hospital_a.address)
    assert rpc.methods == ["eth_chainId", "eth_call", "eth_call", "eth_call", "eth_call"]


def _bundle(consortium: Consortium, notary: str) -> ProofBundle:
    """One valid CREATE event of hospital A, proven in a one-leaf log (checkpoint 0)."""
    hospital = consortium.accounts.hospital_a.address
    event = canonical_bytes(
        CreateEvent(
            hospital=hospital,
            log_index=0,
            archive_id=ARCHIVE,
            actor="5f" * 32,
            time=datetime(2024, 5, 1, tzinfo=UTC),
            prev=None,
            data=CreateData(
                record_class=RecordClass.INPATIENT,
                sensitivity=Sensitivity.NORMAL,
                department="ENT",
                patient="9d" * 32,
                source_system="HIS",
                version=1,
                commitment="c1" * 32,
                ciphertext_sha256="e1" * 32,
                size=1,
                media_type="text/plain",
            ),
        )
    )
    entry = BundleEntry(
        hospital, 0, event, (), BundleCheckpoint(hospital, 0, 1, merkle.leaf_hash(event))
    )
    return ProofBundle(consortium.deployment.chain_id, notary, ARCHIVE, (entry,))


def test_an_address_without_code_holds_no_notary(
    chain: RpcChain, consortium: Consortium, hospital_a: LocalAccount
) -> None:
    outsider = consortium.accounts.outsider.address
    reader = NotaryReader(consortium.rpc_url, outsider)
    with pytest.raises(NotANotaryError, match="holds no contract code on chain 31337"):
        reader.checkpoint_count(hospital_a.address)
    with pytest.raises(NotANotaryError, match="holds no contract code"):
        reader.custody(ARCHIVE)


def test_a_contract_that_is_not_a_notary(
    chain: RpcChain, consortium: Consortium, hospital_a: LocalAccount
) -> None:
    registry = consortium.deployment.registry.address
    reader = NotaryReader(consortium.rpc_url, registry)
    with pytest.raises(NotANotaryError, match="does not answer checkpointCount like an"):
        reader.checkpoint_count(hospital_a.address)


def test_the_verifier_reports_a_missing_notary_as_notary_mismatch(
    chain: RpcChain, consortium: Consortium
) -> None:
    """The bundle names the same address the verifier trusts, but nothing there is a notary:
    a definite "invalid", not "chain unavailable" (the chain answered)."""
    outsider = consortium.accounts.outsider.address
    bundle = _bundle(consortium, outsider)
    report = verify_bundle(bundle, NotaryReader(consortium.rpc_url, outsider))
    assert report.status is Status.INVALID
    assert report.failure is not None
    assert report.failure.code is Code.NOTARY_MISMATCH
    assert "holds no contract code" in report.failure.message
    assert report.failure.entry is None
    assert report.entries[0].verdict.value == "unchecked"


def test_an_unreachable_endpoint_is_a_chain_error() -> None:
    reader = NotaryReader(f"http://127.0.0.1:{free_port()}", "0x" + "11" * 20)
    with pytest.raises(ChainError, match="unreachable") as caught:
        reader.chain_id()
    assert not isinstance(caught.value, NotANotaryError)


def test_credentials_in_the_url_are_not_repeated_in_messages() -> None:
    port = free_port()
    rpc = HttpJsonRpc(f"http://alice:s3cret@127.0.0.1:{port}/v3/k3y?apikey=t0ken")
    with pytest.raises(ChainError) as caught:
        rpc.request("eth_chainId", [])
    for secret in ("alice", "s3cret", "k3y", "t0ken"):
        assert secret not in str(caught.value)
    assert f"http://***@127.0.0.1:{port}/***?***" in str(caught.value)
    with pytest.raises(ValueError, match="http:// or https://") as refused:
        HttpJsonRpc("ftp://bob:pa55@127.0.0.1/")
    assert "pa55" not in str(refused.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
        ("http://127.0.0.1:8545/", "http://127.0.0.1:8545"),
        ("https://rpc.example.org", "https://rpc.example.org"),
        ("https://u:p@rpc.example.org:8443/", "https://***@rpc.example.org:8443"),
        ("https://mainnet.example.io/v3/0123abcd", "https://mainnet.example.io/***"),
        ("http://chain:8545/?apikey=secret", "http://chain:8545?***"),
        ("http://[::1]:8545/rpc?k=v", "http://[::1]:8545/***?***"),
        ("http://host:notaport/", "http://host"),
    ],
)
def test_shown_url_keeps_scheme_host_and_port_only(url: str, shown: str) -> None:
    assert shown_url(url) == shown


# A misbehaving endpoint cannot be made of anvil: this is a real HTTP server (a fake JSON-RPC
# endpoint) answering each request with the next canned reply.
Reply = tuple[int, bytes]


@pytest.fixture
def fake_endpoint() -> Iterator[Callable[[list[Reply]], str]]:
    servers: list[ThreadingHTTPServer] = []

    def start(replies: list[Reply]) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                status, body = replies.pop(0)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _result(value: object) -> Reply:
    return 200, json.dumps({"jsonrpc": "2.0", "id": 1, "result": value}).encode()


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ((502, b"bad gateway"), "answered HTTP 502"),
        ((200, b"<html>"), "non-JSON"),
        ((200, b'{"jsonrpc":"2.0","id":1}'), "no result"),
        (
            (200, b'{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"header not found"}}'),
            "refused eth_chainId: header not found",
        ),
        (_result(12), "answered eth_chainId with 12"),
        (_result("0xzz"), "answered eth_chainId with '0xzz'"),
    ],
)
def test_an_endpoint_answering_garbage_is_unavailable(
    fake_endpoint: Callable[[list[Reply]], str], reply: Reply, message: str
) -> None:
    reader = NotaryReader(fake_endpoint([reply]), "0x" + "11" * 20)
    with pytest.raises(ChainError, match=message):
        reader.chain_id()


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("0x" + "00" * 31, "31 bytes returned, expected 32"),
        ("0x" + "ff" * 32, "is above 18446744073709551615"),
    ],
)
def test_a_notary_answering_out_of_its_abi_is_not_a_notary(
    fake_endpoint: Callable[[list[Reply]], str], output: str, message: str
) -> None:
    reader = NotaryReader(fake_endpoint([_result(output)]), "0x" + "11" * 20)
    with pytest.raises(NotANotaryError, match=message):
        reader.checkpoint_count("0x" + "22" * 20)


def test_a_custody_state_out_of_range_is_not_a_notary(
    fake_endpoint: Callable[[list[Reply]], str],
) -> None:
    words = ["00" * 32] * 9
    words[1] = f"{7:064x}"
    reader = NotaryReader(fake_endpoint([_result("0x" + "".join(words))]), "0x" + "11" * 20)
    with pytest.raises(NotANotaryError, match="does not answer archive like an ArchiveNotary"):
        reader.custody(ARCHIVE)

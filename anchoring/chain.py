"""JSON-RPC access to the consortium contracts.

* ``ContractCodec`` — pure ABI work for one contract: call encoding (refusing wrong-length
  ``bytesN`` instead of padding them), output, event and custom-error decoding.
* ``decode_revert`` — revert data -> ``(error_name, args)`` (custom errors, ``Error``, ``Panic``).
* ``JsonRpc`` — a thin JSON-RPC client over web3's HTTP provider; transport failures raise
  ``ChainError``, node errors ``RpcError``, reverts ``ContractRevertError``.
* ``RpcChain`` — the ``ChainReader`` of ``anchoring.chainview`` plus the other reads the node needs.
* ``sign_transaction`` / ``ContractWriter`` — build transactions with an explicit nonce, sign them
  with a local eth-account key (never an unlocked node account), broadcast, wait, explain reverts.

Hashes here are ``0x``-prefixed lowercase hex strings (the JSON-RPC convention).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError, EncodingError
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from web3 import Web3
from web3.exceptions import Web3Exception
from web3.providers.rpc import HTTPProvider

from anchoring.artifacts import Artifact, load_artifact
from anchoring.chainview import ChainReader, CustodyRecord, CustodyState, OnChainCheckpoint
from anchoring.deployment import Deployment
from anchoring.errors import AnchoringError, ChainError
from anchoring.ids import archive_key, normalize_address
from anchoring.rpcview import shown_url

ContractName = Literal["ConsortiumRegistry", "ArchiveNotary", "AttestationRevocations"]
_ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")
_PANIC_SELECTOR = bytes.fromhex("4e487b71")
UNKNOWN_ERROR = "UnknownError"
"""``decode_revert`` name for revert data whose selector no known ABI declares."""


class Role(IntEnum):
    """Member roles of ``ConsortiumRegistry`` (0 = not a member)."""

    NONE = 0
    HOSPITAL = 1
    REGULATOR = 2
    INSURER = 3
    AUDITOR = 4


class MemberStatus(IntEnum):
    """Member status in ``ConsortiumRegistry``."""

    NONE = 0
    ACTIVE = 1
    SUSPENDED = 2


class AbiError(AnchoringError, ValueError):
    """Arguments do not fit the ABI, or returned data cannot be decoded with it."""

    code = "abi_error"


class RpcError(ChainError):
    """The node answered a JSON-RPC request with an error (not a contract revert)."""

    code = "rpc_error"

    def __init__(self, method: str, rpc_code: int | None, rpc_message: str) -> None:
        super().__init__(f"{method}: {rpc_message} (code {rpc_code})")
        self.method = method
        self.rpc_code = rpc_code
        self.rpc_message = rpc_message


class NonceTooLowError(RpcError):
    """The sender's nonce was already used by another transaction: this one can never be mined."""

    code = "nonce_too_low"


class ContractRevertError(ChainError):
    """A contract call or transaction reverted; ``error_name``/``error_args`` say why."""

    code = "contract_reverted"

    def __init__(self, error_name: str, error_args: tuple[Any, ...], data: bytes) -> None:
        shown = ", ".join(_show(arg) for arg in error_args)
        super().__init__(f"reverted: {error_name or 'no reason'}({shown})")
        self.error_name = error_name
        self.error_args = error_args
        self.data = data


class TransactionTimeoutError(ChainError, TimeoutError):
    """A transaction was not mined within the allowed time."""

    code = "transaction_timeout"


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    return str(value)


def hex_to_bytes(value: str) -> bytes:
    """``0x``-prefixed hex -> bytes (raises ``AbiError``)."""
    if not isinstance(value, str) or not value.startswith("0x"):
        raise AbiError(f"expected 0x-prefixed hex, got {value!r}")
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        raise AbiError(f"not hex: {value!r}") from None


def _type_string(param: Mapping[str, Any]) -> str:
    """ABI type of a parameter, with tuple components expanded (``(address,uint8)[]``)."""
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_type_string(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


def _signature(item: Mapping[str, Any]) -> str:
    return f"{item['name']}({','.join(_type_string(p) for p in item['inputs'])})"


def _check_fixed_bytes(param: Mapping[str, Any], value: Any, where: str) -> None:
    """Refuse ``bytesN`` values of the wrong length (eth_abi would silently right-pad them)."""
    kind = str(param["type"])
    if kind.endswith("]"):
        if not isinstance(value, list | tuple):
            raise AbiError(f"{where}: expected a list for {kind}")
        element = {**param, "type": kind[: kind.rindex("[")]}
        for i, item in enumerate(value):
            _check_fixed_bytes(element, item, f"{where}[{i}]")
    elif kind == "tuple":
        components = param["components"]
        if not isinstance(value, list | tuple) or len(value) != len(components):
            raise AbiError(f"{where}: expected {len(components)} tuple fields")
        for component, item in zip(components, value, strict=True):
            _check_fixed_bytes(component, item, f"{where}.{component['name']}")
    elif kind.startswith("bytes") and kind != "bytes":
        size = int(kind[5:])
        if not isinstance(value, bytes) or len(value) != size:
            shown = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
            raise AbiError(f"{where}: {kind} needs exactly {size} bytes, got {shown}")


@dataclass(frozen=True, slots=True)
class DecodedEvent:
    """One log decoded with a contract's ABI."""

    name: str
    args: dict[str, Any]
    address: str
    block_number: int
    log_index: int


class ContractCodec:
    """ABI encoding and decoding for one contract (no I/O)."""

    def __init__(self, name: str, abi: Sequence[Mapping[str, Any]]) -> None:
        self.name = name
        self._functions: dict[str, Mapping[str, Any]] = {}
        self._errors: dict[bytes, Mapping[str, Any]] = {}
        self._events: dict[bytes, Mapping[str, Any]] = {}
        self._constructor: Mapping[str, Any] = {"inputs": []}
        for item in abi:
            kind = item.get("type")
            if kind == "function":
                if item["name"] in self._functions:
                    raise AbiError(f"{name}: overloaded function {item['name']} is not supported")
                self._functions[item["name"]] = item
            elif kind == "error":
                self._errors[keccak(text=_signature(item))[:4]] = item
            elif kind == "event" and not item.get("anonymous", False):
                self._events[keccak(text=_signature(item))] = item
            elif kind == "constructor":
                self._constructor = item

    @classmethod
    def for_contract(cls, name: ContractName, build_dir: Path | None = None) -> ContractCodec:
        """Codec of a committed artifact."""
        artifact: Artifact = load_artifact(name, build_dir)
        return cls(name, artifact.abi)

    def function_names(self) -> list[str]:
        """Names of every function in the ABI."""
        return sorted(self._functions)

    def is_view(self, function: str) -> bool:
        """Whether ``function`` is ``view`` or ``pure``."""
        return self._function(function).get("stateMutability") in {"view", "pure"}

    def _function(self, function: str) -> Mapping[str, Any]:
        try:
            return self._functions[function]
        except KeyError:
            raise AbiError(f"{self.name} has no function {function!r}") from None

    def _encode_args(
        self, inputs: Sequence[Mapping[str, Any]], args: Sequence[Any], what: str
    ) -> bytes:
        if len(args) != len(inputs):
            raise AbiError(f"{what}: expected {len(inputs)} arguments, got {len(args)}")
        for param, value in zip(inputs, args, strict=True):
            _check_fixed_bytes(param, value, f"{what}.{param['name'] or '_'}")
        try:
            return abi_encode([_type_string(p) for p in inputs], list(args))
        except (EncodingError, TypeError, ValueError) as exc:
            raise AbiError(f"{what}: {exc}") from None

    def encode_call(self, function: str, args: Sequence[Any]) -> bytes:
        """Calldata (selector followed by the encoded arguments)."""
        item = self._function(function)
        selector = keccak(text=_signature(item))[:4]
        return selector + self._encode_args(item["inputs"], args, f"{self.name}.{function}")

    def encode_constructor(self, args: Sequence[Any]) -> bytes:
        """Encoded constructor arguments, to append to the creation bytecode."""
        return self._encode_args(self._constructor["inputs"], args, f"{self.name}.constructor")

    def decode_output(self, function: str, data: bytes) -> tuple[Any, ...]:
        """The decoded return values of ``function`` (a tuple, one entry per output)."""
        item = self._function(function)
        try:
            values = abi_decode([_type_string(p) for p in item["outputs"]], data)
        except (DecodingError, ValueError) as exc:
            raise AbiError(f"{self.name}.{function}: cannot decode output ({exc})") from None
        return tuple(_normalize_value(v) for v in values)

    def decode_error(self, data: bytes) -> tuple[str, tuple[Any, ...]] | None:
        """``(name, args)`` of a custom error of this contract, or None when the selector is unknown."""
        item = self._errors.get(data[:4])
        if item is None:
            return None
        try:
            values = abi_decode([_type_string(p) for p in item["inputs"]], data[4:])
        except (DecodingError, ValueError):
            return None
        return str(item["name"]), tuple(_normalize_value(v) for v in values)

    def decode_logs(self, logs: Sequence[Mapping[str, Any]], address: str) -> list[DecodedEvent]:
        """Decode the logs emitted by ``address`` whose first topic is an event of this ABI."""
        wanted = address.lower()
        decoded: list[DecodedEvent] = []
        for log in logs:
            if str(log.get("address", "")).lower() != wanted or not log.get("topics"):
                continue
            topics = [hex_to_bytes(t) for t in log["topics"]]
            item = self._events.get(topics[0])
            if item is None:
                continue
            indexed = [p for p in item["inputs"] if p.get("indexed")]
            plain = [p for p in item["inputs"] if not p.get("indexed")]
            values: dict[str, Any] = {}
            for param, topic in zip(indexed, topics[1:], strict=True):
                (values[param["name"]],) = abi_decode([_type_string(param)], topic)
            data = abi_decode([_type_string(p) for p in plain], hex_to_bytes(log["data"]))
            values.update({p["name"]: v for p, v in zip(plain, data, strict=True)})
            decoded.append(
                DecodedEvent(
                    name=str(item["name"]),
                    args={k: _normalize_value(v) for k, v in values.items()},
                    address=to_checksum_address(log["address"]),
                    block_number=int(log["blockNumber"], 16),
                    log_index=int(log["logIndex"], 16),
                )
            )
        return decoded


def _normalize_value(value: Any) -> Any:
    """Addresses decoded by eth_abi come lower-case; make them EIP-55 like everywhere else."""
    if isinstance(value, str) and value.startswith("0x") and len(value) == 42:
        return to_checksum_address(value)
    if isinstance(value, tuple):
        return tuple(_normalize_value(v) for v in value)
    if isinstance(value, list):
        return [_normalize_value(v) for v in value]
    return value


def decode_revert(data: bytes, codecs: Sequence[ContractCodec] = ()) -> tuple[str, tuple[Any, ...]]:
    """Turn revert data into ``(error_name, args)``.

    Custom errors are looked up in ``codecs`` (defaults: none, so pass the contracts involved);
    ``Error(string)`` gives ``("Error", (message,))``, ``Panic(uint256)`` gives ``("Panic", (code,))``,
    empty data gives ``("", ())`` and an unknown selector ``(UNKNOWN_ERROR, (data,))``.
    """
    if not data:
        return "", ()
    selector = data[:4]
    try:
        if selector == _ERROR_STRING_SELECTOR:
            return "Error", tuple(abi_decode(["string"], data[4:]))
        if selector == _PANIC_SELECTOR:
            return "Panic", tuple(abi_decode(["uint256"], data[4:]))
    except (DecodingError, ValueError):
        return UNKNOWN_ERROR, (data,)
    for codec in codecs:
        found = codec.decode_error(data)
        if found is not None:
            return found
    return UNKNOWN_ERROR, (data,)


# ------------------------------------------------------------------------------------------------
# JSON-RPC transport


def _revert_data(error: Mapping[str, Any]) -> bytes | None:
    """Revert data of a JSON-RPC error from anvil, ganache or Besu, or None when it is no revert."""
    message = str(error.get("message", "")).lower()
    data = error.get("data")
    if isinstance(data, Mapping):  # ganache variants nest the bytes
        data = data.get("data", data.get("result"))
    if isinstance(data, str) and data.startswith("0x"):
        try:
            return bytes.fromhex(data[2:])
        except ValueError:
            return None
    if "revert" in message:
        return b""
    return None


class JsonRpc:
    """Minimal JSON-RPC client over web3's HTTP provider (no retries: callers decide)."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self.web3 = Web3(
            HTTPProvider(
                url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None
            )
        )
        self._chain_id: int | None = None

    def request(self, method: str, params: Sequence[Any] = ()) -> Any:
        """Send one request; return its ``result``.

        Raises ``ChainError`` when the endpoint cannot be reached, ``ContractRevertError`` (raw data,
        undecoded name) on a revert, ``RpcError`` for any other JSON-RPC error.
        """
        try:
            response = self.web3.provider.make_request(method, list(params))  # type: ignore[arg-type]
        except (OSError, ValueError, Web3Exception) as exc:  # requests' errors are OSErrors
            raise ChainError(
                f"chain RPC {shown_url(self.url)} unreachable ({type(exc).__name__})"
            ) from None
        error = response.get("error")
        if error is not None:
            if not isinstance(error, Mapping):
                raise RpcError(method, None, str(error))
            revert = _revert_data(error)
            if revert is not None and method in {"eth_call", "eth_estimateGas"}:
                raise ContractRevertError("", (), revert)
            raise RpcError(method, error.get("code"), str(error.get("message", "")))
        return response.get("result")

    def chain_id(self) -> int:
        """``eth_chainId`` (cached: it never changes for an endpoint)."""
        if self._chain_id is None:
            self._chain_id = int(self.request("eth_chainId"), 16)
        return self._chain_id

    def block_number(self) -> int:
        """Number of the latest block."""
        return int(self.request("eth_blockNumber"), 16)

    def block(self, block: int | str = "latest") -> dict[str, Any]:
        """Block header fields (without transactions)."""
        tag = hex(block) if isinstance(block, int) else block
        result = self.request("eth_getBlockByNumber", [tag, False])
        if result is None:
            raise RpcError("eth_getBlockByNumber", None, f"no block {block}")
        return dict(result)

    def code_at(self, address: str) -> bytes:
        """Runtime code at ``address`` (empty for an account without code)."""
        return hex_to_bytes(self.request("eth_getCode", [address, "latest"]))

    def nonce(self, address: str, block: str = "latest") -> int:
        """Transaction count of ``address`` at ``block`` (``pending`` includes the mempool)."""
        return int(self.request("eth_getTransactionCount", [address, block]), 16)

    def call(
        self, to: str, data: bytes, *, sender: str | None = None, block: int | str = "latest"
    ) -> bytes:
        """``eth_call``; a revert raises ``ContractRevertError`` with the raw data."""
        tx: dict[str, Any] = {"to": to, "data": "0x" + data.hex()}
        if sender is not None:
            tx["from"] = sender
        tag = hex(block) if isinstance(block, int) else block
        return hex_to_bytes(self.request("eth_call", [tx, tag]))

    def estimate_gas(self, sender: str, to: str | None, data: bytes) -> int:
        """``eth_estimateGas`` against the latest state; a revert raises ``ContractRevertError``."""
        tx: dict[str, Any] = {"from": sender, "data": "0x" + data.hex()}
        if to is not None:
            tx["to"] = to
        return int(self.request("eth_estimateGas", [tx]), 16)

    def fee_fields(self) -> dict[str, int]:
        """EIP-1559 fee fields when the chain has a base fee, else a legacy ``gasPrice``."""
        base = self.block("latest").get("baseFeePerGas")
        if base is None:
            return {"gasPrice": int(self.request("eth_gasPrice"), 16)}
        base_fee = int(base, 16)
        try:
            tip = int(self.request("eth_maxPriorityFeePerGas"), 16)
        except RpcError:
            tip = max(int(self.request("eth_gasPrice"), 16) - base_fee, 0)
        return {"maxFeePerGas": 2 * base_fee + tip, "maxPriorityFeePerGas": tip}

    def send_raw(self, raw: bytes) -> str:
        """Broadcast signed bytes; return the transaction hash."""
        return str(self.request("eth_sendRawTransaction", ["0x" + raw.hex()]))

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        """The receipt, or None while the transaction is not mined."""
        result = self.request("eth_getTransactionReceipt", [tx_hash])
        return dict(result) if result is not None else None

    def transaction(self, tx_hash: str) -> dict[str, Any] | None:
        """The transaction as the node knows it (mempool or mined), or None."""
        result = self.request("eth_getTransactionByHash", [tx_hash])
        return dict(result) if result is not None else None


# ------------------------------------------------------------------------------------------------
# Transactions


@dataclass(frozen=True, slots=True)
class SignedTx:
    """A signed transaction, ready to (re)broadcast: the same bytes always give the same hash."""

    raw: bytes
    tx_hash: str
    nonce: int


@dataclass(frozen=True, slots=True)
class TxReceipt:
    """The parts of a receipt callers use; ``events`` are decoded with the known ABIs."""

    tx_hash: str
    status: int
    block_number: int
    gas_used: int
    contract_address: str | None
    logs: list[dict[str, Any]] = field(repr=False)
    events: list[DecodedEvent] = field(default_factory=list)

    def event(self, name: str) -> DecodedEvent:
        """The first decoded event called ``name`` (raises ``LookupError`` when absent)."""
        for event in self.events:
            if event.name == name:
                return event
        raise LookupError(f"transaction {self.tx_hash} emitted no {name}")


def sign_transaction(
    account: LocalAccount,
    *,
    chain_id: int,
    nonce: int,
    to: str | None,
    data: bytes,
    gas: int,
    fees: Mapping[str, int],
) -> SignedTx:
    """Sign a call (or, with ``to=None``, a contract creation) with a local key and explicit nonce."""
    tx: dict[str, Any] = {
        "chainId": chain_id,
        "nonce": nonce,
        "gas": gas,
        "value": 0,
        "data": data,
        **fees,
    }
    if to is not None:
        tx["to"] = to
    if "maxFeePerGas" in fees:
        tx["type"] = 2
    signed = account.sign_transaction(tx)
    return SignedTx(
        raw=bytes(signed.raw_transaction), tx_hash="0x" + bytes(signed.hash).hex(), nonce=nonce
    )


def receipt_from_rpc(
    raw: Mapping[str, Any],
    codecs: Sequence[ContractCodec] = (),
    addresses: Mapping[str, str] | None = None,
) -> TxReceipt:
    """Build a ``TxReceipt`` from ``eth_getTransactionReceipt``, decoding events of ``codecs``.

    ``addresses`` maps codec name -> contract address (logs of other addresses are not decoded).
    """
    logs = [dict(log) for log in raw.get("logs", [])]
    events: list[DecodedEvent] = []
    for codec in codecs:
        address = (addresses or {}).get(codec.name)
        if address is not None:
            events.extend(codec.decode_logs(logs, address))
    events.sort(key=lambda e: e.log_index)
    contract = raw.get("contractAddress")
    return TxReceipt(
        tx_hash=str(raw["transactionHash"]),
        status=int(raw["status"], 16),
        block_number=int(raw["blockNumber"], 16),
        gas_used=int(raw["gasUsed"], 16),
        contract_address=to_checksum_address(contract) if contract else None,
        logs=logs,
        events=events,
    )


def wait_for_receipt(
    rpc: JsonRpc, tx_hash: str, *, timeout: float = 60.0, poll: float = 0.05
) -> dict[str, Any]:
    """Poll until ``tx_hash`` is mined; raise ``TransactionTimeoutError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = poll
    while True:
        receipt = rpc.receipt(tx_hash)
        if receipt is not None:
            return receipt
        if time.monotonic() >= deadline:
            raise TransactionTimeoutError(f"transaction {tx_hash} not mined after {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


# ------------------------------------------------------------------------------------------------
# Reads


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """A registry member as ``ConsortiumRegistry.member`` returns it."""

    address: str
    role: Role
    status: MemberStatus
    joined_at: int
    name: str
    public_key: bytes

    @property
    def active(self) -> bool:
        """Whether the member may act."""
        return self.status is MemberStatus.ACTIVE


class RpcChain:
    """The deployed contracts over JSON-RPC: ``ChainReader`` and the other reads the node needs."""

    def __init__(
        self,
        rpc: JsonRpc | str,
        deployment: Deployment,
        *,
        timeout: float = 10.0,
    ) -> None:
        self.rpc = rpc if isinstance(rpc, JsonRpc) else JsonRpc(rpc, timeout=timeout)
        self.registry = ContractCodec.for_contract("ConsortiumRegistry")
        self.notary = ContractCodec.for_contract("ArchiveNotary")
        self.revocations = ContractCodec.for_contract("AttestationRevocations")
        self.addresses: dict[str, str] = {
            "ConsortiumRegistry": deployment.registry.address,
            "ArchiveNotary": deployment.notary.address,
        }
        if deployment.revocations is not None:
            self.addresses["AttestationRevocations"] = deployment.revocations.address

    @classmethod
    def for_notary(cls, rpc: JsonRpc | str, notary: str, *, timeout: float = 10.0) -> RpcChain:
        """A reader that knows only the ``ArchiveNotary`` address (what a regulator trusts);
        the registry address is read from the notary itself."""
        chain = cls.__new__(cls)
        chain.rpc = rpc if isinstance(rpc, JsonRpc) else JsonRpc(rpc, timeout=timeout)
        chain.registry = ContractCodec.for_contract("ConsortiumRegistry")
        chain.notary = ContractCodec.for_contract("ArchiveNotary")
        chain.revocations = ContractCodec.for_contract("AttestationRevocations")
        chain.addresses = {"ArchiveNotary": normalize_address(notary)}
        if not chain.rpc.code_at(chain.addresses["ArchiveNotary"]):
            raise ChainError(f"no contract code at {notary} on this chain: not an ArchiveNotary")
        (registry,) = chain.call("ArchiveNotary", "registry")
        chain.addresses["ConsortiumRegistry"] = to_checksum_address(registry)
        return chain

    @property
    def codecs(self) -> tuple[ContractCodec, ...]:
        """The contracts' codecs (for revert and event decoding)."""
        return (self.notary, self.registry, self.revocations)

    def codec(self, contract: ContractName) -> ContractCodec:
        """The codec of one of the contracts."""
        if contract == "AttestationRevocations":
            return self.revocations
        return self.registry if contract == "ConsortiumRegistry" else self.notary

    def call(
        self, contract: ContractName, function: str, args: Sequence[Any] = ()
    ) -> tuple[Any, ...]:
        """Call a view function; a revert raises ``ContractRevertError`` with the decoded error."""
        codec = self.codec(contract)
        data = codec.encode_call(function, args)
        try:
            result = self.rpc.call(self.addresses[contract], data)
        except ContractRevertError as exc:
            raise self.explain(exc.data) from None
        return codec.decode_output(function, result)

    def explain(self, data: bytes) -> ContractRevertError:
        """A ``ContractRevertError`` carrying the decoded form of ``data``."""
        name, args = decode_revert(data, self.codecs)
        return ContractRevertError(name, args, data)

    def receipt_of(self, raw: Mapping[str, Any]) -> TxReceipt:
        """``TxReceipt`` with the events of both contracts decoded."""
        return receipt_from_rpc(raw, self.codecs, self.addresses)

    # ChainReader ------------------------------------------------------------------------------

    def chain_id(self) -> int:
        """Chain id reported by the endpoint."""
        return self.rpc.chain_id()

    def notary_address(self) -> str:
        """Address of ``ArchiveNotary``."""
        return self.addresses["ArchiveNotary"]

    def checkpoint_count(self, hospital: str) -> int:
        """Number of checkpoints ``hospital`` anchored."""
        (count,) = self.call("ArchiveNotary", "checkpointCount", [normalize_address(hospital)])
        return int(count)

    def checkpoint_at(self, hospital: str, index: int) -> OnChainCheckpoint:
        """Checkpoint ``index`` of ``hospital`` (``ContractRevertError`` when out of range)."""
        address = normalize_address(hospital)
        size, root, anchored_at = self.call("ArchiveNotary", "checkpointAt", [address, index])
        return OnChainCheckpoint(
            hospital=address,
            index=index,
            size=int(size),
            root=bytes(root),
            anchored_at=int(anchored_at),
        )

    def custody(self, archive_id: str) -> CustodyRecord:
        """Custody record of an archive (state NONE when never registered)."""
        (record,) = self.call("ArchiveNotary", "archive", [archive_key(archive_id)])
        (
            custodian,
            state,
            on_hold,
            by_regulator,
            record_class,
            deadline,
            commitment,
            recipient,
            certificate,
        ) = record
        return CustodyRecord(
            archive_id=archive_id,
            custodian=to_checksum_address(custodian),
            state=CustodyState(state),
            on_hold=bool(on_hold),
            hold_by_regulator=bool(by_regulator),
            record_class=int(record_class),
            retention_deadline=int(deadline),
            commitment=bytes(commitment),
            pending_recipient=to_checksum_address(recipient),
            certificate_hash=bytes(certificate),
        )

    def hold_placed_by(self, archive_id: str) -> str:
        """Who placed the hold in force through ``placeHold`` (the zero address when none)."""
        (placed_by,) = self.call("ArchiveNotary", "holdPlacedBy", [archive_key(archive_id)])
        return to_checksum_address(placed_by)

    # Other reads ------------------------------------------------------------------------------

    def member(self, address: str) -> MemberRecord:
        """Registry record of ``address`` (role NONE when not a member)."""
        checksummed = normalize_address(address)
        ((role, status, joined_at, name, public_key),) = self.call(
            "ConsortiumRegistry", "member", [checksummed]
        )
        return MemberRecord(
            address=checksummed,
            role=Role(role),
            status=MemberStatus(status),
            joined_at=int(joined_at),
            name=str(name),
            public_key=bytes(public_key),
        )

    def members(self) -> list[MemberRecord]:
        """Every member ever admitted, in admission order."""
        (count,) = self.call("ConsortiumRegistry", "memberCount")
        addresses = [self.call("ConsortiumRegistry", "memberAt", [i])[0] for i in range(int(count))]
        return [self.member(address) for address in addresses]

    def is_active(self, address: str, role: Role) -> bool:
        """Whether ``address`` is an active member with ``role``."""
        (active,) = self.call(
            "ConsortiumRegistry", "isActive", [normalize_address(address), int(role)]
        )
        return bool(active)

    def has_contract_code(self) -> bool:
        """Whether both deployed addresses still hold code (False on a wiped dev chain)."""
        return all(self.rpc.code_at(address) for address in self.addresses.values())

    def block_timestamp(self, block: int | str = "latest") -> int:
        """Timestamp (unix seconds) of a block."""
        return int(self.block_info(block)["timestamp"], 16)

    def block_info(self, block: int | str = "latest") -> dict[str, Any]:
        """Header fields of a block."""
        return self.rpc.block(block)


if TYPE_CHECKING:

    def _rpc_chain_is_a_chain_reader(chain: RpcChain) -> ChainReader:
        """mypy proves here that ``RpcChain`` satisfies the ``ChainReader`` protocol."""
        return chain


# ------------------------------------------------------------------------------------------------
# Writes


GAS_LIMITS: dict[str, tuple[int, int]] = {
    "anchorCheckpoint": (200_000, 8_000),  # per proof hash
    "registerBatch": (80_000, 60_000),  # per archive
    "destroyBatch": (60_000, 45_000),  # per archive
}
"""Fixed gas limits ``(base, per item)`` for calls signed without estimation (see ``gas_limit``)."""
DEFAULT_GAS_LIMIT = 400_000


def gas_limit(function: str, args: Sequence[Any]) -> int:
    """A safe gas limit that does not depend on chain state.

    Transactions signed ahead of the ones before them being mined cannot be estimated (the state
    they will run in does not exist yet), so the worker signs with these bounds; unused gas is not
    charged. Measured figures are in docs/contracts.md.
    """
    if function in GAS_LIMITS:
        base, per_item = GAS_LIMITS[function]
        items = args[2] if function == "anchorCheckpoint" else args[0]
        return base + per_item * len(items)
    return DEFAULT_GAS_LIMIT


class ContractWriter:
    """Signs and sends one account's transactions to the deployed contracts.

    The small methods (``sign_call``, ``broadcast``, ``receipt``, ``is_known``, ``revert_reason``)
    are for callers that record every step (the anchoring worker); ``transact`` does it all in one
    call for tools and tests.
    """

    def __init__(self, chain: RpcChain, account: LocalAccount) -> None:
        self.chain = chain
        self.account = account

    @property
    def address(self) -> str:
        """The signer's checksummed address."""
        return str(self.account.address)

    def has_notary_code(self) -> bool:
        """Whether the notary address still holds code."""
        return bool(self.chain.rpc.code_at(self.chain.notary_address()))

    def confirmed_nonce(self) -> int:
        """Nonce of the next transaction counting only mined ones."""
        return self.chain.rpc.nonce(self.address, "latest")

    def pending_nonce(self) -> int:
        """Nonce of the next transaction counting the node's mempool."""
        return self.chain.rpc.nonce(self.address, "pending")

    def latest_block(self) -> int:
        """Number of the latest block."""
        return self.chain.rpc.block_number()

    def sign_call(
        self,
        function: str,
        args: Sequence[Any],
        nonce: int,
        *,
        contract: ContractName = "ArchiveNotary",
        gas: int | None = None,
        fees: Mapping[str, int] | None = None,
    ) -> SignedTx:
        """Sign a call with an explicit nonce and a state-independent gas limit (nothing is sent).
        ``fees`` default to the chain's current ones (``JsonRpc.fee_fields``)."""
        data = self.chain.codec(contract).encode_call(function, args)
        return sign_transaction(
            self.account,
            chain_id=self.chain.chain_id(),
            nonce=nonce,
            to=self.chain.addresses[contract],
            data=data,
            gas=gas if gas is not None else gas_limit(function, args),
            fees=fees if fees is not None else self.chain.rpc.fee_fields(),
        )

    def broadcast(self, raw: bytes) -> None:
        """Send signed bytes. A node that already has them, or has mined them, is not an error;
        a nonce consumed by a different transaction raises ``NonceTooLowError``."""
        try:
            self.chain.rpc.send_raw(raw)
        except RpcError as exc:
            text = exc.rpc_message.lower()
            if "already known" in text or "already imported" in text or "known transaction" in text:
                return
            if "nonce too low" in text or "nonce is too low" in text:
                if self.is_known("0x" + keccak(raw).hex()):
                    return
                raise NonceTooLowError(exc.method, exc.rpc_code, exc.rpc_message) from None
            raise

    def is_known(self, tx_hash: str) -> bool:
        """Whether the node has the transaction (in its mempool or mined)."""
        return self.chain.rpc.transaction(tx_hash) is not None

    def receipt(self, tx_hash: str) -> TxReceipt | None:
        """The decoded receipt, or None while not mined."""
        raw = self.chain.rpc.receipt(tx_hash)
        return self.chain.receipt_of(raw) if raw is not None else None

    def revert_reason(self, tx_hash: str) -> str:
        """Why a mined transaction reverted, e.g. ``NotaryOnHold(0x…, True)``.

        Replays the call at the parent block's state (the usual approach; transactions earlier in
        the same block are not replayed, so the answer can differ in rare races).
        """
        error = self.revert_error(tx_hash)
        if error is None:
            return (
                "reverted (the replay succeeded: the reason depended on the block's earlier state)"
            )
        return str(error).removeprefix("reverted: ")

    def revert_error(self, tx_hash: str) -> ContractRevertError | None:
        """The decoded error of a reverted transaction (see ``revert_reason``), None if not reproducible."""
        tx = self.chain.rpc.transaction(tx_hash)
        mined = None if tx is None else tx.get("blockNumber")
        if tx is not None and mined is None:
            # A node can answer the receipt before its transaction lookup shows the block (seen
            # on anvil right after a receipt): the receipt says where it was mined.
            receipt = self.chain.rpc.receipt(tx_hash)
            mined = None if receipt is None else receipt.get("blockNumber")
        if tx is None or mined is None:
            raise RpcError("eth_getTransactionByHash", None, f"{tx_hash} is not mined")
        block = int(mined, 16)
        try:
            self.chain.rpc.call(
                str(tx["to"]),
                hex_to_bytes(tx["input"]),
                sender=str(tx["from"]),
                block=max(block - 1, 0),
            )
        except ContractRevertError as exc:
            return self.chain.explain(exc.data)
        return None

    def checkpoint_count(self, hospital: str) -> int:
        """See ``RpcChain.checkpoint_count``."""
        return self.chain.checkpoint_count(hospital)

    def checkpoint_at(self, hospital: str, index: int) -> OnChainCheckpoint:
        """See ``RpcChain.checkpoint_at``."""
        return self.chain.checkpoint_at(hospital, index)

    def transact(
        self,
        function: str,
        args: Sequence[Any] = (),
        *,
        contract: ContractName = "ArchiveNotary",
        nonce: int | None = None,
        timeout: float = 60.0,
    ) -> TxReceipt:
        """Estimate (a revert raises the decoded ``ContractRevertError`` before anything is sent),
        sign, send and wait; a mined revert also raises ``ContractRevertError``."""
        codec = self.chain.codec(contract)
        data = codec.encode_call(function, args)
        to = self.chain.addresses[contract]
        try:
            estimate = self.chain.rpc.estimate_gas(self.address, to, data)
        except ContractRevertError as exc:
            raise self.chain.explain(exc.data) from None
        signed = sign_transaction(
            self.account,
            chain_id=self.chain.chain_id(),
            nonce=nonce if nonce is not None else self.pending_nonce(),
            to=to,
            data=data,
            gas=estimate + estimate // 4 + 10_000,
            fees=self.chain.rpc.fee_fields(),
        )
        self.broadcast(signed.raw)
        receipt = self.chain.receipt_of(
            wait_for_receipt(self.chain.rpc, signed.tx_hash, timeout=timeout)
        )
        if receipt.status != 1:
            error = self.revert_error(signed.tx_hash)
            raise error if error is not None else ContractRevertError("", (), b"")
        return receipt

"""A light ``ChainReader`` for verifiers: JSON-RPC over ``http.client``, standard library only.

``archivechain verify`` reads four facts (docs/proof-format.md §6.1): ``eth_chainId`` and three
``eth_call``s to the trusted ``ArchiveNotary``, ABI-encoded here by hand (a selector and 32-byte
words). The node keeps ``anchoring.chain.RpcChain`` (web3, eth_abi, the contract artifacts);
this reader exists so that a verifier starts in a few tens of milliseconds instead of seconds.

Answers are judged strictly: return data must be exactly the documented number of words, each in
its type's range. Anything else from the trusted notary address (no code, a revert, garbage) means
it holds no ArchiveNotary: ``NotANotaryError``, a definite finding the verifier reports as
``notary_mismatch``. A transport failure, an HTTP error or a malformed JSON-RPC response is
``ChainError`` (the chain is unavailable).

Anchored checkpoints never change (the contract only appends), so ``checkpoint_at`` answers are
cached for the reader's lifetime: verifying many bundles in one process asks for each checkpoint
once. Counts and custody records change and are read every time.
"""

from __future__ import annotations

import base64
import http.client
import json
from typing import Any
from urllib.parse import unquote, urlsplit

from anchoring.chainview import CustodyRecord, CustodyState, OnChainCheckpoint
from anchoring.eip55 import keccak256, to_checksum_address
from anchoring.errors import ChainError, NotANotaryError
from anchoring.ids import archive_key, normalize_address

CHECKPOINT_COUNT = bytes.fromhex("76a82342")
"""``checkpointCount(address)``."""
CHECKPOINT_AT = bytes.fromhex("5cfa0e30")
"""``checkpointAt(address,uint64)``."""
ARCHIVE = bytes.fromhex("a995db26")
"""``archive(bytes32)``."""

_WORD = 32
_UINT64_MAX = 2**64 - 1


def shown_url(url: str) -> str:
    """An RPC endpoint as messages and logs show it: scheme, host and port only. Credentials,
    a path and a query are each masked (``***``): hosted RPC endpoints carry API keys in any
    of them (``https://user:secret@host``, ``/v3/<key>``, ``?apikey=<key>``)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    shown = f"{parts.scheme or '?'}://{'***@' if parts.username is not None else ''}{host}"
    if port is not None:
        shown += f":{port}"
    if parts.path not in ("", "/"):
        shown += "/***"
    if parts.query:
        shown += "?***"
    return shown


class HttpJsonRpc:
    """JSON-RPC 2.0 over one kept-alive HTTP(S) connection. Not thread-safe."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"RPC URL must be http:// or https:// with a host, got {shown_url(url)!r}"
            )
        self.url = shown_url(url)
        """The endpoint as messages show it (``shown_url``: credentials, path, query masked)."""
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._timeout = timeout
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            token = base64.b64encode(credentials.encode()).decode("ascii")
            self._headers["Authorization"] = f"Basic {token}"
        self._connection: http.client.HTTPConnection | None = None
        self._next_id = 0

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def close(self) -> None:
        """Close the connection (a later request opens a new one)."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _post(self, body: bytes) -> tuple[int, bytes]:
        reused = self._connection is not None
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = self._connect()
            try:
                self._connection.request("POST", self._path, body, self._headers)
                response = self._connection.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if not reused or attempt == 2:  # only a stale kept-alive connection is retried
                    raise
            except BaseException:
                self.close()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def request(self, method: str, params: list[Any]) -> Any:
        """Send one request and return its ``result``; ``ChainError`` on any failure,
        ``RpcRevert`` when an ``eth_call`` reverted."""
        self._next_id += 1
        body = json.dumps(
            {"jsonrpc": "2.0", "id": self._next_id, "method": method, "params": params}
        ).encode()
        try:
            status, raw = self._post(body)
        except (OSError, http.client.HTTPException) as exc:
            reason = str(exc) or type(exc).__name__
            raise ChainError(f"chain RPC {self.url} unreachable: {reason}") from None
        if status != 200:
            raise ChainError(f"chain RPC {self.url} answered HTTP {status} to {method}")
        try:
            response = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise ChainError(f"chain RPC {self.url} answered {method} with non-JSON") from None
        if not isinstance(response, dict) or ("result" not in response and "error" not in response):
            raise ChainError(f"chain RPC {self.url} answered {method} with no result")
        error = response.get("error")
        if error is not None:
            message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
            if method == "eth_call" and _is_revert(error):
                raise RpcRevert(message or "execution reverted")
            raise ChainError(f"chain RPC {self.url} refused {method}: {message}")
        return response["result"]


class RpcRevert(ChainError):
    """An ``eth_call`` reverted (the reader turns this into ``NotANotaryError``)."""


def _is_revert(error: object) -> bool:
    """Whether a JSON-RPC error is an EVM revert (anvil: code 3 with data; Besu/geth: message)."""
    if not isinstance(error, dict):
        return False
    data = error.get("data")
    if isinstance(data, dict):
        data = data.get("data", data.get("result"))
    if isinstance(data, str) and data.startswith("0x"):
        return True
    return "revert" in str(error.get("message", "")).lower()


def checkpoint_count_calldata(hospital: str) -> bytes:
    """Calldata of ``checkpointCount(hospital)``: selector, address left-padded to 32 bytes."""
    return CHECKPOINT_COUNT + bytes(12) + bytes.fromhex(hospital[2:])


def checkpoint_at_calldata(hospital: str, index: int) -> bytes:
    """Calldata of ``checkpointAt(hospital, index)``."""
    return CHECKPOINT_AT + bytes(12) + bytes.fromhex(hospital[2:]) + index.to_bytes(_WORD, "big")


def archive_calldata(archive_id: str) -> bytes:
    """Calldata of ``archive(id)``: the ULID's 128-bit value as a big-endian ``bytes32``."""
    return ARCHIVE + archive_key(archive_id)


class NotaryReader:
    """``ChainReader`` for one trusted ``ArchiveNotary`` address over an ``HttpJsonRpc``."""

    def __init__(self, rpc: HttpJsonRpc | str, notary: str, *, timeout: float = 10.0) -> None:
        self.rpc = rpc if isinstance(rpc, HttpJsonRpc) else HttpJsonRpc(rpc, timeout=timeout)
        self.notary = normalize_address(notary)
        self._chain_id: int | None = None
        self._checkpoints: dict[tuple[str, int], OnChainCheckpoint] = {}

    # ChainReader --------------------------------------------------------------------------

    def chain_id(self) -> int:
        """``eth_chainId`` (cached: an endpoint's chain never changes)."""
        if self._chain_id is None:
            result = self.rpc.request("eth_chainId", [])
            if not isinstance(result, str) or not result.startswith("0x"):
                raise ChainError(f"chain RPC {self.rpc.url} answered eth_chainId with {result!r}")
            try:
                self._chain_id = int(result, 16)
            except ValueError:
                raise ChainError(
                    f"chain RPC {self.rpc.url} answered eth_chainId with {result!r}"
                ) from None
        return self._chain_id

    def notary_address(self) -> str:
        """The trusted notary address (EIP-55)."""
        return self.notary

    def checkpoint_count(self, hospital: str) -> int:
        """``checkpointCount(hospital)``."""
        (count,) = self._call("checkpointCount", checkpoint_count_calldata(hospital), 1)
        return self._uint(count, _UINT64_MAX, "checkpointCount")

    def checkpoint_at(self, hospital: str, index: int) -> OnChainCheckpoint:
        """``checkpointAt(hospital, index)`` (cached: anchored checkpoints never change)."""
        key = (hospital.lower(), index)
        cached = self._checkpoints.get(key)
        if cached is not None:
            return cached
        size, root, anchored_at = self._call(
            "checkpointAt", checkpoint_at_calldata(hospital, index), 3
        )
        checkpoint = OnChainCheckpoint(
            hospital=hospital,
            index=index,
            size=self._uint(size, _UINT64_MAX, "checkpointAt"),
            root=root,
            anchored_at=self._uint(anchored_at, _UINT64_MAX, "checkpointAt"),
        )
        self._checkpoints[key] = checkpoint
        return checkpoint

    def custody(self, archive_id: str) -> CustodyRecord:
        """``archive(id)``: the custody record (all zero for an archive never registered)."""
        words = self._call("archive", archive_calldata(archive_id), 9)
        custodian, state, on_hold, by_regulator, record_class = words[:5]
        deadline, commitment, recipient, certificate = words[5:]
        state_value = self._uint(state, max(CustodyState), "archive")
        return CustodyRecord(
            archive_id=archive_id,
            custodian=self._address(custodian, "archive"),
            state=CustodyState(state_value),
            on_hold=bool(self._uint(on_hold, 1, "archive")),
            hold_by_regulator=bool(self._uint(by_regulator, 1, "archive")),
            record_class=self._uint(record_class, 255, "archive"),
            retention_deadline=self._uint(deadline, _UINT64_MAX, "archive"),
            commitment=commitment,
            pending_recipient=self._address(recipient, "archive"),
            certificate_hash=certificate,
        )

    # ------------------------------------------------------------------------------------------

    def _call(self, function: str, data: bytes, words: int) -> list[bytes]:
        """``eth_call`` on the latest block; the return data as exactly ``words`` 32-byte words."""
        try:
            result = self.rpc.request(
                "eth_call", [{"to": self.notary, "data": "0x" + data.hex()}, "latest"]
            )
        except RpcRevert as exc:
            raise self._not_a_notary(function, f"the call reverted ({exc})") from None
        if not isinstance(result, str) or not result.startswith("0x"):
            raise ChainError(f"chain RPC {self.rpc.url} answered eth_call with {result!r}")
        try:
            output = bytes.fromhex(result[2:])
        except ValueError:
            raise ChainError(f"chain RPC {self.rpc.url} answered eth_call with bad hex") from None
        if len(output) != _WORD * words:
            if not output and not self._has_code():
                raise NotANotaryError(
                    f"the trusted notary address {self.notary} holds no contract code on chain "
                    f"{self.chain_id()}: it is not an ArchiveNotary"
                )
            raise self._not_a_notary(
                function, f"{len(output)} bytes returned, expected {_WORD * words}"
            )
        return [output[i : i + _WORD] for i in range(0, len(output), _WORD)]

    def _uint(self, word: bytes, maximum: int, function: str) -> int:
        value = int.from_bytes(word, "big")
        if value > maximum:
            raise self._not_a_notary(function, f"word {word.hex()} is above {maximum}")
        return value

    def _address(self, word: bytes, function: str) -> str:
        if any(word[:12]):
            raise self._not_a_notary(function, f"address word {word.hex()} is not 20 bytes")
        return to_checksum_address("0x" + word[12:].hex())

    def _has_code(self) -> bool:
        code = self.rpc.request("eth_getCode", [self.notary, "latest"])
        return isinstance(code, str) and code not in ("0x", "0x0", "")

    def _not_a_notary(self, function: str, why: str) -> NotANotaryError:
        return NotANotaryError(
            f"the trusted notary address {self.notary} does not answer {function} like an "
            f"ArchiveNotary: {why}"
        )


def _selector(signature: str) -> bytes:
    return keccak256(signature.encode())[:4]


IS_ACTIVE = _selector("isActive(address,uint8)")
REGISTRY = _selector("registry()")
NOTARY = _selector("notary()")
REVOKED_AT = _selector("revokedAt(address,bytes32)")


class AttestationReader(NotaryReader):
    """The chain facts ``anchoring.attestation.verify_attestation`` reads: the notary's registry,
    a member's status at a past block, the revocation list (docs/attestations.md §4)."""

    def latest_block(self) -> int:
        """``eth_blockNumber``."""
        result = self.rpc.request("eth_blockNumber", [])
        if not isinstance(result, str) or not result.startswith("0x"):
            raise ChainError(f"chain RPC {self.rpc.url} answered eth_blockNumber with {result!r}")
        return int(result, 16)

    def registry_address(self) -> str:
        """The registry the trusted notary uses (``registry()``)."""
        (word,) = self._call("registry", REGISTRY, 1)
        return self._address(word, "registry")

    def is_active_at(self, account: str, role: int, block: int) -> bool:
        """``isActive(account, role)`` on the registry, in the state after block ``block``."""
        data = IS_ACTIVE + bytes(12) + bytes.fromhex(account[2:]) + role.to_bytes(_WORD, "big")
        registry = self.registry_address()
        output = self._raw_call(registry, data, hex(block))
        if not output and self._no_code_at(registry, block):
            return False  # the registry did not exist yet at that block: nobody was a member
        if len(output) != _WORD or int.from_bytes(output, "big") > 1:
            raise ChainError(f"the registry answered isActive with {output.hex()!r}")
        return bool(output[-1])

    def revocations_notary(self, revocations: str) -> str:
        """``notary()`` of the contract at ``revocations`` (a zero address when it answers
        nothing like an AttestationRevocations)."""
        try:
            output = self._raw_call(revocations, NOTARY, "latest")
        except RpcRevert:
            return "0x" + "00" * 20
        if len(output) != _WORD or any(output[:12]):
            return "0x" + "00" * 20
        return to_checksum_address("0x" + output[12:].hex())

    def revoked_at(self, revocations: str, issuer: str, attestation_id: bytes) -> int:
        """``revokedAt(issuer, id)``: 0 when not revoked."""
        data = REVOKED_AT + bytes(12) + bytes.fromhex(issuer[2:]) + attestation_id
        output = self._raw_call(revocations, data, "latest")
        if len(output) != _WORD:
            raise ChainError(f"the revocation list answered revokedAt with {output.hex()!r}")
        return int.from_bytes(output, "big")

    def _no_code_at(self, address: str, block: int) -> bool:
        """Whether ``address`` held no contract code in the state after ``block``."""
        code = self.rpc.request("eth_getCode", [address, hex(block)])
        if not isinstance(code, str) or not code.startswith("0x"):
            raise ChainError(f"chain RPC {self.rpc.url} answered eth_getCode with {code!r}")
        return code in ("0x", "0x0")

    def _raw_call(self, to: str, data: bytes, block: str) -> bytes:
        result = self.rpc.request("eth_call", [{"to": to, "data": "0x" + data.hex()}, block])
        if not isinstance(result, str) or not result.startswith("0x"):
            raise ChainError(f"chain RPC {self.rpc.url} answered eth_call with {result!r}")
        try:
            return bytes.fromhex(result[2:])
        except ValueError:
            raise ChainError(f"chain RPC {self.rpc.url} answered eth_call with bad hex") from None

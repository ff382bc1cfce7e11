"""The node's encrypted keystore: one versioned JSON file holding every long-lived node secret.

Secrets held: the hospital's Ethereum private key (signs transactions and node-to-node requests,
used through eth-account), the ECIES encryption private key (data keys shared or transferred to this
hospital are wrapped to its public key), the pseudonym secret (keyed patient pseudonyms) and the
key-encryption keys (KEKs) with one current id. Rotation adds a KEK and makes it current; older KEKs
stay until the node has re-wrapped every data key, then ``retire_kek`` removes them.

File layout (``archivechain.keystore/v1``)::

    {"format": "archivechain.keystore/v1",
     "address": "<EIP-55 address>", "encryption_public_key": "<66 hex, compressed secp256k1>",
     "kdf": {"name": "scrypt", "n": 131072, "r": 8, "p": 1, "salt": "<64 hex>"},
     "cipher": "aes-256-gcm",
     "ciphertext": "<base64 of node.crypto.seal(scrypt key, secrets JSON, header)>"}

The public fields are readable without the passphrase (``read_public_info``) and are
authenticated: the sealed secrets' associated data is the canonical JSON of every field except
``ciphertext``. The passphrase key comes from scrypt with N=2^17, r=8, p=1 by default (128 MiB,
about half a second here; OWASP's recommended minimum); tests pass a lower ``scrypt_n`` explicitly.
Saving is atomic (temp file in the same directory, fsync, rename, directory fsync) with mode 0600.
One process owns a keystore file at a time.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import secrets
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from eth_account import Account
from eth_account.signers.local import LocalAccount

from node import crypto
from node.errors import InputError, NodeError

__all__ = [
    "DEFAULT_SCRYPT_N",
    "DEV_PASSPHRASE",
    "KEYSTORE_FORMAT",
    "MIN_PASSPHRASE_LENGTH",
    "MIN_SECURE_SCRYPT_N",
    "KekInUseError",
    "KekInfo",
    "Keystore",
    "KeystoreError",
    "KeystoreExistsError",
    "KeystoreFormatError",
    "KeystoreNotFoundError",
    "KeystorePublicInfo",
    "UnknownKekError",
    "WrongPassphraseError",
    "is_insecure_passphrase",
]

KEYSTORE_FORMAT: Final = "archivechain.keystore/v1"
DEV_PASSPHRASE: Final = "archivechain-dev-passphrase"  # noqa: S105 - the public dev default
"""The documented development passphrase. Dev mode may use it; any other mode must refuse it."""
MIN_PASSPHRASE_LENGTH: Final = 12
DEFAULT_SCRYPT_N: Final = 1 << 17
SCRYPT_R: Final = 8
SCRYPT_P: Final = 1
MIN_SECURE_SCRYPT_N: Final = 1 << 15
"""Below this cost ``Keystore.uses_weak_kdf`` is true (allowed in tests and dev mode only)."""
_MIN_SCRYPT_N: Final = 1 << 4
_MAX_SCRYPT_N: Final = 1 << 20
_SALT_SIZE: Final = 32
_CIPHER: Final = "aes-256-gcm"
_KDF: Final = "scrypt"
_MAX_FILE_BYTES: Final = 1 << 20
_T = TypeVar("_T")


class KeystoreError(NodeError):
    """Root of keystore errors."""

    code = "keystore_error"


class KeystoreNotFoundError(KeystoreError, FileNotFoundError):
    """No keystore file at the given path."""

    code = "keystore_not_found"


class KeystoreExistsError(KeystoreError, FileExistsError):
    """``create`` refuses to overwrite an existing keystore (that would destroy its keys)."""

    code = "keystore_exists"


class KeystoreFormatError(KeystoreError, ValueError):
    """The file is not a well-formed keystore of a supported version."""

    code = "keystore_malformed"


class WrongPassphraseError(KeystoreError, PermissionError):
    """The passphrase does not open the keystore (or the file was altered). Nothing more is said."""

    code = "keystore_wrong_passphrase"


class UnknownKekError(KeystoreError, LookupError):
    """No KEK with that id in the keystore (never created, or already retired)."""

    code = "kek_unknown"


class KekInUseError(KeystoreError, RuntimeError):
    """The current KEK cannot be retired; rotate first."""

    code = "kek_in_use"


def is_insecure_passphrase(passphrase: str) -> bool:
    """True for passphrases production must refuse: empty, short, trivial or the dev default."""
    stripped = passphrase.strip()
    return (
        len(stripped) < MIN_PASSPHRASE_LENGTH
        or stripped.lower() == DEV_PASSPHRASE
        or len(set(stripped)) < 4
    )


@dataclass(frozen=True, slots=True)
class KekInfo:
    """Public facts about one KEK (never the key itself)."""

    kek_id: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class KeystorePublicInfo:
    """The fields readable without the passphrase."""

    address: str
    encryption_public_key: bytes


@dataclass(frozen=True, slots=True)
class _KdfParams:
    n: int
    r: int
    p: int
    salt: bytes

    def to_json(self) -> dict[str, Any]:
        return {"name": _KDF, "n": self.n, "r": self.r, "p": self.p, "salt": self.salt.hex()}


@dataclass(frozen=True, slots=True, repr=False)
class _Kek:
    kek_id: str
    key: bytes
    created_at: datetime


class Keystore:
    """An opened keystore. Build with ``create`` or ``load``; ``repr`` never shows a secret."""

    def __init__(
        self,
        *,
        path: Path,
        passphrase_key: bytes,
        kdf: _KdfParams,
        eth_private_key: bytes,
        encryption_private_key: bytes,
        pseudonym_secret: bytes,
        keks: list[_Kek],
        current_kek_id: str,
    ) -> None:
        self._path = path
        self._passphrase_key = passphrase_key
        self._kdf = kdf
        self._eth_private_key = eth_private_key
        self._encryption_private_key = crypto.encryption_private_key_from_bytes(
            encryption_private_key
        )
        self._pseudonym_secret = pseudonym_secret
        self._keks = keks
        self._current_kek_id = current_kek_id
        self._account: LocalAccount = Account.from_key(eth_private_key)

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(
        cls,
        path: Path | str,
        passphrase: str,
        *,
        scrypt_n: int = DEFAULT_SCRYPT_N,
        eth_private_key: bytes | None = None,
        now: datetime | None = None,
    ) -> Keystore:
        """Generate every secret (or import ``eth_private_key``), write the file, return it open.

        Refuses an existing file (``KeystoreExistsError``) and an empty passphrase. Whether the
        passphrase is good enough for production is the caller's call (``is_insecure_passphrase``).
        """
        target = Path(path)
        if target.exists():
            raise KeystoreExistsError(f"a keystore already exists at {target}")
        if not passphrase:
            raise InputError("the keystore passphrase must not be empty")
        _check_scrypt_n(scrypt_n)
        if eth_private_key is not None:
            _check_eth_key(eth_private_key)
        kdf = _KdfParams(n=scrypt_n, r=SCRYPT_R, p=SCRYPT_P, salt=crypto.random_bytes(_SALT_SIZE))
        first_kek = _Kek(_new_kek_id(), crypto.generate_kek(), _utc(now))
        encryption_key, _public = crypto.generate_encryption_key()
        keystore = cls(
            path=target,
            passphrase_key=_derive(passphrase, kdf),
            kdf=kdf,
            eth_private_key=eth_private_key or crypto.generate_ethereum_private_key(),
            encryption_private_key=crypto.encryption_private_key_to_bytes(encryption_key),
            pseudonym_secret=crypto.generate_pseudonym_secret(),
            keks=[first_kek],
            current_kek_id=first_kek.kek_id,
        )
        target.parent.mkdir(parents=True, exist_ok=True)
        keystore.save()
        return keystore

    @classmethod
    def load(cls, path: Path | str, passphrase: str) -> Keystore:
        """Open a keystore; ``WrongPassphraseError`` if the passphrase (or file integrity) fails."""
        target = Path(path)
        document = _read_document(target)
        kdf = _parse_kdf(document.get("kdf"))
        try:
            sealed = base64.b64decode(_field(document, "ciphertext", str), validate=True)
        except binascii.Error:
            raise KeystoreFormatError("keystore ciphertext is not base64") from None
        passphrase_key = _derive(passphrase, kdf)
        try:
            plaintext = crypto.open_sealed(passphrase_key, sealed, _header_aad(document))
        except crypto.CryptoError:
            raise WrongPassphraseError(
                "wrong keystore passphrase (or the keystore file was altered)"
            ) from None
        keystore = cls._from_secrets(target, passphrase_key, kdf, plaintext)
        if keystore.public_info() != _parse_public(document):
            raise KeystoreFormatError("keystore public fields do not match its secrets")
        return keystore

    @classmethod
    def _from_secrets(
        cls, path: Path, passphrase_key: bytes, kdf: _KdfParams, plaintext: bytes
    ) -> Keystore:
        try:
            secrets_doc = json.loads(plaintext)
            keks = [
                _Kek(
                    kek_id=str(item["kek_id"]),
                    key=bytes.fromhex(item["key"]),
                    created_at=datetime.fromisoformat(item["created_at"]),
                )
                for item in secrets_doc["keks"]
            ]
            keystore = cls(
                path=path,
                passphrase_key=passphrase_key,
                kdf=kdf,
                eth_private_key=bytes.fromhex(secrets_doc["eth_private_key"]),
                encryption_private_key=bytes.fromhex(secrets_doc["encryption_private_key"]),
                pseudonym_secret=bytes.fromhex(secrets_doc["pseudonym_secret"]),
                keks=keks,
                current_kek_id=str(secrets_doc["current_kek_id"]),
            )
        except (KeyError, TypeError, ValueError):
            raise KeystoreFormatError("keystore secrets are malformed") from None
        if keystore._current_kek_id not in {kek.kek_id for kek in keks}:
            raise KeystoreFormatError("keystore current KEK is missing")
        return keystore

    @staticmethod
    def read_public_info(path: Path | str) -> KeystorePublicInfo:
        """The address and encryption public key, readable without the passphrase."""
        return _parse_public(_read_document(Path(path)))

    # ------------------------------------------------------------------ persistence

    def save(self) -> None:
        """Write the keystore atomically (temp file, fsync, rename, dir fsync), mode 0600."""
        header: dict[str, Any] = {
            "format": KEYSTORE_FORMAT,
            "address": self.address,
            "encryption_public_key": self.encryption_public_key.hex(),
            "kdf": self._kdf.to_json(),
            "cipher": _CIPHER,
        }
        sealed = crypto.seal(self._passphrase_key, self._secrets_json(), _header_aad(header))
        document = {**header, "ciphertext": base64.b64encode(sealed).decode("ascii")}
        _atomic_write(self._path, (json.dumps(document, indent=2) + "\n").encode("utf-8"))

    def _secrets_json(self) -> bytes:
        return json.dumps(
            {
                "eth_private_key": self._eth_private_key.hex(),
                "encryption_private_key": crypto.encryption_private_key_to_bytes(
                    self._encryption_private_key
                ).hex(),
                "pseudonym_secret": self._pseudonym_secret.hex(),
                "keks": [
                    {
                        "kek_id": kek.kek_id,
                        "key": kek.key.hex(),
                        "created_at": _rfc3339(kek.created_at),
                    }
                    for kek in self._keks
                ],
                "current_kek_id": self._current_kek_id,
            },
            sort_keys=True,
        ).encode("utf-8")

    def change_passphrase(self, new_passphrase: str, *, scrypt_n: int = DEFAULT_SCRYPT_N) -> None:
        """Re-encrypt under a new passphrase (fresh salt) and save."""
        if not new_passphrase:
            raise InputError("the keystore passphrase must not be empty")
        _check_scrypt_n(scrypt_n)
        kdf = _KdfParams(n=scrypt_n, r=SCRYPT_R, p=SCRYPT_P, salt=crypto.random_bytes(_SALT_SIZE))
        with self._rollback_on_failure():
            self._passphrase_key, self._kdf = _derive(new_passphrase, kdf), kdf
            self.save()

    @contextlib.contextmanager
    def _rollback_on_failure(self) -> Iterator[None]:
        """Restore the in-memory state if saving fails, so memory never runs ahead of the file."""
        snapshot = (self._passphrase_key, self._kdf, list(self._keks), self._current_kek_id)
        try:
            yield
        except BaseException:
            self._passphrase_key, self._kdf, self._keks, self._current_kek_id = snapshot
            raise

    # ------------------------------------------------------------------ KEKs

    def rotate_kek(self, *, now: datetime | None = None) -> str:
        """Add a new KEK, make it current and save; returns its id. Old KEKs stay until retired.

        If saving fails nothing changes, in memory or on disk.
        """
        kek = _Kek(_new_kek_id(), crypto.generate_kek(), _utc(now))
        with self._rollback_on_failure():
            self._keks = [*self._keks, kek]
            self._current_kek_id = kek.kek_id
            self.save()
        return kek.kek_id

    def retire_kek(self, kek_id: str) -> None:
        """Remove a non-current KEK and save. Call only after every data key is re-wrapped."""
        if kek_id == self._current_kek_id:
            raise KekInUseError("the current KEK cannot be retired; rotate first")
        remaining = [kek for kek in self._keks if kek.kek_id != kek_id]
        if len(remaining) == len(self._keks):
            raise UnknownKekError(f"no KEK with id {kek_id!r}")
        with self._rollback_on_failure():
            self._keks = remaining
            self.save()

    @property
    def current_kek_id(self) -> str:
        """Id of the KEK new data keys are wrapped under."""
        return self._current_kek_id

    def current_kek(self) -> tuple[str, bytes]:
        """(id, key) of the current KEK."""
        return self._current_kek_id, self.kek(self._current_kek_id)

    def kek(self, kek_id: str) -> bytes:
        """The key of KEK ``kek_id``; ``UnknownKekError`` if retired or never created."""
        for kek in self._keks:
            if kek.kek_id == kek_id:
                return kek.key
        raise UnknownKekError(f"no KEK with id {kek_id!r}")

    @property
    def keks(self) -> list[KekInfo]:
        """Every KEK still held, oldest first (ids and creation times only)."""
        return [KekInfo(kek.kek_id, kek.created_at) for kek in self._keks]

    # ------------------------------------------------------------------ identity and secrets

    @property
    def path(self) -> Path:
        """Where the keystore file lives."""
        return self._path

    @property
    def address(self) -> str:
        """The hospital's EIP-55 Ethereum address."""
        return str(self._account.address)

    def account(self) -> LocalAccount:
        """The eth-account signer for the hospital's Ethereum key."""
        return self._account

    @property
    def eth_private_key(self) -> bytes:
        """Raw 32-byte Ethereum private key (prefer ``account()`` for signing)."""
        return self._eth_private_key

    @property
    def encryption_private_key(self) -> crypto.EncryptionPrivateKey:
        """The ECIES private key (for ``crypto.ecies_decrypt``)."""
        return self._encryption_private_key

    @property
    def encryption_public_key(self) -> bytes:
        """33-byte compressed secp256k1 public key registered on chain."""
        return crypto.encryption_public_key(self._encryption_private_key)

    @property
    def pseudonym_secret(self) -> bytes:
        """The HMAC secret for ``crypto.pseudonym``."""
        return self._pseudonym_secret

    @property
    def scrypt_n(self) -> int:
        """scrypt cost parameter of the file as it is stored."""
        return self._kdf.n

    @property
    def uses_weak_kdf(self) -> bool:
        """True when the scrypt cost is below ``MIN_SECURE_SCRYPT_N`` (refuse outside dev mode)."""
        return self._kdf.n < MIN_SECURE_SCRYPT_N

    def public_info(self) -> KeystorePublicInfo:
        """Address and encryption public key."""
        return KeystorePublicInfo(self.address, self.encryption_public_key)

    def __repr__(self) -> str:
        return (
            f"Keystore(path={str(self._path)!r}, address={self.address!r}, "
            f"current_kek_id={self._current_kek_id!r}, keks={len(self._keks)})"
        )

    __str__ = __repr__


# ---------------------------------------------------------------------- helpers


def _derive(passphrase: str, kdf: _KdfParams) -> bytes:
    return crypto.derive_passphrase_key(passphrase, kdf.salt, n=kdf.n, r=kdf.r, p=kdf.p)


def _check_scrypt_n(n: int) -> None:
    if not _MIN_SCRYPT_N <= n <= _MAX_SCRYPT_N or n & (n - 1):
        raise InputError(
            f"scrypt_n must be a power of two between {_MIN_SCRYPT_N} and {_MAX_SCRYPT_N}"
        )


def _check_eth_key(raw: bytes) -> None:
    try:
        crypto.encryption_private_key_from_bytes(raw)
    except crypto.CryptoError:
        raise InputError("eth_private_key is not a valid 32-byte secp256k1 private key") from None


def _new_kek_id() -> str:
    return f"kek-{secrets.token_hex(6)}"


def _utc(now: datetime | None) -> datetime:
    moment = now or datetime.now(UTC)
    if moment.tzinfo is None:
        raise InputError("times must be timezone-aware")
    return moment.astimezone(UTC)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _header_aad(document: Mapping[str, Any]) -> bytes:
    header = {key: value for key, value in document.items() if key != "ciphertext"}
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _read_document(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            raw = handle.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise KeystoreNotFoundError(f"no keystore at {path}") from None
    if len(raw) > _MAX_FILE_BYTES:
        raise KeystoreFormatError("keystore file is too large")
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise KeystoreFormatError("keystore file is not JSON") from None
    if not isinstance(document, dict):
        raise KeystoreFormatError("keystore file is not a JSON object")
    if document.get("format") != KEYSTORE_FORMAT:
        raise KeystoreFormatError(f"unsupported keystore format (expected {KEYSTORE_FORMAT})")
    if document.get("cipher") != _CIPHER:
        raise KeystoreFormatError(f"unsupported keystore cipher (expected {_CIPHER})")
    return document


def _field(document: Mapping[str, Any], name: str, kind: type[_T]) -> _T:
    value = document.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise KeystoreFormatError(f"keystore field {name!r} is missing or malformed")
    return value


def _parse_kdf(raw: object) -> _KdfParams:
    if not isinstance(raw, dict) or raw.get("name") != _KDF:
        raise KeystoreFormatError(f"unsupported keystore KDF (expected {_KDF})")
    n, r, p = _field(raw, "n", int), _field(raw, "r", int), _field(raw, "p", int)
    try:
        salt = bytes.fromhex(_field(raw, "salt", str))
    except ValueError:
        raise KeystoreFormatError("keystore KDF salt is not hex") from None
    if (
        not _MIN_SCRYPT_N <= n <= _MAX_SCRYPT_N
        or n & (n - 1)
        or not 1 <= r <= 32
        or not 1 <= p <= 16
        or not 16 <= len(salt) <= 64
    ):
        raise KeystoreFormatError("keystore KDF parameters are out of bounds")
    return _KdfParams(n=n, r=r, p=p, salt=salt)


def _parse_public(document: Mapping[str, Any]) -> KeystorePublicInfo:
    try:
        public_key = bytes.fromhex(_field(document, "encryption_public_key", str))
    except ValueError:
        raise KeystoreFormatError("keystore encryption public key is not hex") from None
    return KeystorePublicInfo(_field(document, "address", str), public_key)


def _atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new file."""
    descriptor, temp_name = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=".tmp", dir=path.parent
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o600)
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)

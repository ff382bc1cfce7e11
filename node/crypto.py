"""All low-level cryptography of the node, in one place (pyca/cryptography underneath).

Everything else in the node calls these small, misuse-resistant functions; nothing else imports a
cryptographic primitive. Every failure to decrypt, authenticate or parse secret material raises the
one opaque ``CryptoError`` with a fixed message: it never says *why* and never carries key bytes.

Formats (all integers big-endian; every version byte is authenticated):

* ``seal``: ``0x01 ‖ nonce(12) ‖ AES-256-GCM(ciphertext ‖ tag(16))``, GCM associated data
  ``0x01 ‖ aad``.
* Streams (``encrypt_stream``), the STREAM construction of Hoang, Reyhanitabar, Rogaway and Vizár
  as used by Tink's AES-GCM-HKDF streaming AEAD and by age::

      header = 0x01 ‖ chunk_size u32 ‖ salt(32) ‖ nonce_prefix(7)              (44 bytes)
      subkey = HKDF-SHA256(ikm=key, salt=salt,
                           info="archivechain/stream/v1" ‖ header ‖ SHA-256(aad))
      chunk i = AES-256-GCM(subkey, nonce = nonce_prefix ‖ i u32 ‖ last(0x00|0x01), plaintext_i)

  Every chunk but the last carries exactly ``chunk_size`` plaintext bytes; the last carries
  0..chunk_size bytes and the last flag. The header and aad are bound through the subkey, order
  through the counter, the end through the flag: a flipped bit, a dropped, duplicated, reordered or
  appended chunk and a truncation at any point all fail authentication.
* ``KeyMaterial.to_bytes``: ``0x01 ‖ data_key(32) ‖ commitment_salt(32)``.
* ECIES: ``0x01 ‖ ephemeral_pub(33, compressed) ‖ nonce(12) ‖ AES-256-GCM(...)`` with
  ``key = HKDF-SHA256(ECDH_x(eph, recipient), info="archivechain/ecies/v1" ‖ eph_pub ‖
  recipient_pub)`` and GCM associated data ``0x01 ‖ aad``.
* Associated data (``encode_aad``): a label and fields, each as ``u32 length ‖ bytes`` (text is
  UTF-8, integers are u64). Use ``archive_aad`` for content, ``kek_wrap_aad`` for key wrapping
  under a KEK and ``member_wrap_aad`` for key wrapping to a consortium member.
* Keyed pseudonyms (``pseudonym``): HMAC-SHA256 under the hospital's pseudonym secret; events
  only ever carry these 64-hex values for patients and staff.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from collections.abc import Iterable, Iterator
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from node.errors import InputError, NodeError

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "KEY_SIZE",
    "MAX_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "STREAM_HEADER_SIZE",
    "Commitment",
    "CryptoError",
    "EncryptionPrivateKey",
    "KeyMaterial",
    "archive_aad",
    "commit",
    "constant_time_equal",
    "decrypt_stream",
    "derive_passphrase_key",
    "ecies_decrypt",
    "ecies_encrypt",
    "ecies_unwrap_key_material",
    "ecies_wrap_key_material",
    "encode_aad",
    "encrypt_stream",
    "encrypted_size",
    "encryption_private_key_from_bytes",
    "encryption_private_key_to_bytes",
    "encryption_public_key",
    "generate_api_key",
    "generate_data_key",
    "generate_encryption_key",
    "generate_ethereum_private_key",
    "generate_kek",
    "generate_pseudonym_secret",
    "hash_api_key",
    "kek_wrap_aad",
    "member_wrap_aad",
    "new_key_material",
    "new_salt",
    "open_sealed",
    "pseudonym",
    "random_bytes",
    "rewrap",
    "seal",
    "unwrap_key_material",
    "verify_api_key",
    "wrap_key_material",
]

KEY_SIZE: Final = 32
"""Bytes of every symmetric key (AES-256, HMAC-SHA256 secrets)."""
SALT_SIZE: Final = 32
"""Bytes of a content-commitment salt."""
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16

_SEAL_VERSION: Final = 0x01
_SEAL_OVERHEAD: Final = 1 + NONCE_SIZE + TAG_SIZE

DEFAULT_CHUNK_SIZE: Final = 1 << 20
"""Plaintext bytes per stream chunk (1 MiB): memory use of a stream is about this much."""
MIN_CHUNK_SIZE: Final = 16
MAX_CHUNK_SIZE: Final = 16 << 20
"""Upper bound accepted from a stream header, so a forged header cannot make us buffer more."""
_STREAM_VERSION: Final = 0x01
_STREAM_SALT_SIZE: Final = 32
_STREAM_PREFIX_SIZE: Final = 7
STREAM_HEADER_SIZE: Final = 1 + 4 + _STREAM_SALT_SIZE + _STREAM_PREFIX_SIZE
_STREAM_MAX_CHUNKS: Final = 1 << 32
_STREAM_INFO: Final = b"archivechain/stream/v1"

_MATERIAL_VERSION: Final = 0x01
_MATERIAL_SIZE: Final = 1 + KEY_SIZE + SALT_SIZE

_ECIES_VERSION: Final = 0x01
_ECIES_INFO: Final = b"archivechain/ecies/v1"
_COMPRESSED_POINT_SIZE: Final = 33
_ECIES_HEADER_SIZE: Final = 1 + _COMPRESSED_POINT_SIZE + NONCE_SIZE

API_KEY_PREFIX: Final = "ack_"
"""Prefix of generated API keys, so a leaked key is recognisable by secret scanners."""

EncryptionPrivateKey = ec.EllipticCurvePrivateKey
"""A member's secp256k1 encryption private key (opaque object; its repr shows no key bytes)."""


class CryptoError(NodeError, ValueError):
    """Decryption, authentication or key parsing failed. Deliberately says nothing more."""

    code = "crypto_error"
    MESSAGE: Final = "cryptographic operation failed"

    def __init__(self) -> None:
        super().__init__(self.MESSAGE)


# --------------------------------------------------------------------------- random and compare


def random_bytes(size: int) -> bytes:
    """``size`` bytes from the operating system's CSPRNG."""
    return secrets.token_bytes(size)


def constant_time_equal(left: bytes | str, right: bytes | str) -> bool:
    """Compare two secrets (or digests of secrets) in time independent of where they differ."""
    left_bytes = left.encode("utf-8") if isinstance(left, str) else left
    right_bytes = right.encode("utf-8") if isinstance(right, str) else right
    return hmac.compare_digest(left_bytes, right_bytes)


def hmac_sha256_hex(key: bytes, message: bytes) -> str:
    """HMAC-SHA256 of ``message`` under ``key``, lowercase hex (signed webhook bodies)."""
    return hmac.new(key, message, "sha256").hexdigest()


def generate_data_key() -> bytes:
    """A fresh per-archive AES-256 data key."""
    return random_bytes(KEY_SIZE)


def generate_kek() -> bytes:
    """A fresh AES-256 key-encryption key (the node's KEK; kept in the keystore)."""
    return random_bytes(KEY_SIZE)


def generate_pseudonym_secret() -> bytes:
    """A fresh HMAC secret for keyed patient pseudonyms (kept in the keystore)."""
    return random_bytes(KEY_SIZE)


def new_salt() -> bytes:
    """A fresh random content-commitment salt."""
    return random_bytes(SALT_SIZE)


def _check_key(key: bytes) -> None:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
        raise CryptoError()


# --------------------------------------------------------------------------- associated data


def encode_aad(label: str, *fields: str | bytes | int) -> bytes:
    """Unambiguous associated data: ``label`` then each field as ``u32 length ‖ bytes``.

    Text is UTF-8, integers are unsigned 64-bit big-endian. Using a distinct label per purpose keeps
    a ciphertext made for one purpose from being accepted for another.
    """
    parts = [label.encode("utf-8"), *(_aad_field(field) for field in fields)]
    return b"".join(len(part).to_bytes(4, "big") + part for part in parts)


def _aad_field(field: str | bytes | int) -> bytes:
    if isinstance(field, bool):
        raise InputError("associated data fields are text, bytes or non-negative integers")
    if isinstance(field, int):
        if not 0 <= field < 1 << 64:
            raise InputError("associated data integers must fit in an unsigned 64-bit field")
        return field.to_bytes(8, "big")
    if isinstance(field, str):
        return field.encode("utf-8")
    return bytes(field)


def archive_aad(archive_id: str, version: int) -> bytes:
    """Associated data of an archive's content: binds the archive id (ULID) and version number."""
    return encode_aad("archivechain/content/v1", archive_id, version)


def kek_wrap_aad(archive_id: str, kek_id: str) -> bytes:
    """Associated data of key material wrapped under a KEK: binds the archive id and the KEK id."""
    return encode_aad("archivechain/kek-wrap/v1", archive_id, kek_id)


def member_wrap_aad(archive_id: str, recipient_address: str) -> bytes:
    """Associated data of key material wrapped (ECIES) to a member: binds archive and recipient.

    ``recipient_address`` must be the EIP-55 checksummed address (the caller normalises it).
    """
    return encode_aad("archivechain/member-wrap/v1", archive_id, recipient_address)


# --------------------------------------------------------------------------- one-shot AEAD


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """AES-256-GCM encrypt ``plaintext`` under ``key`` with a random nonce, binding ``aad``."""
    _check_key(key)
    nonce = random_bytes(NONCE_SIZE)
    header = bytes([_SEAL_VERSION])
    return header + nonce + AESGCM(bytes(key)).encrypt(nonce, plaintext, header + aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Decrypt a ``seal`` blob; raise ``CryptoError`` if the key, aad or any byte is wrong."""
    _check_key(key)
    if len(blob) < _SEAL_OVERHEAD or blob[0] != _SEAL_VERSION:
        raise CryptoError()
    header, nonce = blob[:1], blob[1 : 1 + NONCE_SIZE]
    try:
        return AESGCM(bytes(key)).decrypt(nonce, blob[1 + NONCE_SIZE :], header + aad)
    except InvalidTag:
        raise CryptoError() from None


# --------------------------------------------------------------------------- streaming AEAD


def encrypted_size(plaintext_size: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Exact ciphertext size ``encrypt_stream`` produces for ``plaintext_size`` bytes."""
    chunks = max(1, -(-plaintext_size // chunk_size))
    return STREAM_HEADER_SIZE + plaintext_size + chunks * TAG_SIZE


def encrypt_stream(
    key: bytes,
    chunks: Iterable[bytes],
    aad: bytes,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Iterator[bytes]:
    """Encrypt a plaintext stream (any chunking) into header + authenticated chunks, lazily.

    Memory is bounded by ``chunk_size`` plus the largest input piece, whatever the input's chunking.
    The first item yielded is the 44-byte header; each following item is one encrypted chunk.
    """
    _check_key(key)
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise InputError(f"chunk_size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}")
    salt = random_bytes(_STREAM_SALT_SIZE)
    prefix = random_bytes(_STREAM_PREFIX_SIZE)
    header = bytes([_STREAM_VERSION]) + chunk_size.to_bytes(4, "big") + salt + prefix
    aead = AESGCM(_stream_subkey(key, header, aad))
    return _encrypt_blocks(aead, header, prefix, chunks, chunk_size)


def _encrypt_blocks(
    aead: AESGCM, header: bytes, prefix: bytes, chunks: Iterable[bytes], chunk_size: int
) -> Iterator[bytes]:
    yield header
    for counter, (block, last) in enumerate(_blocks(chunks, chunk_size)):
        if counter >= _STREAM_MAX_CHUNKS:
            raise CryptoError()
        sealed = aead.encrypt(_stream_nonce(prefix, counter, last), block, None)
        del block  # let the plaintext buffer go before the next one is filled
        yield sealed
        del sealed


def decrypt_stream(key: bytes, chunks: Iterable[bytes], aad: bytes) -> Iterator[bytes]:
    """Decrypt and authenticate an ``encrypt_stream`` stream (any chunking), lazily.

    Yields plaintext chunk by chunk; raises ``CryptoError`` at the first chunk that fails, including
    a missing final chunk or data after it. A consumer must treat what it received as unverified
    until the iterator finishes without error (abort, e.g. an HTTP response, on error).
    """
    _check_key(key)
    return _decrypt_blocks(bytes(key), iter(chunks), aad)


def _decrypt_blocks(key: bytes, pieces: Iterator[bytes], aad: bytes) -> Iterator[bytes]:
    header = bytearray()
    leftover = b""
    for piece in pieces:
        need = STREAM_HEADER_SIZE - len(header)
        header += piece[:need]
        if len(header) == STREAM_HEADER_SIZE:
            leftover = bytes(piece[need:])
            break
    if len(header) != STREAM_HEADER_SIZE or header[0] != _STREAM_VERSION:
        raise CryptoError()
    chunk_size = int.from_bytes(header[1:5], "big")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise CryptoError()
    prefix = bytes(header[5 + _STREAM_SALT_SIZE :])
    aead = AESGCM(_stream_subkey(key, bytes(header), aad))
    rest = _prepend(leftover, pieces)
    for counter, (block, last) in enumerate(_blocks(rest, chunk_size + TAG_SIZE)):
        if counter >= _STREAM_MAX_CHUNKS or len(block) < TAG_SIZE:
            raise CryptoError()
        try:
            opened = aead.decrypt(_stream_nonce(prefix, counter, last), block, None)
        except InvalidTag:
            raise CryptoError() from None
        del block  # let the ciphertext buffer go before the next one is filled
        yield opened
        del opened


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _stream_subkey(key: bytes, header: bytes, aad: bytes) -> bytes:
    info = _STREAM_INFO + header + hashlib.sha256(aad).digest()
    salt = header[5 : 5 + _STREAM_SALT_SIZE]
    return HKDF(algorithm=hashes.SHA256(), length=KEY_SIZE, salt=salt, info=info).derive(bytes(key))


def _stream_nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + counter.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


def _blocks(pieces: Iterable[bytes], size: int) -> Iterator[tuple[bytearray, bool]]:
    """Re-cut ``pieces`` into blocks of exactly ``size`` bytes, flagging the last one.

    A full block is released only once a later byte proves it is not the last, so at most one block
    is buffered. The last block holds 0..size bytes (0 only when the whole input is empty).
    """
    pending = bytearray()
    for piece in pieces:
        with memoryview(piece) as view:
            position, length = 0, len(view)
            while position < length:
                if len(pending) == size:
                    yield pending, False
                    pending = bytearray()
                take = min(size - len(pending), length - position)
                pending += view[position : position + take]
                position += take
    yield pending, True


# --------------------------------------------------------------------------- key material


class KeyMaterial:
    """An archive's secrets: its AES-256 data key and its content-commitment salt.

    Travels only wrapped (under the node KEK or to a member by ECIES). ``repr`` shows nothing.
    """

    __slots__ = ("data_key", "salt")

    def __init__(self, data_key: bytes, salt: bytes) -> None:
        if len(data_key) != KEY_SIZE or len(salt) != SALT_SIZE:
            raise CryptoError()
        self.data_key: Final = bytes(data_key)
        self.salt: Final = bytes(salt)

    def to_bytes(self) -> bytes:
        """Serialized form (only ever fed to a wrapping function)."""
        return bytes([_MATERIAL_VERSION]) + self.data_key + self.salt

    @classmethod
    def from_bytes(cls, raw: bytes) -> KeyMaterial:
        """Parse ``to_bytes`` output; ``CryptoError`` if malformed."""
        if len(raw) != _MATERIAL_SIZE or raw[0] != _MATERIAL_VERSION:
            raise CryptoError()
        return cls(raw[1 : 1 + KEY_SIZE], raw[1 + KEY_SIZE :])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeyMaterial):
            return NotImplemented
        return constant_time_equal(self.to_bytes(), other.to_bytes())

    def __hash__(self) -> int:
        raise TypeError("KeyMaterial is not hashable")

    def __repr__(self) -> str:
        return "KeyMaterial(<redacted>)"

    __str__ = __repr__


def new_key_material() -> KeyMaterial:
    """Fresh key material for a new archive."""
    return KeyMaterial(generate_data_key(), new_salt())


def wrap_key_material(kek: bytes, material: KeyMaterial, aad: bytes) -> bytes:
    """Wrap ``material`` under the node's KEK (AES-256-GCM); pass ``kek_wrap_aad(...)`` as aad."""
    return seal(kek, material.to_bytes(), aad)


def unwrap_key_material(kek: bytes, blob: bytes, aad: bytes) -> KeyMaterial:
    """Unwrap ``wrap_key_material`` output; ``CryptoError`` on a wrong KEK, aad or altered byte."""
    return KeyMaterial.from_bytes(open_sealed(kek, blob, aad))


def rewrap(old_kek: bytes, new_kek: bytes, blob: bytes, old_aad: bytes, new_aad: bytes) -> bytes:
    """Re-wrap key material from ``old_kek`` to ``new_kek`` (KEK rotation); payloads untouched."""
    return wrap_key_material(new_kek, unwrap_key_material(old_kek, blob, old_aad), new_aad)


# --------------------------------------------------------------------------- commitments


class Commitment:
    """Incremental content commitment: SHA-256(salt ‖ plaintext), fed chunk by chunk."""

    __slots__ = ("_hash",)

    def __init__(self, salt: bytes) -> None:
        if len(salt) != SALT_SIZE:
            raise CryptoError()
        self._hash = hashlib.sha256(salt)

    def update(self, chunk: bytes) -> None:
        """Feed the next piece of plaintext."""
        self._hash.update(chunk)

    def digest(self) -> bytes:
        """The 32-byte commitment of everything fed so far."""
        return self._hash.digest()

    def hexdigest(self) -> str:
        """The commitment as 64 lowercase hex characters (the form used in events)."""
        return self._hash.hexdigest()

    def __repr__(self) -> str:
        return "Commitment(<salted>)"


def commit(salt: bytes, plaintext: bytes) -> str:
    """One-shot commitment (hex) of a whole plaintext."""
    commitment = Commitment(salt)
    commitment.update(plaintext)
    return commitment.hexdigest()


# --------------------------------------------------------------------------- ECIES (secp256k1)


def generate_encryption_key() -> tuple[EncryptionPrivateKey, bytes]:
    """A new secp256k1 encryption key pair: (private key, 33-byte compressed public key)."""
    private = ec.generate_private_key(ec.SECP256K1())
    return private, encryption_public_key(private)


def encryption_public_key(private: EncryptionPrivateKey) -> bytes:
    """The 33-byte compressed public key of ``private`` (what the registry stores)."""
    return private.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )


def encryption_private_key_to_bytes(private: EncryptionPrivateKey) -> bytes:
    """Raw 32-byte big-endian scalar of ``private`` (for the keystore only)."""
    return private.private_numbers().private_value.to_bytes(KEY_SIZE, "big")


def encryption_private_key_from_bytes(raw: bytes) -> EncryptionPrivateKey:
    """Load a raw 32-byte secp256k1 scalar; ``CryptoError`` if it is not a valid private key."""
    if len(raw) != KEY_SIZE:
        raise CryptoError()
    try:
        return ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256K1())
    except ValueError:
        raise CryptoError() from None


def generate_ethereum_private_key() -> bytes:
    """A new raw 32-byte secp256k1 private key for the hospital's Ethereum account."""
    return encryption_private_key_to_bytes(ec.generate_private_key(ec.SECP256K1()))


def _load_public_key(public_compressed: bytes) -> ec.EllipticCurvePublicKey:
    if len(public_compressed) != _COMPRESSED_POINT_SIZE or public_compressed[0] not in (2, 3):
        raise CryptoError()
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), public_compressed)
    except ValueError:
        raise CryptoError() from None


def _ecies_key(
    private: EncryptionPrivateKey, peer: ec.EllipticCurvePublicKey, eph_pub: bytes, rcpt_pub: bytes
) -> bytes:
    shared = private.exchange(ec.ECDH(), peer)
    hkdf = HKDF(
        algorithm=hashes.SHA256(), length=KEY_SIZE, salt=None, info=_ECIES_INFO + eph_pub + rcpt_pub
    )
    return hkdf.derive(shared)


def ecies_encrypt(recipient_public: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt to a member's compressed secp256k1 public key (new ephemeral key per call)."""
    recipient = _load_public_key(recipient_public)
    ephemeral, eph_pub = generate_encryption_key()
    key = _ecies_key(ephemeral, recipient, eph_pub, recipient_public)
    nonce = random_bytes(NONCE_SIZE)
    version = bytes([_ECIES_VERSION])
    return version + eph_pub + nonce + AESGCM(key).encrypt(nonce, plaintext, version + aad)


def ecies_decrypt(private: EncryptionPrivateKey, blob: bytes, aad: bytes) -> bytes:
    """Decrypt ``ecies_encrypt`` output with the recipient's private key, else ``CryptoError``."""
    if len(blob) < _ECIES_HEADER_SIZE + TAG_SIZE or blob[0] != _ECIES_VERSION:
        raise CryptoError()
    eph_pub = blob[1 : 1 + _COMPRESSED_POINT_SIZE]
    nonce = blob[1 + _COMPRESSED_POINT_SIZE : _ECIES_HEADER_SIZE]
    ephemeral = _load_public_key(eph_pub)
    try:
        key = _ecies_key(private, ephemeral, eph_pub, encryption_public_key(private))
        return AESGCM(key).decrypt(nonce, blob[_ECIES_HEADER_SIZE:], blob[:1] + aad)
    except (InvalidTag, ValueError):
        raise CryptoError() from None


def ecies_wrap_key_material(recipient_public: bytes, material: KeyMaterial, aad: bytes) -> bytes:
    """Wrap key material to a member's public key; pass ``member_wrap_aad(...)`` as aad."""
    return ecies_encrypt(recipient_public, material.to_bytes(), aad)


def ecies_unwrap_key_material(
    private: EncryptionPrivateKey, blob: bytes, aad: bytes
) -> KeyMaterial:
    """Unwrap ``ecies_wrap_key_material`` output with the recipient's private key."""
    return KeyMaterial.from_bytes(ecies_decrypt(private, blob, aad))


# --------------------------------------------------------------------------- pseudonyms


PSEUDONYM_CONTEXT: Final = b"archivechain/pseudonym/v1"
MIN_PSEUDONYM_SECRET_BYTES: Final = 32
_PSEUDONYM_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def pseudonym(secret: bytes, namespace: str, identifier: str) -> str:
    """Keyed pseudonym of ``identifier`` in ``namespace`` (e.g. "patient", "staff"): 64 hex.

    HMAC-SHA256 under the hospital's pseudonym secret over ``context ‖ 0 ‖ namespace ‖ 0 ‖
    NFC(identifier)``. Stable for one (secret, namespace, identifier); unlinkable without the
    secret; namespaces never collide. This is the only form events accept for patients and staff.
    ``InputError`` for a short secret, an empty identifier or a malformed namespace.
    """
    if len(secret) < MIN_PSEUDONYM_SECRET_BYTES:
        raise InputError(f"pseudonym secret must be at least {MIN_PSEUDONYM_SECRET_BYTES} bytes")
    if not identifier:
        raise InputError("cannot compute a pseudonym of an empty identifier")
    if not _PSEUDONYM_NAMESPACE.fullmatch(namespace):
        raise InputError("pseudonym namespace must be a short code")
    message = b"\x00".join(
        (
            PSEUDONYM_CONTEXT,
            namespace.encode(),
            unicodedata.normalize("NFC", identifier).encode("utf-8"),
        )
    )
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


# --------------------------------------------------------------------------- passphrases, API keys


def derive_passphrase_key(passphrase: str, salt: bytes, *, n: int, r: int, p: int) -> bytes:
    """A 32-byte key from a passphrase with scrypt (the passphrase is NFKC-normalised, UTF-8)."""
    normalised = unicodedata.normalize("NFKC", passphrase).encode("utf-8")
    try:
        return Scrypt(salt=salt, length=KEY_SIZE, n=n, r=r, p=p).derive(normalised)
    except (ValueError, MemoryError):
        raise CryptoError() from None


def generate_api_key() -> str:
    """A new API key: ``"ack_"`` + 256 random bits, URL-safe base64 (shown once, stored hashed)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(KEY_SIZE)


def hash_api_key(api_key: str) -> str:
    """SHA-256 (hex) of an API key, the only form the database stores.

    A fast unsalted hash is right here: generated keys carry 256 random bits, so guessing is
    infeasible however fast the hash is (slow, salted hashes protect low-entropy *passwords*), and a
    deterministic digest lets the node find the key by an indexed lookup.
    """
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def verify_api_key(api_key: str, stored_hash: str) -> bool:
    """True when ``api_key`` hashes to ``stored_hash`` (constant-time comparison)."""
    return constant_time_equal(hash_api_key(api_key), stored_hash)

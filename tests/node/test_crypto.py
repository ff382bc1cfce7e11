"""node.crypto: AEAD seal/open, STREAM chunked AEAD, key wrapping and rotation, ECIES, commitments,
pseudonyms, API keys. Every refusal path is exercised with real ciphertext, not with stubs."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import coincurve
import pytest

from node import crypto
from node.crypto import CryptoError
from node.errors import InputError, NodeError

ARCHIVE = "01J9ZQ3V5N6M8K2H4G7F0D1C3B"
OTHER_ARCHIVE = "01J9ZQ3V5N6M8K2H4G7F0D1C3C"
AAD = crypto.archive_aad(ARCHIVE, 1)
SMALL_CHUNK = 32
HEADER = crypto.STREAM_HEADER_SIZE
SEGMENT = SMALL_CHUNK + 16


def _encrypt(key: bytes, data: bytes, *, chunk_size: int = SMALL_CHUNK, aad: bytes = AAD) -> bytes:
    return b"".join(crypto.encrypt_stream(key, [data], aad, chunk_size=chunk_size))


def _decrypt(key: bytes, blob: bytes, *, aad: bytes = AAD, piece: int | None = None) -> bytes:
    pieces = [blob] if piece is None else [blob[i : i + piece] for i in range(0, len(blob), piece)]
    return b"".join(crypto.decrypt_stream(key, pieces, aad))


def _segments(blob: bytes) -> tuple[bytes, list[bytes]]:
    """Split a SMALL_CHUNK stream into its header and its ciphertext chunks."""
    body = blob[HEADER:]
    return blob[:HEADER], [body[i : i + SEGMENT] for i in range(0, len(body), SEGMENT)]


def _flip(blob: bytes, index: int, bit: int = 0) -> bytes:
    changed = bytearray(blob)
    changed[index] ^= 1 << bit
    return bytes(changed)


@pytest.fixture
def key() -> bytes:
    return crypto.generate_data_key()


# ------------------------------------------------------------------------------------ seal / open


class TestSeal:
    def test_round_trip_and_fresh_nonce(self, key: bytes) -> None:
        first = crypto.seal(key, b"secret record", AAD)
        second = crypto.seal(key, b"secret record", AAD)
        assert first != second  # random nonce per call
        assert crypto.open_sealed(key, first, AAD) == b"secret record"
        assert crypto.open_sealed(key, second, AAD) == b"secret record"
        assert first[0] == 0x01
        assert len(first) == 1 + 12 + len(b"secret record") + 16

    def test_empty_plaintext(self, key: bytes) -> None:
        assert crypto.open_sealed(key, crypto.seal(key, b"", AAD), AAD) == b""

    def test_every_flipped_bit_is_refused(self, key: bytes) -> None:
        blob = crypto.seal(key, b"0123456789", AAD)
        for index in range(len(blob)):
            for bit in (0, 7):
                with pytest.raises(CryptoError):
                    crypto.open_sealed(key, _flip(blob, index, bit), AAD)

    def test_wrong_key_aad_truncation_and_extension_are_refused(self, key: bytes) -> None:
        blob = crypto.seal(key, b"payload", AAD)
        refusals = [
            (crypto.generate_data_key(), blob, AAD),
            (key, blob, crypto.archive_aad(ARCHIVE, 2)),
            (key, blob, crypto.archive_aad(OTHER_ARCHIVE, 1)),
            (key, blob[:-1], AAD),
            (key, blob + b"\x00", AAD),
            (key, blob[:10], AAD),
            (key, b"", AAD),
        ]
        for refused_key, refused_blob, refused_aad in refusals:
            with pytest.raises(CryptoError):
                crypto.open_sealed(refused_key, refused_blob, refused_aad)

    def test_bad_key_length_is_refused(self) -> None:
        with pytest.raises(CryptoError):
            crypto.seal(b"short", b"x", AAD)
        with pytest.raises(CryptoError):
            crypto.open_sealed(b"\x00" * 16, b"\x01" + b"\x00" * 40, AAD)


# ------------------------------------------------------------------------------------ streams


class TestStreamRoundTrip:
    @pytest.mark.parametrize(
        "size",
        [0, 1, SMALL_CHUNK - 1, SMALL_CHUNK, SMALL_CHUNK + 1, 3 * SMALL_CHUNK, 3 * SMALL_CHUNK + 7],
    )
    def test_sizes_and_rechunking(self, key: bytes, size: int) -> None:
        data = os.urandom(size)
        rng = random.Random(size)
        pieces: list[bytes] = []
        position = 0
        while position < size:
            step = rng.randint(1, 2 * SMALL_CHUNK + 5)
            pieces.append(data[position : position + step])
            position += step
        for chunking in ([data], [bytes([b]) for b in data], pieces, [b"", data, b""]):
            blob = b"".join(crypto.encrypt_stream(key, chunking, AAD, chunk_size=SMALL_CHUNK))
            assert len(blob) == crypto.encrypted_size(size, SMALL_CHUNK)
            assert _decrypt(key, blob) == data
            assert _decrypt(key, blob, piece=1) == data
            assert _decrypt(key, blob, piece=SEGMENT + 3) == data

    def test_output_is_header_then_one_item_per_chunk(self, key: bytes) -> None:
        items = list(crypto.encrypt_stream(key, [b"x" * 100], AAD, chunk_size=SMALL_CHUNK))
        assert [len(item) for item in items] == [HEADER, SEGMENT, SEGMENT, SEGMENT, 4 + 16]
        plain = list(crypto.decrypt_stream(key, items, AAD))
        assert [len(chunk) for chunk in plain] == [32, 32, 32, 4]

    def test_same_plaintext_encrypts_differently(self, key: bytes) -> None:
        assert _encrypt(key, b"same") != _encrypt(key, b"same")

    def test_default_chunk_size_is_one_mebibyte(self, key: bytes) -> None:
        data = os.urandom((1 << 20) + 5)
        items = list(crypto.encrypt_stream(key, [data], AAD))
        assert [len(item) for item in items] == [HEADER, (1 << 20) + 16, 5 + 16]
        assert b"".join(crypto.decrypt_stream(key, items, AAD)) == data

    def test_chunk_size_bounds(self, key: bytes) -> None:
        for bad in (0, crypto.MIN_CHUNK_SIZE - 1, crypto.MAX_CHUNK_SIZE + 1):
            with pytest.raises(InputError):
                crypto.encrypt_stream(key, [b"x"], AAD, chunk_size=bad)

    def test_bad_key_is_refused_before_iteration(self) -> None:
        with pytest.raises(CryptoError):
            crypto.encrypt_stream(b"k" * 31, [b"x"], AAD)
        with pytest.raises(CryptoError):
            crypto.decrypt_stream(b"k" * 33, [b"x"], AAD)


class TestStreamTampering:
    DATA = bytes(range(256))[: 3 * SMALL_CHUNK + 10]  # three full chunks and a short final one

    def test_every_flipped_bit_anywhere_is_detected(self, key: bytes) -> None:
        blob = _encrypt(key, self.DATA)
        assert len(blob) == HEADER + 3 * SEGMENT + 10 + 16
        for index in range(len(blob)):  # header, every chunk body and every tag
            with pytest.raises(CryptoError):
                _decrypt(key, _flip(blob, index, index % 8))

    def test_every_truncation_is_detected(self, key: bytes) -> None:
        blob = _encrypt(key, self.DATA)
        for cut in range(len(blob)):
            with pytest.raises(CryptoError):
                _decrypt(key, blob[:cut])

    def test_truncation_at_a_chunk_boundary_is_detected(self, key: bytes) -> None:
        # The missing final chunk is the subtle case: what remains is a valid prefix of chunks.
        data = b"z" * (4 * SMALL_CHUNK)
        header, chunks = _segments(_encrypt(key, data))
        assert len(chunks) == 4
        for keep in range(4):
            with pytest.raises(CryptoError):
                _decrypt(key, header + b"".join(chunks[:keep]))

    def test_reordering_duplication_and_dropping_are_detected(self, key: bytes) -> None:
        header, chunks = _segments(_encrypt(key, self.DATA))
        first, second, third, final = chunks
        tampered = [
            [second, first, third, final],  # swap
            [first, third, second, final],
            [first, second, third, third, final],  # duplicate a middle chunk
            [first, first, second, third, final],
            [first, third, final],  # drop a middle chunk
            [final, first, second, third],  # final chunk moved first
        ]
        for order in tampered:
            with pytest.raises(CryptoError):
                _decrypt(key, header + b"".join(order))

    def test_extension_after_the_final_chunk_is_detected(self, key: bytes) -> None:
        blob = _encrypt(key, self.DATA)
        _header, chunks = _segments(blob)
        for extra in (b"\x00", os.urandom(SEGMENT), chunks[-1], chunks[0]):
            with pytest.raises(CryptoError):
                _decrypt(key, blob + extra)

    def test_exact_multiple_cannot_be_extended_with_an_empty_final_chunk(self, key: bytes) -> None:
        data = b"q" * (2 * SMALL_CHUNK)
        blob = _encrypt(key, data)
        empty_final_from_other = _segments(_encrypt(key, b""))[1][0]
        with pytest.raises(CryptoError):
            _decrypt(key, blob + empty_final_from_other)

    def test_splicing_chunks_between_streams_is_detected(self, key: bytes) -> None:
        header_a, chunks_a = _segments(_encrypt(key, self.DATA))
        header_b, chunks_b = _segments(_encrypt(key, self.DATA))
        with pytest.raises(CryptoError):
            _decrypt(key, header_a + chunks_a[0] + chunks_b[1] + chunks_a[2] + chunks_a[3])
        with pytest.raises(CryptoError):
            _decrypt(key, header_b + b"".join(chunks_a))

    def test_wrong_key_and_wrong_associated_data_are_refused(self, key: bytes) -> None:
        blob = _encrypt(key, self.DATA)
        with pytest.raises(CryptoError):
            _decrypt(crypto.generate_data_key(), blob)
        for aad in (
            crypto.archive_aad(ARCHIVE, 2),
            crypto.archive_aad(OTHER_ARCHIVE, 1),
            b"",
            AAD + b"\x00",
        ):
            with pytest.raises(CryptoError):
                _decrypt(key, blob, aad=aad)

    def test_header_fields_are_authenticated(self, key: bytes) -> None:
        blob = _encrypt(key, self.DATA)
        for chunk_size in (SMALL_CHUNK + 16, SMALL_CHUNK * 2, 1 << 20, crypto.MAX_CHUNK_SIZE + 1):
            forged = blob[:1] + chunk_size.to_bytes(4, "big") + blob[5:]
            with pytest.raises(CryptoError):
                _decrypt(key, forged)
        with pytest.raises(CryptoError):
            _decrypt(key, b"\x02" + blob[1:])  # unknown version

    def test_plaintext_before_the_damaged_chunk_is_released_then_the_error(
        self, key: bytes
    ) -> None:
        blob = _encrypt(key, self.DATA)
        damaged = _flip(blob, HEADER + 2 * SEGMENT + 3)
        plaintext = crypto.decrypt_stream(key, [damaged], AAD)
        assert next(plaintext) + next(plaintext) == self.DATA[: 2 * SMALL_CHUNK]
        with pytest.raises(CryptoError):
            next(plaintext)


_RSS_PROBE = """
import os, re
from node import crypto

def status(field):
    text = open("/proc/self/status").read()
    return int(re.search(field + r":\\s+(\\d+) kB", text).group(1))

blocks = [os.urandom(1 << 20) for _ in range(4)]
key = crypto.generate_data_key()
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # reset the peak-RSS watermark (VmHWM) to the current RSS
before = status("VmRSS")
total = 0
pieces = (blocks[i % 4] for i in range(256))
for chunk in crypto.encrypt_stream(key, pieces, crypto.archive_aad("A", 1)):
    total += len(chunk)
print(before, status("VmHWM"), total)
"""


class TestStreamMemoryAndSpeed:
    TOTAL_MIB = 256
    CHUNK = crypto.DEFAULT_CHUNK_SIZE

    @staticmethod
    def _generated(total_mib: int, blocks: list[bytes]) -> Iterator[bytes]:
        """``total_mib`` MiB made of pre-built blocks, so the source itself allocates nothing."""
        count = total_mib * (1 << 20) // len(blocks[0])
        for index in range(count):
            yield blocks[index % len(blocks)]

    def test_256_mib_pipeline_memory_stays_near_the_chunk_size(self, key: bytes) -> None:
        blocks = [os.urandom(1 << 20) for _ in range(4)]
        expected = hashlib.sha256()
        for index in range(self.TOTAL_MIB):
            expected.update(blocks[index % 4])
        tracemalloc.start()
        try:
            ciphertext = crypto.encrypt_stream(key, self._generated(self.TOTAL_MIB, blocks), AAD)
            actual = hashlib.sha256()
            for chunk in crypto.decrypt_stream(key, ciphertext, AAD):
                actual.update(chunk)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert actual.digest() == expected.digest()
        # Each stage holds about its input block, its output block and the consumer's previous one.
        assert peak < 7 * self.CHUNK, f"peak {peak / self.CHUNK:.1f} MiB for a 256 MiB stream"

    def test_encrypt_memory_bounded_whatever_the_input_chunking(self, key: bytes) -> None:
        for piece_size in (1 << 20, 3 << 20, 4097, 100):
            blocks = [os.urandom(piece_size) for _ in range(3)]
            total_mib = 64 if piece_size >= 4097 else 2
            plaintext_size = total_mib * (1 << 20) // piece_size * piece_size
            tracemalloc.start()
            try:
                produced = 0
                for chunk in crypto.encrypt_stream(key, self._generated(total_mib, blocks), AAD):
                    produced += len(chunk)
                _current, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert produced == crypto.encrypted_size(plaintext_size)
            # pending block + sealed block + the one the consumer still holds (+ the input piece)
            assert peak < 4 * self.CHUNK + piece_size, (piece_size, peak)

    @pytest.mark.skipif(
        not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to read peak RSS"
    )
    def test_peak_rss_growth_of_a_256_mib_encryption(self) -> None:
        probe = subprocess.run(
            [sys.executable, "-c", _RSS_PROBE],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        before_kib, after_kib, total = (int(field) for field in probe.stdout.split())
        assert total == crypto.encrypted_size(256 << 20)
        growth_mib = (after_kib - before_kib) / 1024
        print(f"\npeak RSS growth while encrypting 256 MiB: {growth_mib:.1f} MiB")
        assert growth_mib < 16

    def test_encrypt_throughput(self, key: bytes) -> None:
        blocks = [os.urandom(1 << 20) for _ in range(4)]
        started = time.perf_counter()
        for _chunk in crypto.encrypt_stream(key, self._generated(self.TOTAL_MIB, blocks), AAD):
            pass
        rate = self.TOTAL_MIB / (time.perf_counter() - started)
        print(f"\nencrypt_stream: {rate:.0f} MiB/s")
        assert rate > 50  # AES-NI does GB/s; this slow would mean pathological copying


# ------------------------------------------------------------------------------------ key material


class TestKeyWrapping:
    def test_round_trip(self) -> None:
        kek = crypto.generate_kek()
        material = crypto.new_key_material()
        aad = crypto.kek_wrap_aad(ARCHIVE, "kek-1")
        blob = crypto.wrap_key_material(kek, material, aad)
        unwrapped = crypto.unwrap_key_material(kek, blob, aad)
        assert unwrapped == material
        assert unwrapped.data_key == material.data_key
        assert unwrapped.salt == material.salt

    def test_refusals(self) -> None:
        kek = crypto.generate_kek()
        material = crypto.new_key_material()
        aad = crypto.kek_wrap_aad(ARCHIVE, "kek-1")
        blob = crypto.wrap_key_material(kek, material, aad)
        for wrong_kek, wrong_aad in (
            (crypto.generate_kek(), aad),
            (kek, crypto.kek_wrap_aad(OTHER_ARCHIVE, "kek-1")),
            (kek, crypto.kek_wrap_aad(ARCHIVE, "kek-2")),
            (kek, crypto.archive_aad(ARCHIVE, 1)),
        ):
            with pytest.raises(CryptoError):
                crypto.unwrap_key_material(wrong_kek, blob, wrong_aad)
        for index in range(len(blob)):
            with pytest.raises(CryptoError):
                crypto.unwrap_key_material(kek, _flip(blob, index), aad)
        # A sealed blob of the right key and aad that is not key material is refused too.
        with pytest.raises(CryptoError):
            crypto.unwrap_key_material(kek, crypto.seal(kek, b"not material", aad), aad)

    def test_kek_rotation_rewraps_every_data_key(self) -> None:
        old_kek, new_kek = crypto.generate_kek(), crypto.generate_kek()
        archives = [f"01J9ZQ3V5N6M8K2H4G7F0D1C{index:02d}" for index in range(20)]
        materials = {archive: crypto.new_key_material() for archive in archives}
        wrapped = {
            archive: crypto.wrap_key_material(
                old_kek, materials[archive], crypto.kek_wrap_aad(archive, "old")
            )
            for archive in archives
        }
        rewrapped = {
            archive: crypto.rewrap(
                old_kek,
                new_kek,
                blob,
                crypto.kek_wrap_aad(archive, "old"),
                crypto.kek_wrap_aad(archive, "new"),
            )
            for archive, blob in wrapped.items()
        }
        for archive in archives:
            new_aad = crypto.kek_wrap_aad(archive, "new")
            assert (
                crypto.unwrap_key_material(new_kek, rewrapped[archive], new_aad)
                == (materials[archive])
            )
            with pytest.raises(CryptoError):  # the new blob is not openable with the old KEK
                crypto.unwrap_key_material(old_kek, rewrapped[archive], new_aad)
        # Re-wrapping with a wrong old aad (another archive's blob) is refused, not silently done.
        with pytest.raises(CryptoError):
            crypto.rewrap(
                old_kek,
                new_kek,
                wrapped[archives[0]],
                crypto.kek_wrap_aad(archives[1], "old"),
                crypto.kek_wrap_aad(archives[1], "new"),
            )

    def test_material_encrypts_content_end_to_end(self) -> None:
        material = crypto.new_key_material()
        content = os.urandom(5000)
        blob = b"".join(crypto.encrypt_stream(material.data_key, [content], AAD, chunk_size=1024))
        commitment = crypto.Commitment(material.salt)
        for chunk in crypto.decrypt_stream(material.data_key, [blob], AAD):
            commitment.update(chunk)
        assert commitment.hexdigest() == hashlib.sha256(material.salt + content).hexdigest()

    def test_malformed_material_is_refused(self) -> None:
        with pytest.raises(CryptoError):
            crypto.KeyMaterial(b"k" * 31, b"s" * 32)
        with pytest.raises(CryptoError):
            crypto.KeyMaterial(b"k" * 32, b"s" * 31)
        with pytest.raises(CryptoError):
            crypto.KeyMaterial.from_bytes(b"\x02" + b"k" * 64)
        with pytest.raises(TypeError):
            hash(crypto.new_key_material())


# ------------------------------------------------------------------------------------ ECIES


class TestEcies:
    def test_round_trip_and_public_key_format(self) -> None:
        private, public = crypto.generate_encryption_key()
        assert len(public) == 33
        assert public[0] in (2, 3)
        # An independent secp256k1 implementation (libsecp256k1 via coincurve) agrees on the key.
        raw = crypto.encryption_private_key_to_bytes(private)
        assert coincurve.PrivateKey(raw).public_key.format(compressed=True) == public
        aad = crypto.member_wrap_aad(ARCHIVE, "0x" + "ab" * 20)
        blob = crypto.ecies_encrypt(public, b"data key here", aad)
        assert crypto.ecies_decrypt(private, blob, aad) == b"data key here"
        assert crypto.ecies_encrypt(public, b"data key here", aad) != blob  # fresh ephemeral key
        assert blob[1:34] != crypto.ecies_encrypt(public, b"data key here", aad)[1:34]

    def test_refusals(self) -> None:
        private, public = crypto.generate_encryption_key()
        other_private, _other_public = crypto.generate_encryption_key()
        blob = crypto.ecies_encrypt(public, b"secret", b"aad")
        with pytest.raises(CryptoError):
            crypto.ecies_decrypt(other_private, blob, b"aad")
        with pytest.raises(CryptoError):
            crypto.ecies_decrypt(private, blob, b"other aad")
        for index in range(len(blob)):
            with pytest.raises(CryptoError):
                crypto.ecies_decrypt(private, _flip(blob, index), b"aad")
        for cut in (0, 1, 34, 46, len(blob) - 1):
            with pytest.raises(CryptoError):
                crypto.ecies_decrypt(private, blob[:cut], b"aad")
        # 02 <-> 03 negates the ephemeral point: same ECDH x-coordinate, still refused.
        negated = bytes([blob[1] ^ 1])
        with pytest.raises(CryptoError):
            crypto.ecies_decrypt(private, blob[:1] + negated + blob[2:], b"aad")

    def test_invalid_recipient_keys_are_refused(self) -> None:
        _private, public = crypto.generate_encryption_key()
        uncompressed = coincurve.PublicKey(public).format(compressed=False)
        for bad in (b"", public[:-1], public + b"\x00", b"\x04" + public[1:], uncompressed):
            with pytest.raises(CryptoError):
                crypto.ecies_encrypt(bad, b"x", b"")
        not_on_curve = b"\x02" + b"\xff" * 32  # x >= field prime
        with pytest.raises(CryptoError):
            crypto.ecies_encrypt(not_on_curve, b"x", b"")

    def test_private_key_serialisation(self) -> None:
        private, public = crypto.generate_encryption_key()
        raw = crypto.encryption_private_key_to_bytes(private)
        assert len(raw) == 32
        loaded = crypto.encryption_private_key_from_bytes(raw)
        assert crypto.encryption_public_key(loaded) == public
        order = int("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141", 16)
        for bad in (b"\x00" * 32, order.to_bytes(32, "big"), raw[:31], raw + b"\x00"):
            with pytest.raises(CryptoError):
                crypto.encryption_private_key_from_bytes(bad)

    def test_key_material_to_a_member(self) -> None:
        private, public = crypto.generate_encryption_key()
        material = crypto.new_key_material()
        aad = crypto.member_wrap_aad(ARCHIVE, "0x" + "cd" * 20)
        blob = crypto.ecies_wrap_key_material(public, material, aad)
        assert crypto.ecies_unwrap_key_material(private, blob, aad) == material
        with pytest.raises(CryptoError):
            crypto.ecies_unwrap_key_material(
                private, blob, crypto.member_wrap_aad(ARCHIVE, "0x" + "ef" * 20)
            )


# ------------------------------------------------------------------------------------ small parts


class TestCommitmentPseudonymApiKeys:
    def test_commitment_is_salted_sha256_whatever_the_chunking(self) -> None:
        salt = crypto.new_salt()
        data = os.urandom(10_000)
        incremental = crypto.Commitment(salt)
        for index in range(0, len(data), 777):
            incremental.update(data[index : index + 777])
        expected = hashlib.sha256(salt + data)
        assert incremental.hexdigest() == expected.hexdigest()
        assert incremental.digest() == expected.digest()
        assert crypto.commit(salt, data) == expected.hexdigest()
        assert crypto.commit(crypto.new_salt(), data) != expected.hexdigest()
        with pytest.raises(CryptoError):
            crypto.Commitment(b"short salt")

    def test_pseudonym_is_keyed_stable_normalised_and_domain_separated(self) -> None:
        secret = crypto.generate_pseudonym_secret()
        value = crypto.pseudonym(secret, "patient", "MRN-0042")
        assert value == crypto.pseudonym(secret, "patient", "MRN-0042")
        assert len(value) == 64
        assert int(value, 16) >= 0
        # NFC: the precomposed and decomposed forms of one name give one pseudonym.
        assert crypto.pseudonym(secret, "patient", "Jos\u00e9") == crypto.pseudonym(
            secret, "patient", "Jose\u0301"
        )
        assert value != crypto.pseudonym(secret, "staff", "MRN-0042")
        assert value != crypto.pseudonym(secret, "patient", "MRN-0043")
        assert value != crypto.pseudonym(crypto.generate_pseudonym_secret(), "patient", "MRN-0042")
        assert "MRN" not in value
        with pytest.raises(InputError):
            crypto.pseudonym(b"short", "patient", "MRN-0042")
        with pytest.raises(InputError):
            crypto.pseudonym(secret, "patient", "")

    def test_api_keys(self) -> None:
        keys = {crypto.generate_api_key() for _ in range(50)}
        assert len(keys) == 50
        api_key = keys.pop()
        assert api_key.startswith("ack_")
        assert len(api_key) >= 40
        stored = crypto.hash_api_key(api_key)
        assert stored == hashlib.sha256(api_key.encode()).hexdigest()
        assert crypto.verify_api_key(api_key, stored)
        assert not crypto.verify_api_key(api_key + "x", stored)
        assert not crypto.verify_api_key(keys.pop(), stored)

    def test_constant_time_equal(self) -> None:
        assert crypto.constant_time_equal(b"abc", b"abc")
        assert not crypto.constant_time_equal(b"abc", b"abd")
        assert crypto.constant_time_equal("abc", b"abc")
        assert not crypto.constant_time_equal(b"abc", b"abcd")

    def test_associated_data_is_unambiguous(self) -> None:
        assert crypto.encode_aad("a", "bc") != crypto.encode_aad("ab", "c")
        assert crypto.encode_aad("l", "x", "y") != crypto.encode_aad("l", "xy")
        assert crypto.archive_aad(ARCHIVE, 1) != crypto.archive_aad(ARCHIVE, 2)
        assert crypto.kek_wrap_aad(ARCHIVE, "k") != crypto.member_wrap_aad(ARCHIVE, "k")
        assert crypto.encode_aad("l", 1) == b"\x00\x00\x00\x01l" + b"\x00\x00\x00\x08" + (
            1
        ).to_bytes(8, "big")
        for bad in (-1, 1 << 64, True):
            with pytest.raises(InputError):
                crypto.encode_aad("l", bad)

    def test_passphrase_key_derivation(self) -> None:
        salt = os.urandom(32)
        key = crypto.derive_passphrase_key("pass phrase", salt, n=1 << 10, r=8, p=1)
        assert len(key) == 32
        assert key == crypto.derive_passphrase_key("pass phrase", salt, n=1 << 10, r=8, p=1)
        assert key != crypto.derive_passphrase_key("pass phrasE", salt, n=1 << 10, r=8, p=1)
        assert key != crypto.derive_passphrase_key("pass phrase", salt, n=1 << 11, r=8, p=1)
        # NFKC: the same passphrase typed in composed or decomposed form gives the same key.
        assert crypto.derive_passphrase_key(
            "caf\u00e9-secret", salt, n=16, r=8, p=1
        ) == crypto.derive_passphrase_key("cafe\u0301-secret", salt, n=16, r=8, p=1)
        with pytest.raises(CryptoError):
            crypto.derive_passphrase_key("x", salt, n=3, r=8, p=1)


class TestNoKeyMaterialLeaks:
    def test_error_is_opaque(self, key: bytes) -> None:
        blob = crypto.seal(key, b"payload", AAD)
        with pytest.raises(CryptoError) as caught:
            crypto.open_sealed(crypto.generate_data_key(), blob, AAD)
        error = caught.value
        assert isinstance(error, NodeError)
        assert isinstance(error, ValueError)
        assert str(error) == "cryptographic operation failed" == error.message
        assert error.code == "crypto_error"
        assert error.__cause__ is None
        assert error.__suppress_context__
        assert key.hex() not in repr(error)
        assert blob.hex() not in repr(error)

    def test_reprs_show_no_secrets(self) -> None:
        material = crypto.new_key_material()
        for text in (repr(material), str(material), f"{material}", repr([material])):
            assert material.data_key.hex() not in text
            assert material.salt.hex() not in text
            assert "redacted" in text
        salt = crypto.new_salt()
        assert salt.hex() not in repr(crypto.Commitment(salt))
        private, _public = crypto.generate_encryption_key()
        raw = crypto.encryption_private_key_to_bytes(private)
        assert raw.hex() not in repr(private)
        assert str(int.from_bytes(raw, "big")) not in repr(private)

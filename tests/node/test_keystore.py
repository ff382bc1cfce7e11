"""node.keystore: create/load, passphrase refusal, insecure passphrases, KEK rotation/retirement,
atomic saves under real crashes (SIGKILL) and real write failures (RLIMIT_FSIZE), 0600 files."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct

from node import crypto
from node.crypto import CryptoError
from node.errors import InputError, NodeError
from node.keystore import (
    DEFAULT_SCRYPT_N,
    DEV_PASSPHRASE,
    KekInUseError,
    Keystore,
    KeystoreExistsError,
    KeystoreFormatError,
    KeystoreNotFoundError,
    UnknownKekError,
    WrongPassphraseError,
    is_insecure_passphrase,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSPHRASE = "correct horse battery staple"
FAST = 1 << 4  # scrypt cost for tests, passed explicitly (never a hidden global)
# Test-only: anvil's well-known first development account (public knowledge, never a real key).
ANVIL_DEV_KEY_0 = bytes.fromhex("ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")
ANVIL_DEV_ADDRESS_0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "keystore.json"


@pytest.fixture
def keystore(path: Path) -> Keystore:
    return Keystore.create(path, PASSPHRASE, scrypt_n=FAST)


def _secret_hexes(keystore: Keystore) -> list[str]:
    return [
        keystore.eth_private_key.hex(),
        crypto.encryption_private_key_to_bytes(keystore.encryption_private_key).hex(),
        keystore.pseudonym_secret.hex(),
        *(keystore.kek(info.kek_id).hex() for info in keystore.keks),
    ]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class TestCreateAndLoad:
    def test_round_trip_keeps_every_secret(self, keystore: Keystore, path: Path) -> None:
        loaded = Keystore.load(path, PASSPHRASE)
        assert loaded.address == keystore.address
        assert loaded.eth_private_key == keystore.eth_private_key
        assert loaded.encryption_public_key == keystore.encryption_public_key
        assert loaded.pseudonym_secret == keystore.pseudonym_secret
        assert loaded.current_kek() == keystore.current_kek()
        assert [info.kek_id for info in loaded.keks] == [keystore.current_kek_id]
        assert len(loaded.pseudonym_secret) == 32
        assert len(loaded.current_kek()[1]) == 32

    def test_identity_is_usable(self, keystore: Keystore) -> None:
        signed = keystore.account().sign_message(encode_defunct(text="challenge"))
        recovered = Account.recover_message(
            encode_defunct(text="challenge"), signature=signed.signature
        )
        assert recovered == keystore.address
        aad = crypto.member_wrap_aad("01J9ZQ3V5N6M8K2H4G7F0D1C3B", keystore.address)
        blob = crypto.ecies_encrypt(keystore.encryption_public_key, b"wrapped", aad)
        assert crypto.ecies_decrypt(keystore.encryption_private_key, blob, aad) == b"wrapped"

    def test_every_keystore_gets_fresh_secrets(self, tmp_path: Path) -> None:
        first = Keystore.create(tmp_path / "a.json", PASSPHRASE, scrypt_n=FAST)
        second = Keystore.create(tmp_path / "b.json", PASSPHRASE, scrypt_n=FAST)
        assert set(_secret_hexes(first)).isdisjoint(_secret_hexes(second))
        assert first.address != second.address

    def test_imported_ethereum_key(self, path: Path) -> None:
        keystore = Keystore.create(path, PASSPHRASE, scrypt_n=FAST, eth_private_key=ANVIL_DEV_KEY_0)
        assert keystore.address == ANVIL_DEV_ADDRESS_0
        assert Keystore.load(path, PASSPHRASE).address == ANVIL_DEV_ADDRESS_0

    def test_invalid_imported_key_is_refused(self, path: Path) -> None:
        for bad in (b"\x00" * 32, b"\x01" * 31, b"\xff" * 32):
            with pytest.raises(InputError):
                Keystore.create(path, PASSPHRASE, scrypt_n=FAST, eth_private_key=bad)
        assert not path.exists()

    def test_create_refuses_to_overwrite(self, keystore: Keystore, path: Path) -> None:
        before = path.read_bytes()
        with pytest.raises(KeystoreExistsError) as caught:
            Keystore.create(path, PASSPHRASE, scrypt_n=FAST)
        assert isinstance(caught.value, FileExistsError)
        assert path.read_bytes() == before

    def test_create_refuses_bad_parameters(self, path: Path) -> None:
        with pytest.raises(InputError):
            Keystore.create(path, "", scrypt_n=FAST)
        for bad_n in (3, 1 << 3, 1 << 21, 1000):
            with pytest.raises(InputError):
                Keystore.create(path, PASSPHRASE, scrypt_n=bad_n)
        assert not path.exists()

    def test_public_info_without_passphrase(self, keystore: Keystore, path: Path) -> None:
        info = Keystore.read_public_info(path)
        assert info.address == keystore.address
        assert info.encryption_public_key == keystore.encryption_public_key

    def test_default_cost_is_strong_and_test_cost_is_flagged(self, tmp_path: Path) -> None:
        started = time.perf_counter()
        strong = Keystore.create(tmp_path / "strong.json", PASSPHRASE)
        elapsed = time.perf_counter() - started
        assert strong.scrypt_n == DEFAULT_SCRYPT_N == 1 << 17
        assert not strong.uses_weak_kdf
        assert elapsed > 0.05  # scrypt N=2^17 really ran (about 0.4 s here)
        stored = json.loads((tmp_path / "strong.json").read_text())["kdf"]
        assert (stored["name"], stored["n"], stored["r"], stored["p"]) == ("scrypt", 1 << 17, 8, 1)
        weak = Keystore.create(tmp_path / "weak.json", PASSPHRASE, scrypt_n=FAST)
        assert weak.uses_weak_kdf


class TestRefusals:
    def test_wrong_passphrase_is_one_clear_error(self, keystore: Keystore, path: Path) -> None:
        for wrong in ("correct horse battery stapler", "", PASSPHRASE.upper()):
            with pytest.raises(WrongPassphraseError) as caught:
                Keystore.load(path, wrong)
            error = caught.value
            assert isinstance(error, NodeError)
            assert error.code == "keystore_wrong_passphrase"
            assert str(error) == "wrong keystore passphrase (or the keystore file was altered)"
            assert error.__cause__ is None
            assert error.__suppress_context__
            for secret in _secret_hexes(keystore):
                assert secret not in str(error)

    def test_altered_public_fields_are_detected(self, keystore: Keystore, path: Path) -> None:
        document = json.loads(path.read_text())
        other = Keystore.create(path.parent / "other.json", PASSPHRASE, scrypt_n=FAST)
        for field, value in (
            ("address", other.address),
            ("encryption_public_key", other.encryption_public_key.hex()),
        ):
            altered = {**document, field: value}
            path.write_text(json.dumps(altered))
            with pytest.raises(WrongPassphraseError):
                Keystore.load(path, PASSPHRASE)

    def test_altered_ciphertext_or_kdf_is_detected(self, keystore: Keystore, path: Path) -> None:
        document = json.loads(path.read_text())
        ciphertext = document["ciphertext"]
        flipped = ciphertext[:20] + ("A" if ciphertext[20] != "A" else "B") + ciphertext[21:]
        for altered in (
            {**document, "ciphertext": flipped},
            {**document, "kdf": {**document["kdf"], "n": FAST * 2}},
            {**document, "kdf": {**document["kdf"], "salt": "00" * 32}},
        ):
            path.write_text(json.dumps(altered))
            with pytest.raises(WrongPassphraseError):
                Keystore.load(path, PASSPHRASE)

    def test_malformed_files(self, keystore: Keystore, path: Path) -> None:
        document = json.loads(path.read_text())
        malformed = [
            b"not json",
            b"[]",
            json.dumps({**document, "format": "archivechain.keystore/v9"}).encode(),
            json.dumps({**document, "cipher": "chacha20"}).encode(),
            json.dumps({**document, "kdf": {**document["kdf"], "name": "pbkdf2"}}).encode(),
            json.dumps({**document, "kdf": {**document["kdf"], "n": 1 << 30}}).encode(),
            json.dumps({**document, "kdf": {**document["kdf"], "n": 1000}}).encode(),
            json.dumps({**document, "kdf": {**document["kdf"], "r": True}}).encode(),
            json.dumps({**document, "kdf": {**document["kdf"], "salt": "zz"}}).encode(),
            json.dumps({**document, "ciphertext": "***"}).encode(),
            json.dumps(
                {key: value for key, value in document.items() if key != "ciphertext"}
            ).encode(),
            b" " * (2 << 20),
        ]
        for raw in malformed:
            path.write_bytes(raw)
            with pytest.raises(KeystoreFormatError):
                Keystore.load(path, PASSPHRASE)

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(KeystoreNotFoundError) as caught:
            Keystore.load(tmp_path / "absent.json", PASSPHRASE)
        assert isinstance(caught.value, FileNotFoundError)


class TestInsecurePassphrases:
    @pytest.mark.parametrize(
        "passphrase",
        ["", " ", "short", "elevenchars", "            ", "aaaaaaaaaaaaaaaa", "abababababababab"],
    )
    def test_weak_ones_are_flagged(self, passphrase: str) -> None:
        assert is_insecure_passphrase(passphrase)

    def test_the_documented_dev_default_is_flagged(self) -> None:
        assert len(DEV_PASSPHRASE) >= 12  # flagged for being the default, not for its length
        assert is_insecure_passphrase(DEV_PASSPHRASE)
        assert is_insecure_passphrase(f"  {DEV_PASSPHRASE.upper()} ")

    @pytest.mark.parametrize(
        "passphrase", [PASSPHRASE, "Tr0ub4dor&3-xyz", "长城医院档案库密钥口令示例"]
    )
    def test_reasonable_ones_pass(self, passphrase: str) -> None:
        assert not is_insecure_passphrase(passphrase)


class TestKekRotation:
    def test_rotate_makes_a_new_current_kek_and_keeps_the_old(
        self, keystore: Keystore, path: Path
    ) -> None:
        old_id, old_key = keystore.current_kek()
        moment = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
        new_id = keystore.rotate_kek(now=moment)
        assert new_id != old_id
        assert keystore.current_kek_id == new_id
        assert keystore.kek(old_id) == old_key
        assert keystore.kek(new_id) != old_key
        reloaded = Keystore.load(path, PASSPHRASE)  # rotation is saved at once
        assert reloaded.current_kek_id == new_id
        assert [info.kek_id for info in reloaded.keks] == [old_id, new_id]
        assert reloaded.keks[1].created_at == moment
        assert reloaded.kek(old_id) == old_key

    def test_retire(self, keystore: Keystore, path: Path) -> None:
        old_id = keystore.current_kek_id
        with pytest.raises(KekInUseError):
            keystore.retire_kek(old_id)
        new_id = keystore.rotate_kek()
        with pytest.raises(UnknownKekError):
            keystore.retire_kek("kek-unknown")
        keystore.retire_kek(old_id)
        with pytest.raises(UnknownKekError):
            keystore.kek(old_id)
        reloaded = Keystore.load(path, PASSPHRASE)
        assert [info.kek_id for info in reloaded.keks] == [new_id]
        with pytest.raises(UnknownKekError):
            reloaded.kek(old_id)

    def test_rotation_rewraps_every_data_key(self, keystore: Keystore, path: Path) -> None:
        archives = [f"01J9ZQ3V5N6M8K2H4G7F0D1C{index:02d}" for index in range(10)]
        materials = {archive: crypto.new_key_material() for archive in archives}
        old_id, old_kek = keystore.current_kek()
        wrapped = {
            archive: (
                old_id,
                crypto.wrap_key_material(
                    old_kek, materials[archive], crypto.kek_wrap_aad(archive, old_id)
                ),
            )
            for archive in archives
        }
        new_id = keystore.rotate_kek()
        for archive, (kek_id, blob) in list(wrapped.items()):
            wrapped[archive] = (
                new_id,
                crypto.rewrap(
                    keystore.kek(kek_id),
                    keystore.current_kek()[1],
                    blob,
                    crypto.kek_wrap_aad(archive, kek_id),
                    crypto.kek_wrap_aad(archive, new_id),
                ),
            )
        keystore.retire_kek(old_id)
        reloaded = Keystore.load(path, PASSPHRASE)
        for archive, (kek_id, blob) in wrapped.items():
            assert kek_id == new_id
            unwrapped = crypto.unwrap_key_material(
                reloaded.kek(kek_id), blob, crypto.kek_wrap_aad(archive, kek_id)
            )
            assert unwrapped == materials[archive]
            with pytest.raises(CryptoError):
                crypto.unwrap_key_material(old_kek, blob, crypto.kek_wrap_aad(archive, kek_id))

    def test_change_passphrase(self, keystore: Keystore, path: Path) -> None:
        keystore.change_passphrase("a different long passphrase", scrypt_n=FAST * 2)
        with pytest.raises(WrongPassphraseError):
            Keystore.load(path, PASSPHRASE)
        reloaded = Keystore.load(path, "a different long passphrase")
        assert reloaded.current_kek() == keystore.current_kek()
        assert reloaded.scrypt_n == FAST * 2
        with pytest.raises(InputError):
            keystore.change_passphrase("")


class TestSecretsStaySecret:
    def test_repr_and_str_show_no_secret(self, keystore: Keystore) -> None:
        keystore.rotate_kek()
        for text in (repr(keystore), str(keystore), f"{keystore}", repr([keystore])):
            assert keystore.address in text
            for secret in _secret_hexes(keystore):
                assert secret not in text
                assert secret.upper() not in text

    def test_file_holds_no_secret_in_clear(self, keystore: Keystore, path: Path) -> None:
        keystore.rotate_kek()
        raw = path.read_text()
        for secret in _secret_hexes(keystore):
            assert secret not in raw
        assert PASSPHRASE not in raw


class TestAtomicSave:
    def test_files_are_0600_whatever_the_umask(self, tmp_path: Path) -> None:
        previous = os.umask(0)
        try:
            keystore = Keystore.create(tmp_path / "k.json", PASSPHRASE, scrypt_n=FAST)
        finally:
            os.umask(previous)
        assert _mode(tmp_path / "k.json") == 0o600
        (tmp_path / "k.json").chmod(0o644)
        keystore.rotate_kek()
        assert _mode(tmp_path / "k.json") == 0o600
        assert sorted(entry.name for entry in tmp_path.iterdir()) == ["k.json"]

    def test_a_failed_write_leaves_the_old_file_and_no_temp_file(
        self, keystore: Keystore, path: Path
    ) -> None:
        """A real write failure: the child's file-size limit makes the temp-file write fail."""
        before = path.read_bytes()
        child = f"""
import os, resource, signal, sys
from node.keystore import Keystore
keystore = Keystore.load({str(path)!r}, {PASSPHRASE!r})
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
limit = os.path.getsize({str(path)!r}) // 2
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
current = keystore.current_kek_id
try:
    keystore.rotate_kek()
except OSError as exc:
    print("failed", exc.errno, keystore.current_kek_id == current, len(keystore.keks))
else:
    print("saved")
"""
        result = subprocess.run(
            [sys.executable, "-c", child],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            check=True,
        )
        assert result.stdout.split() == ["failed", "27", "True", "1"]  # EFBIG, state rolled back
        assert path.read_bytes() == before
        assert sorted(entry.name for entry in path.parent.iterdir()) == [path.name]
        assert Keystore.load(path, PASSPHRASE).current_kek() == keystore.current_kek()

    def test_sigkill_mid_save_always_leaves_a_loadable_keystore(
        self, keystore: Keystore, path: Path
    ) -> None:
        """Real crashes: a child rotates and retires KEKs in a loop (two saves per round) and is
        killed with SIGKILL at varying moments; every time the file must load and be consistent."""
        child = f"""
from node.keystore import Keystore
keystore = Keystore.load({str(path)!r}, {PASSPHRASE!r})
for info in keystore.keks:  # a previous child may have died between rotate and retire
    if info.kek_id != keystore.current_kek_id:
        keystore.retire_kek(info.kek_id)
rounds = 0
while True:
    previous = keystore.current_kek_id
    keystore.rotate_kek()
    keystore.retire_kek(previous)
    rounds += 1
    if rounds == 1:  # one round saved: the kill below lands in a later save
        print("saved", flush=True)
"""
        seen_ids = {keystore.current_kek_id}
        for delay in (0.05, 0.13, 0.21):
            process = subprocess.Popen(
                [sys.executable, "-c", child], stdout=subprocess.PIPE, cwd=REPO_ROOT
            )
            assert process.stdout is not None
            # Wait for the first saved round (under load the child may not get there within
            # ``delay``), then kill it at a varying moment of the saves that follow.
            assert process.stdout.readline().strip() == b"saved"
            time.sleep(delay)
            process.send_signal(signal.SIGKILL)
            process.wait()
            process.stdout.close()
            reloaded = Keystore.load(path, PASSPHRASE)
            assert 1 <= len(reloaded.keks) <= 2
            assert reloaded.current_kek_id in {info.kek_id for info in reloaded.keks}
            assert reloaded.address == keystore.address
            assert reloaded.current_kek_id not in seen_ids  # the child really was saving
            seen_ids.add(reloaded.current_kek_id)
            assert _mode(path) == 0o600

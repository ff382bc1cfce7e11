"""The command line refuses insecure or broken set-ups with one line on stderr and exit code 2, and
the ``keys`` commands work on a real node's keystore and database (no HTTP server involved)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from archivechain import main
from node.config import NodeSettings
from node.errors import AuthenticationError
from node.keystore import DEV_PASSPHRASE, MIN_SECURE_SCRYPT_N, Keystore
from node.principal import Role
from node.process import _start_time
from node.runtime import NodeRuntime
from tests.fixtures.chain import Consortium
from tests.fixtures.node import TEST_SCRYPT_N

STRONG_PASSPHRASE = "correct horse battery staple 42"  # TEST ONLY


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Node settings come only from what each test sets."""
    for name in ("MODE", "KEYSTORE_PASSPHRASE", "KEYSTORE_PASSPHRASE_FILE", "DATA_DIR", "CONFIG"):
        monkeypatch.delenv(f"ARCHIVECHAIN_{name}", raising=False)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def _production_config(tmp_path: Path, **extra: str) -> Path:
    config = tmp_path / "node.toml"
    body = [f'data_dir = "{tmp_path / "data"}"', 'mode = "production"']
    body += [f'{key} = "{value}"' for key, value in extra.items()]
    config.write_text("\n".join(body) + "\n")
    return config


# -- node run: production refuses insecure defaults ---------------------------------------------


def test_production_refuses_the_dev_passphrase(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCHIVECHAIN_KEYSTORE_PASSPHRASE", DEV_PASSPHRASE)
    code, _out, err = _run(capsys, "node", "run", "--config", str(_production_config(tmp_path)))
    assert code == 2
    assert "insecure" in _one_error_line(err)
    assert not (tmp_path / "data" / "keystore.json").exists()
    assert not (tmp_path / "data" / "node.pid").exists()


def test_production_refuses_a_missing_passphrase(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = _run(capsys, "node", "run", "--config", str(_production_config(tmp_path)))
    assert code == 2
    assert "no keystore passphrase" in _one_error_line(err)


def test_production_refuses_a_missing_keystore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCHIVECHAIN_KEYSTORE_PASSPHRASE", STRONG_PASSPHRASE)
    code, _out, err = _run(capsys, "node", "run", "--config", str(_production_config(tmp_path)))
    assert code == 2
    line = _one_error_line(err)
    assert "no keystore" in line
    assert "keys init" in line
    assert not (tmp_path / "data" / "keystore.json").exists()  # production never generates keys


@pytest.mark.parametrize(
    "command",
    [
        ("anchor", "status"),
        ("anchor", "replay"),
        ("audit", "log"),
        ("audit", "fixity"),
        ("audit", "orphans"),
        ("keys", "list"),
        ("retention", "run"),
    ],
    ids=" ".join,
)
def test_maintenance_commands_on_a_mistyped_directory_create_nothing_in_dev_mode(
    command: tuple[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only ``node run`` creates a dev node's keystore: a maintenance command pointed at a
    directory without a node refuses in one line and leaves no keystore (or directory) behind."""
    monkeypatch.setenv("ARCHIVECHAIN_MODE", "dev")
    typo = tmp_path / "typo"
    code, _out, err = _run(capsys, *command, "--data-dir", str(typo))
    assert code == 2
    assert "no keystore" in _one_error_line(err) or "no node here" in _one_error_line(err)
    assert not typo.exists()


def test_production_refuses_a_weak_keystore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    Keystore.create(tmp_path / "data" / "keystore.json", STRONG_PASSPHRASE, scrypt_n=TEST_SCRYPT_N)
    monkeypatch.setenv("ARCHIVECHAIN_KEYSTORE_PASSPHRASE", STRONG_PASSPHRASE)
    code, _out, err = _run(capsys, "node", "run", "--config", str(_production_config(tmp_path)))
    assert code == 2
    assert "weak scrypt" in _one_error_line(err)


def test_missing_config_file_and_bad_values_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = _run(capsys, "node", "run", "--config", str(tmp_path / "absent.toml"))
    assert code == 2
    assert "config file not found" in _one_error_line(err)
    bad = tmp_path / "bad.toml"
    bad.write_text('mode = "yolo"\n')
    code, _out, err = _run(capsys, "node", "run", "--config", str(bad))
    assert code == 2
    assert "invalid configuration" in _one_error_line(err)


def test_refusal_through_the_installed_entry_point(tmp_path: Path) -> None:
    """The same refusal from a separate process: exit status 2, one line, no traceback."""
    config = _production_config(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "ARCHIVECHAIN_KEYSTORE_PASSPHRASE": DEV_PASSPHRASE}
    result = subprocess.run(
        [sys.executable, "-m", "archivechain", "node", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "insecure" in _one_error_line(result.stderr)
    assert "Traceback" not in result.stderr


# -- keys -----------------------------------------------------------------------------------------


def test_keys_create_refuses_a_bad_role(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(
        capsys, "keys", "create", "--data-dir", str(tmp_path), "--role", "superuser", "--name", "x"
    )
    assert code == 2
    assert "superuser" in _one_error_line(err)
    assert out == ""


def test_keys_init_refuses_insecure_passphrases_then_creates_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "prod"
    code, _out, err = _run(capsys, "keys", "init", "--data-dir", str(data))
    assert code == 2
    assert "no keystore passphrase" in _one_error_line(err)

    for weak in (DEV_PASSPHRASE, "short", "aaaaaaaaaaaaaaaa"):
        monkeypatch.setenv("ARCHIVECHAIN_KEYSTORE_PASSPHRASE", weak)
        code, _out, err = _run(capsys, "keys", "init", "--data-dir", str(data))
        assert code == 2
        assert "insecure" in _one_error_line(err)
        assert not (data / "keystore.json").exists()

    monkeypatch.delenv("ARCHIVECHAIN_KEYSTORE_PASSPHRASE")
    secret_file = tmp_path / "passphrase.txt"
    secret_file.write_text(STRONG_PASSPHRASE + "\n")
    code, out, err = _run(
        capsys, "keys", "init", "--data-dir", str(data), "--passphrase-file", str(secret_file)
    )
    assert code == 0, err
    keystore = Keystore.load(data / "keystore.json", STRONG_PASSPHRASE)
    assert keystore.address in out
    assert keystore.scrypt_n >= MIN_SECURE_SCRYPT_N
    assert not keystore.uses_weak_kdf
    assert STRONG_PASSPHRASE not in out + err
    assert keystore.eth_private_key.hex() not in out + err

    code, _out, err = _run(
        capsys, "keys", "init", "--data-dir", str(data), "--passphrase-file", str(secret_file)
    )
    assert code == 2
    assert "already exists" in _one_error_line(err)
    assert Keystore.load(data / "keystore.json", STRONG_PASSPHRASE).address == keystore.address


@pytest.fixture
def dev_node_config(tmp_path: Path, consortium: Consortium) -> Path:
    """A dev node's config and keystore on the session chain (no process runs it)."""
    data = tmp_path / "node"
    Keystore.create(data / "keystore.json", DEV_PASSPHRASE, scrypt_n=TEST_SCRYPT_N)
    config = tmp_path / "node.toml"
    config.write_text(
        f'mode = "dev"\nname = "cli-node"\ndata_dir = "{data}"\n'
        f'rpc_url = "{consortium.rpc_url}"\ndeployment_file = "{consortium.deployment_file}"\n'
    )
    return config


def _open(config: Path) -> NodeRuntime:
    text = config.read_text()
    values = dict(line.split(" = ", 1) for line in text.strip().splitlines())
    return NodeRuntime.open(NodeSettings(**{k: json.loads(v) for k, v in values.items()}))


def test_keys_create_list_revoke_on_the_node_database(
    dev_node_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = ("--config", str(dev_node_config))
    code, out, err = _run(capsys, "keys", "create", *cfg, "--role", "archivist", "--name", "ann")
    assert code == 0, err
    secret = out.strip()
    assert len(out.strip().splitlines()) == 1  # stdout is the secret alone (scriptable)
    assert "shown once" in err

    code, out, err = _run(
        capsys,
        "keys",
        "create",
        *cfg,
        "--role",
        "clinician",
        "--name",
        "bob",
        "--department",
        "icu",
    )
    assert code == 0, err
    clinician_secret = out.strip()

    code, out, err = _run(capsys, "keys", "create", *cfg, "--role", "clinician", "--name", "eve")
    assert code == 2
    assert "department" in _one_error_line(err)

    runtime = _open(dev_node_config)
    try:
        principal = runtime.keys.authenticate(secret)
        assert principal.role is Role.ARCHIVIST
        assert principal.name == "ann"
        assert runtime.keys.authenticate(clinician_secret).department == "icu"
    finally:
        runtime.close()

    code, out, _err = _run(capsys, "keys", "list", *cfg)
    assert code == 0
    assert secret not in out
    rows = [line.split() for line in out.strip().splitlines()[1:]]
    assert [(r[0], r[1], r[-2], r[-1]) for r in rows] == [
        ("2", "clinician", "active", "bob"),
        ("1", "archivist", "active", "ann"),
    ]

    code, out, _err = _run(capsys, "keys", "revoke", *cfg, "1")
    assert code == 0
    assert "revoked API key 1" in out
    runtime = _open(dev_node_config)
    try:
        with pytest.raises(AuthenticationError):
            runtime.keys.authenticate(secret)
        assert runtime.keys.authenticate(clinician_secret).role is Role.CLINICIAN
    finally:
        runtime.close()
    code, out, _err = _run(capsys, "keys", "list", *cfg)
    rows = [line.split() for line in out.strip().splitlines()[1:]]
    assert [(r[0], r[-2], r[-1]) for r in rows] == [("2", "active", "bob"), ("1", "revoked", "ann")]

    code, _out, err = _run(capsys, "keys", "revoke", *cfg, "99")
    assert code == 1
    assert "99" in _one_error_line(err)


def test_keys_create_insurer_only_for_an_active_insurer(
    dev_node_config: Path, consortium: Consortium, capsys: pytest.CaptureFixture[str]
) -> None:
    """``keys create --role insurer --member ADDR`` reads the registry: an address that is not an
    active insurer (the regulator, a hospital, a stranger) is refused with one line and exit 2,
    and no key is stored; the consortium's insurer gets its key."""
    cfg = ("--config", str(dev_node_config))
    accounts = consortium.accounts
    for member in (accounts.regulator, accounts.hospital_a, accounts.outsider):
        code, out, err = _run(
            capsys, "keys", "create", *cfg, "--role", "insurer", "--name", "claims",
            "--member", member.address,
        )  # fmt: skip
        assert (code, out) == (2, "")
        line = _one_error_line(err)
        assert member.address in line
        assert "not an active insurer" in line
    code, out, _err = _run(capsys, "keys", "list", *cfg)
    assert (code, out.strip()) == (0, "no API keys")
    code, out, err = _run(
        capsys, "keys", "create", *cfg, "--role", "insurer", "--name", "claims",
        "--member", accounts.insurer.address.lower(),
    )  # fmt: skip
    assert code == 0, err
    runtime = _open(dev_node_config)
    try:
        principal = runtime.keys.authenticate(out.strip())
        assert (principal.role, principal.member) == (Role.INSURER, accounts.insurer.address)
    finally:
        runtime.close()


def test_keys_rotate_kek_refuses_while_the_node_runs_then_rotates(
    dev_node_config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from anchoring.events import Purpose, RecordClass, Sensitivity
    from node.services.archives import NewArchive

    runtime = _open(dev_node_config)
    runtime.start(scheduler=False)
    try:
        archivist = runtime.keys.authenticate(runtime.keys.issue(Role.ARCHIVIST, "a").secret)
        new = NewArchive(
            record_class=RecordClass.LAB,
            sensitivity=Sensitivity.NORMAL,
            department="lab",
            title="CBC",
            patient_id="P1",
            source_system="LIS",
            media_type="text/plain",
        )
        archive_id = runtime.archives.create(archivist, new, [b"haemoglobin 14.1"]).id
        old_kek = runtime.keystore.current_kek_id
    finally:
        runtime.close()

    # a live process recorded as the node: rotation must wait for it to stop
    sleeper = subprocess.Popen(["sleep", "30"])
    pid_file = tmp_path / "node" / "node.pid"
    try:
        pid_file.write_text(json.dumps({"pid": sleeper.pid, "start": _start_time(sleeper.pid)}))
        code, _out, err = _run(capsys, "keys", "rotate-kek", "--config", str(dev_node_config))
        assert code == 2  # unusable as asked: one line, exit 2, nothing done
        assert f"pid {sleeper.pid}" in _one_error_line(err)
    finally:
        sleeper.kill()
        sleeper.wait()

    code, out, err = _run(
        capsys, "keys", "rotate-kek", "--config", str(dev_node_config), "--batch-size", "1"
    )
    assert code == 0, err
    assert f"retired {old_kek}" in out
    assert not pid_file.exists()  # the stale pid file was cleared
    runtime = _open(dev_node_config)
    runtime.start(scheduler=False)
    try:
        assert runtime.keystore.current_kek_id != old_kek
        assert [k.kek_id for k in runtime.keystore.keks] == [runtime.keystore.current_kek_id]
        archivist = runtime.keys.authenticate(runtime.keys.issue(Role.ARCHIVIST, "b").secret)
        stream = runtime.archives.open_content(archivist, archive_id, Purpose.AUDIT)
        assert b"".join(stream.chunks) == b"haemoglobin 14.1"
    finally:
        runtime.close()


def test_down_on_a_directory_without_a_network_refuses_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``down --data-dir`` mistyped (or pointed at a node's directory) says no network is recorded
    there (exit 2) instead of "nothing was running" (exit 0); nothing is created."""
    empty, missing = tmp_path / "empty", tmp_path / "missing"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a network")
    for data_dir in (empty, missing):
        code, out, err = _run(capsys, "down", "--data-dir", str(data_dir))
        assert code == 2
        assert out == ""
        assert f"no network is recorded in {data_dir}" in _one_error_line(err)
    assert not missing.exists()
    assert sorted(p.name for p in empty.iterdir()) == ["notes.txt"]

    stopped = tmp_path / "stopped"  # a network that `up` recorded, nothing running now
    stopped.mkdir()
    (stopped / "network.json").write_text("{}")
    code, out, err = _run(capsys, "down", "--data-dir", str(stopped))
    assert (code, err) == (0, "")
    assert out == f"nothing was running in {stopped}\n"

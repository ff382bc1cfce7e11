"""``archivechain verify`` end to end on a real anvil: a bundle built by a real node verifies (exit 0);
every tampering of issue 3 §8 fails naming its reason (exit 1); unusable input exits 2 with one line."""

from __future__ import annotations

import ast
import base64
import importlib
import io
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest

from anchoring.chain import RpcChain
from anchoring.events import Purpose, RecordClass, Sensitivity
from archivechain import main
from node.ports import free_port
from node.principal import Role
from node.runtime import NodeRuntime
from node.services.archives import NewArchive
from tests.fixtures.chain import Consortium
from tests.fixtures.node import MakeNode

Document = dict[str, Any]


@pytest.fixture
def bundle_doc(make_node: MakeNode, chain: RpcChain) -> Document:
    """A real bundle: CREATE, ARCHIVE and two ACCESS events, anchored on chain."""
    node: NodeRuntime = make_node()
    who = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "verifier-test").secret)
    new = NewArchive(
        record_class=RecordClass.OUTPATIENT,
        sensitivity=Sensitivity.NORMAL,
        department="er",
        title="Visit note",
        patient_id="MRN-77",
        source_system="HIS",
        media_type="text/plain",
    )
    view = node.archives.create(who, new, [b"visit note"])
    node.archives.archive(who, view.id)
    node.worker.run_until_anchored(timeout=30)  # checkpoint 0 covers the first two events
    for _ in range(2):
        b"".join(node.archives.open_content(who, view.id, Purpose.TREATMENT).chunks)
    node.worker.run_until_anchored(timeout=30)
    document: Document = json.loads(node.proofs.bundle(who, view.id).document)
    return document


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def write(tmp_path: Path, document: Document | bytes) -> Path:
    path = tmp_path / f"bundle-{len(list(tmp_path.glob('bundle-*')))}.json"
    path.write_bytes(document if isinstance(document, bytes) else json.dumps(document).encode())
    return path


def test_valid_bundle_exits_zero_with_a_line_per_event(
    bundle_doc: Document, consortium: Consortium, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, bundle_doc)
    args = ["verify", str(path), "--rpc", consortium.rpc_url]
    code, out, _ = run([*args, "--deployment", str(consortium.deployment_file)], capsys)
    assert code == 0, out
    assert "VALID: 4 events verified" in out
    for kind in ("CREATE", "ARCHIVE", "ACCESS"):
        assert kind in out
    code, out, _ = run([*args, "--notary", consortium.deployment.notary.address, "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["ok"] is True
    assert [e["type"] for e in report["entries"]] == ["CREATE", "ARCHIVE", "ACCESS", "ACCESS"]
    assert all(e["block_time"] for e in report["entries"])
    code, _, err = run(args, capsys)  # no pinned notary: still verifies, but warns
    assert code == 0
    assert "taken from the bundle" in err


def _flip_event_byte(doc: Document) -> None:
    raw = bytearray(base64.b64decode(doc["entries"][1]["event"]))
    raw[raw.index(b'"ARCHIVE"') + 2] ^= 0x01
    doc["entries"][1]["event"] = base64.b64encode(bytes(raw)).decode()


def _flip_proof_hash(doc: Document) -> None:
    entry = next(e for e in doc["entries"] if e["proof"])
    proof = bytearray.fromhex(entry["proof"][0])
    proof[0] ^= 0x80
    entry["proof"][0] = proof.hex()


def _flip_checkpoint_root(doc: Document) -> None:
    root = bytearray.fromhex(doc["entries"][0]["checkpoint"]["root"])
    root[31] ^= 0x01
    for entry in doc["entries"]:
        entry["checkpoint"]["root"] = root.hex()


def _reorder(doc: Document) -> None:
    doc["entries"][1], doc["entries"][2] = doc["entries"][2], doc["entries"][1]


def _drop_middle(doc: Document) -> None:
    del doc["entries"][2]


def _checkpoint_not_on_chain(doc: Document) -> None:
    for entry in doc["entries"]:
        entry["checkpoint"]["index"] = 99


TAMPERINGS: dict[str, tuple[Callable[[Document], None], tuple[str, ...]]] = {
    "flipped byte in an event": (_flip_event_byte, ("event_invalid", "inclusion_invalid")),
    "flipped byte in a proof hash": (_flip_proof_hash, ("inclusion_invalid",)),
    "flipped byte in a checkpoint root": (
        _flip_checkpoint_root,
        ("inclusion_invalid", "checkpoint_mismatch"),
    ),
    "reordered events": (_reorder, ("prev_mismatch",)),
    "dropped event in the middle": (_drop_middle, ("prev_mismatch",)),
    "checkpoint that is not on chain": (_checkpoint_not_on_chain, ("checkpoint_missing",)),
}


@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_tampered_bundle_exits_one_naming_the_reason(
    name: str,
    bundle_doc: Document,
    consortium: Consortium,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tamper, codes = TAMPERINGS[name]
    tamper(bundle_doc)
    path = write(tmp_path, bundle_doc)
    code, out, _ = run(
        [
            "verify",
            str(path),
            "--rpc",
            consortium.rpc_url,
            "--deployment",
            str(consortium.deployment_file),
            "--json",
        ],
        capsys,
    )
    assert code == 1, out
    report = json.loads(out)
    assert report["ok"] is False
    assert report["failure"]["code"] in codes, report["failure"]


def test_unusable_input_exits_two_with_one_line(
    bundle_doc: Document, consortium: Consortium, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rpc = ["--rpc", consortium.rpc_url]
    undecodable = _with(bundle_doc, lambda d: d["entries"][1].update(event="eyJ!"))
    padding_bits = _with(bundle_doc, lambda d: d["entries"][0].update(event="eR=="))
    cases: dict[str, tuple[list[str], str]] = {
        "missing file": (
            ["verify", str(tmp_path / "absent.json"), *rpc],
            f"error: cannot read {tmp_path / 'absent.json'}: No such file or directory",
        ),
        "not json": (["verify", str(write(tmp_path, b"{not json")), *rpc], "not JSON"),
        "unknown format": (
            [
                "verify",
                str(write(tmp_path, {**bundle_doc, "format": "archivechain.proof/v9"})),
                *rpc,
            ],
            "a proof bundle of format archivechain.proof/v9, which this verifier does not read",
        ),
        "bad hex names the field": (
            [
                "verify",
                str(
                    write(
                        tmp_path, _with(bundle_doc, lambda d: d["entries"][0]["proof"].append("zz"))
                    )
                ),
                *rpc,
            ],
            "malformed bundle: entries[0].proof[",
        ),
        "undecodable base64 in an event": (
            ["verify", str(write(tmp_path, undecodable)), *rpc],
            "malformed bundle: entries[1].event: malformed base64",
        ),
        "non-canonical base64 in an event": (
            ["verify", str(write(tmp_path, padding_bits)), *rpc],
            "malformed bundle: entries[0].event: non-canonical base64",
        ),
        "bad trusted notary": (
            ["verify", str(write(tmp_path, bundle_doc)), *rpc, "--notary", "0x1234"],
            "not an address",
        ),
        "bad rpc url": (
            ["verify", str(write(tmp_path, bundle_doc)), "--rpc", "127.0.0.1:8545"],
            "RPC URL must be http:// or https://",
        ),
    }
    for name, (args, message) in cases.items():
        code, out, err = run(args, capsys)
        assert code == 2, (name, out, err)
        assert out == ""
        assert len(err.strip().splitlines()) == 1, (name, err)
        assert err.startswith("error: ")
        assert message in err, (name, err)
    # With --json an unusable bundle also prints its JSON object, as for several bundles
    # (bad arguments stay one line on stderr: there is no bundle to report on).
    for name in ("missing file", "not json", "unknown format", "undecodable base64 in an event"):
        args, message = cases[name]
        code, out, err = run([*args, "--json"], capsys)
        assert code == 2, (name, out, err)
        assert len(err.strip().splitlines()) == 1, (name, err)
        [line] = out.strip().splitlines()
        reported = json.loads(line)
        assert reported["status"] == "unusable", (name, reported)
        assert reported["exit_code"] == 2
        assert reported["file"] == args[1]
        assert message.removeprefix("error: ") in reported["error"], (name, reported)
    code, out, err = run([*cases["bad rpc url"][0], "--json"], capsys)
    assert (code, out) == (2, "")


def test_an_api_error_instead_of_a_bundle_says_what_the_file_is(
    make_node: MakeNode, consortium: Consortium, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Item 12: the node API answered 409 ``proof_pending`` and that body was saved as the
    bundle. Regression: ``verify`` said "unsupported format None"."""
    from api.main import create_app
    from tests.api.conftest import archive_metadata, serve

    node: NodeRuntime = make_node()
    key = node.keys.issue(Role.ARCHIVIST, "cli-test").secret
    with serve(create_app(node)) as client:
        headers = {"Authorization": f"Bearer {key}"}
        created = client.post(
            "/api/v1/archives",
            headers=headers,
            files={"file": ("note.txt", b"note", "text/plain")},
            data={"metadata": json.dumps(archive_metadata())},
        )
        assert created.status_code == 201, created.text
        pending = client.get(f"/api/v1/archives/{created.json()['id']}/proof", headers=headers)
    assert pending.status_code == 409
    path = write(tmp_path, pending.content)
    code, out, err = run(["verify", str(path), "--rpc", consortium.rpc_url], capsys)
    assert (code, out) == (2, "")
    assert err == (
        "error: this is an error response from the node API (proof_pending: "
        f"{pending.json()['message']}), not a proof bundle\n"
    )


def test_an_unreachable_chain_exits_three(
    bundle_doc: Document, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, bundle_doc)
    rpc = ["--rpc", f"http://127.0.0.1:{free_port()}", "--notary", bundle_doc["notary"]]
    code, out, err = run(["verify", str(path), *rpc], capsys)
    assert code == 3, (out, err)
    assert out.splitlines()[-1].startswith("CHAIN UNAVAILABLE: chain_unavailable: ")
    assert "unreachable" in out
    assert out.count(" unchecked") == 4
    code, out, _ = run(["verify", str(path), *rpc, "--json"], capsys)
    assert code == 3
    report = json.loads(out)
    assert (report["status"], report["exit_code"]) == ("chain unavailable", 3)
    # Evidence that is wrong on its face is invalid even when the chain cannot be read.
    _flip_proof_hash(bundle_doc)
    code, out, _ = run(["verify", str(write(tmp_path, bundle_doc)), *rpc, "--json"], capsys)
    assert code == 1
    assert json.loads(out)["failure"]["code"] == "inclusion_invalid"


def test_a_trusted_notary_without_a_notary_contract_is_invalid(
    bundle_doc: Document, consortium: Consortium, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: an address holding no ArchiveNotary made the input "unusable" (exit 2); it is
    a definite finding, ``notary_mismatch`` (exit 1), whether it holds no code or other code."""
    rpc = ["--rpc", consortium.rpc_url]
    for address in (
        "0x000000000000000000000000000000000000dEaD",
        consortium.deployment.registry.address,
    ):
        bundle_doc["notary"] = address
        path = write(tmp_path, bundle_doc)
        code, out, err = run(["verify", str(path), *rpc, "--notary", address, "--json"], capsys)
        assert code == 1, (out, err)
        report = json.loads(out)
        assert report["failure"]["code"] == "notary_mismatch"
        assert report["failure"]["entry"] is None
        assert address in report["failure"]["message"]
        assert {e["verdict"] for e in report["entries"]} == {"unchecked"}


def _with(doc: Document, change: Callable[[Document], None]) -> Document:
    copy = json.loads(json.dumps(doc))
    change(copy)
    return copy


# ------------------------------------------------------------------------------------------
# Many bundles in one process


def test_many_bundles_one_line_each_and_the_worst_exit_code(
    bundle_doc: Document,
    consortium: Consortium,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = tmp_path / "bundles"
    folder.mkdir()
    (folder / "a-valid.json").write_text(json.dumps(bundle_doc))
    (folder / "b-also-valid.json").write_text(json.dumps(bundle_doc, indent=1))
    tampered = _with(bundle_doc, _reorder)
    (folder / "c-reordered.json").write_text(json.dumps(tampered))
    (folder / "d-error.json").write_text('{"code":"proof_pending","message":"later"}')
    (folder / "notes.txt").write_text("not a bundle, and not *.json: skipped")
    trust = ["--rpc", consortium.rpc_url, "--deployment", str(consortium.deployment_file)]

    code, out, err = run(["verify", str(folder), *trust], capsys)
    assert code == 1  # invalid outranks unusable
    lines = out.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["valid", str(folder / "a-valid.json")],
        ["valid", str(folder / "b-also-valid.json")],
        ["invalid", str(folder / "c-reordered.json")],
        ["unusable", str(folder / "d-error.json")],
    ]
    archive = bundle_doc["archive_id"]
    assert lines[0].endswith(f"archive {archive}  4 events")
    assert f"archive {archive}  entry 1: prev_mismatch: " in lines[2]
    assert lines[3].endswith(
        "this is an error response from the node API (proof_pending: later), not a proof bundle"
    )
    assert err == "4 bundles: 1 invalid, 1 unusable, 2 valid\n"

    code, out, _ = run(["verify", str(folder), *trust, "--json"], capsys)
    assert code == 1
    documents = [json.loads(line) for line in out.splitlines()]
    assert [(d["status"], d["exit_code"]) for d in documents] == [
        ("valid", 0),
        ("valid", 0),
        ("invalid", 1),
        ("unusable", 2),
    ]
    assert documents[2]["failure"]["code"] == "prev_mismatch"
    assert documents[3]["error"].startswith("this is an error response from the node API")
    assert documents[0]["file"] == str(folder / "a-valid.json")

    # The worst outcome decides: unusable (2) outranks valid, chain unavailable (3) only valid.
    valid, unusable = folder / "a-valid.json", folder / "d-error.json"
    assert run(["verify", str(valid), str(unusable), *trust], capsys)[0] == 2
    assert run(["verify", str(valid), str(valid), *trust], capsys)[0] == 0
    down = ["--rpc", f"http://127.0.0.1:{free_port()}", "--notary", bundle_doc["notary"]]
    code, out, _ = run(["verify", str(valid), str(valid), *down], capsys)
    assert code == 3
    assert [line.split()[0] for line in out.splitlines()] == ["chain-unavailable"] * 2
    assert run(["verify", str(valid), str(unusable), *down], capsys)[0] == 2

    # Paths on stdin, blank lines skipped; an unreadable one is one more unusable line.
    listing = f"{valid}\n\n{folder / 'c-reordered.json'}\n{tmp_path / 'gone.json'}\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(listing))
    code, out, err = run(["verify", "-", *trust], capsys)
    assert code == 1
    assert [line.split()[0] for line in out.splitlines()] == ["valid", "invalid", "unusable"]
    assert "cannot read" in out.splitlines()[2]

    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, _ = run(["verify", str(empty), *trust], capsys)
    assert code == 2
    assert out.split()[0] == "unusable"
    assert "directory without any *.json file" in out


def test_one_reader_and_one_connection_serve_every_bundle(
    bundle_doc: Document, consortium: Consortium, tmp_path: Path
) -> None:
    """Each checkpoint is read once for a whole batch (anchored checkpoints never change)."""
    from anchoring.rpcview import HttpJsonRpc
    from archivechain.verify import Verifier

    class Counting(HttpJsonRpc):
        def __init__(self, url: str) -> None:
            super().__init__(url)
            self.calls: list[str] = []

        def request(self, method: str, params: list[Any]) -> Any:
            self.calls.append(method)
            return super().request(method, params)

    rpc = Counting(consortium.rpc_url)
    verifier = Verifier(rpc, consortium.deployment.notary.address, check_custody=True)
    path = write(tmp_path, bundle_doc)
    outcomes = [verifier.verify(str(path), path) for _ in range(5)]
    assert [o.exit_code for o in outcomes] == [0] * 5
    checkpoints = {
        (e["checkpoint"]["hospital"], e["checkpoint"]["index"]) for e in bundle_doc["entries"]
    }
    # per bundle: checkpointCount and archive(); checkpointAt once per checkpoint overall
    assert rpc.calls.count("eth_chainId") == 1
    assert rpc.calls.count("eth_call") == 5 * 2 + len(checkpoints)


# ------------------------------------------------------------------------------------------
# Start-up: the verify path stays light


_PROBE = """
import json, sys
from archivechain import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}), file=sys.stderr)
"""
HEAVY = ("web3", "eth_utils", "eth_abi", "eth_account", "sqlalchemy", "fastapi", "starlette")
HEAVY_OURS = ("node.runtime", "node.db", "node.services", "anchoring.chain", "api")


def _modules_after(args: list[str]) -> tuple[int, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, check=False
    )
    probe = json.loads(done.stderr.strip().splitlines()[-1])
    return probe["code"], set(probe["modules"])


def _heavy(modules: set[str]) -> set[str]:
    return {
        m
        for m in modules
        if m.split(".")[0] in HEAVY or any(m == o or m.startswith(o + ".") for o in HEAVY_OURS)
    }


def test_verify_imports_neither_web3_nor_sqlalchemy_nor_the_node_runtime(
    bundle_doc: Document, consortium: Consortium, tmp_path: Path
) -> None:
    path = write(tmp_path, bundle_doc)
    code, modules = _modules_after(
        [
            "verify",
            str(path),
            "--rpc",
            consortium.rpc_url,
            "--deployment",
            str(consortium.deployment_file),
        ]
    )
    assert code == 0
    assert {"anchoring.verifier", "anchoring.rpcview", "archivechain.verify"} <= modules
    assert _heavy(modules) == set()

    done = subprocess.run(
        [sys.executable, "-c", "import sys, anchoring.verifier; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert _heavy(set(ast.literal_eval(done.stdout))) == set()


def test_help_imports_no_command_module() -> None:
    code, modules = _modules_after(["--help"])
    assert code == 0
    assert not any(m.startswith("archivechain.") for m in modules)
    assert "anchoring" not in modules
    assert _heavy(modules) == set()


def test_the_lazy_command_table_matches_the_commands() -> None:
    """``--help`` lists the table's one-line help without importing: it must be the command's."""
    from archivechain import COMMANDS, cli

    for name, (module, attribute, short_help) in COMMANDS.items():
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        assert command.name == name
        assert command.get_short_help_str(1000) == short_help
        assert cli.get_command(click.Context(cli), name) is command


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    from archivechain import COMMANDS

    code, out, _ = run(["--help"], capsys)
    assert code == 0
    listed = [line.split()[0] for line in out.split("Commands:")[1].strip().splitlines()]
    assert listed == sorted(COMMANDS)
    code, out, _ = run(["verify", "--help"], capsys)
    assert code == 0
    assert "0 valid, 1 invalid, 2 unusable input, 3 chain unavailable" in " ".join(out.split())


def test_a_break_glass_read_verifies_only_after_its_window(
    make_node: MakeNode,
    consortium: Consortium,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A real node's genuine break-glass (BREAK_GLASS, then the read inside its window) verifies;
    a hospital that logs and anchors a break-glass read with no window (bypassing its own checks)
    produces a bundle ``archivechain verify`` refuses with ``break_glass_unopened``."""
    from dataclasses import replace

    from anchoring import merkle
    from anchoring.events import AccessData, AccessEvent, AccessScope, canonical_bytes
    from node.db import UnitOfWork

    node: NodeRuntime = make_node()
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "bg-archivist").secret)
    onco = node.keys.authenticate(node.keys.issue(Role.CLINICIAN, "dr-onco", "oncology").secret)
    new = NewArchive(
        record_class=RecordClass.OUTPATIENT,
        sensitivity=Sensitivity.HIGHLY_SENSITIVE,
        department="cardiology",
        title="Visit note",
        patient_id="MRN-78",
        source_system="HIS",
        media_type="text/plain",
    )
    genuine = node.archives.create(archivist, new, [b"visit note"]).id
    forged = node.archives.create(archivist, new, [b"another note"]).id
    window = node.gate.open_break_glass(onco, genuine, "Unconscious patient, history needed")
    b"".join(node.archives.open_content(onco, genuine, Purpose.TREATMENT).chunks)

    def rogue(uow: UnitOfWork) -> None:  # a break-glass read no BREAK_GLASS opened
        archive = node.ledger.held(uow.session, None, forged)
        state = node.ledger.state(uow.session, archive)
        event = AccessEvent(
            hospital=node.ledger.hospital,
            log_index=uow.log.size,
            archive_id=forged,
            actor=onco.actor,
            time=uow.now,
            prev=state.head,
            data=AccessData(
                purpose=Purpose.TREATMENT,
                scope=AccessScope.CONTENT,
                break_glass=True,
                reason_hash=window.reason_hash,
            ),
        )
        raw = canonical_bytes(event)
        leaf = merkle.leaf_hash(raw)
        uow.log.append(raw, archive_id=forged, event_type=event.type, time=uow.now, leaf=leaf)
        node.ledger.settle(uow, archive, leaf, replace(state, head=leaf.hex()), 1)

    node.gate.units.run(rogue)
    node.worker.run_until_anchored(timeout=30)
    args = ["--rpc", consortium.rpc_url, "--deployment", str(consortium.deployment_file)]
    documents = {
        archive_id: json.loads(node.proofs.bundle(archivist, archive_id).document)
        for archive_id in (genuine, forged)
    }
    code, out, _ = run(["verify", str(write(tmp_path, documents[genuine])), *args], capsys)
    assert code == 0, out
    assert "BREAK_GLASS" in out
    path = write(tmp_path, documents[forged])
    code, out, _ = run(["verify", str(path), *args, "--json"], capsys)
    assert code == 1, out
    report = json.loads(out)
    assert report["failure"]["code"] == "break_glass_unopened"
    assert report["failure"]["entry"] == 1
    assert "not inside a break-glass window" in report["failure"]["message"]
    code, out, _ = run(["verify", str(path), *args], capsys)
    assert code == 1
    assert "break_glass_unopened" in out

"""``archivechain import``: legacy backfill through a live node (real uvicorn over the real app,
SQLite and PostgreSQL) — counts, idempotency by file hash, classification from the manifest,
refused manifests (exit 2, one line, nothing sent), and the generic document route itself."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from click.testing import CliRunner
from sqlalchemy import func, select

from api.main import create_app
from archivechain import main
from archivechain.importer import Progress
from node.models import Archive
from node.ports import free_port
from node.principal import Role
from node.runtime import NodeRuntime
from tests.api.conftest import Api
from tests.console.live import live_server

PATIENT = "MRN-LEGACY-0042"


@pytest.fixture
def live(api_node: NodeRuntime) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(api_node), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def _count(node: NodeRuntime) -> int:
    with node.db.session() as session:
        return int(session.execute(select(func.count()).select_from(Archive)).scalar_one())


def _run(*args: str) -> tuple[int, str, str]:
    runner = CliRunner()
    captured: dict[str, int] = {}

    def call() -> None:
        captured["code"] = main(list(args))

    with runner.isolation() as (out, err, _):
        call()
        return captured["code"], out.getvalue().decode(), err.getvalue().decode()


@pytest.fixture
def legacy(tmp_path: Path, api_node: NodeRuntime) -> tuple[Path, Path]:
    directory = tmp_path / "legacy"
    (directory / "2019").mkdir(parents=True)
    (directory / "2019" / "discharge.txt").write_text("出院小结：患者好转出院。", encoding="utf-8")
    (directory / "2019" / "lab.txt").write_text("血常规 正常", encoding="utf-8")
    (directory / "scan.bin").write_bytes(b"\x00\x01legacy image" * 10)
    key = tmp_path / "key"
    key.write_text(api_node.keys.issue(Role.ARCHIVIST, "backfill").secret + "\n")
    return directory, key


def _manifest_csv(path: Path) -> Path:
    path.write_text(
        "file,patient_id,class_hint,trigger_date,department,title\n"
        f"2019/discharge.txt,{PATIENT},住院,2019-04-01,cardiology,出院小结\n"
        f"2019/lab.txt,{PATIENT},LAB,2019-03-30,,\n"
        f"scan.bin,{PATIENT},IMAGING,,radiology,Old scan\n",
        encoding="utf-8",
    )
    return path


def test_import_sends_every_file_once_and_counts(
    api_node: NodeRuntime, live: str, legacy: tuple[Path, Path], tmp_path: Path
) -> None:
    directory, key = legacy
    manifest = _manifest_csv(tmp_path / "manifest.csv")
    args = ("import", str(directory), "--manifest", str(manifest), "--node", live)
    code, out, err = _run(*args, "--api-key-file", str(key))
    assert code == 0, err
    assert "imported 3, already present 0, failed 0" in out
    assert _count(api_node) == 3
    with api_node.db.session() as session:
        classes = {a.title: a.record_class for a in session.execute(select(Archive)).scalars()}
        assert all(
            a.source_system == "legacy-import" for a in session.execute(select(Archive)).scalars()
        )
    assert classes == {"出院小结": "INPATIENT", "lab.txt": "LAB", "Old scan": "IMAGING"}
    assert PATIENT not in out + err

    # Again, as JSON: the file hash is the message id, nothing is stored twice.
    as_json = tmp_path / "manifest.json"
    as_json.write_text(
        json.dumps(
            [
                {"file": "2019/lab.txt", "patient_id": PATIENT, "class_hint": "LAB"},
                {"file": "scan.bin", "patient_id": PATIENT},
            ]
        ),
        encoding="utf-8",
    )
    code, out, _ = _run(
        "import",
        str(directory),
        "--manifest",
        str(as_json),
        "--node",
        live,
        "--api-key-file",
        str(key),
    )
    assert code == 0
    assert "imported 0, already present 2, failed 0" in out
    assert _count(api_node) == 3


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("file,patient_id\n../outside.txt,P-1\n", "outside the import directory"),
        ("file,patient_id\nmissing.txt,P-1\n", "no such file"),
        ("file,patient_id\nscan.bin,\n", "patient_id is required"),
        ("file,patient_id,trigger_date\nscan.bin,P-1,01/02/2019\n", "YYYY-MM-DD"),
        ("file,patient_id,colour\nscan.bin,P-1,red\n", "unknown field"),
        ("file,patient_id\n", "lists no file"),
    ],
)
def test_bad_manifests_exit_2_with_one_line_and_send_nothing(
    api_node: NodeRuntime,
    live: str,
    legacy: tuple[Path, Path],
    tmp_path: Path,
    manifest: str,
    message: str,
) -> None:
    directory, key = legacy
    (tmp_path / "outside.txt").write_text("x")
    path = tmp_path / "bad.csv"
    path.write_text(manifest, encoding="utf-8")
    code, _, err = _run(
        "import",
        str(directory),
        "--manifest",
        str(path),
        "--node",
        live,
        "--api-key-file",
        str(key),
    )
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert _count(api_node) == 0


def test_bad_json_manifest_key_and_unreachable_node(
    api_node: NodeRuntime, live: str, legacy: tuple[Path, Path], tmp_path: Path
) -> None:
    directory, key = legacy
    bad = tmp_path / "bad.json"
    for text in ("{not json", '{"file": "scan.bin"}', "[1, 2]"):
        bad.write_text(text, encoding="utf-8")
        code, _, err = _run(
            "import",
            str(directory),
            "--manifest",
            str(bad),
            "--node",
            live,
            "--api-key-file",
            str(key),
        )
        assert code == 2, text
        assert len(err.strip().splitlines()) == 1
    good = _manifest_csv(tmp_path / "m.csv")
    wrong_key = tmp_path / "wrong"
    wrong_key.write_text("ack_not-a-real-key")
    code, _, err = _run(
        "import",
        str(directory),
        "--manifest",
        str(good),
        "--node",
        live,
        "--api-key-file",
        str(wrong_key),
    )
    assert code == 2
    assert "refused the API key" in err
    code, _, err = _run(
        "import",
        str(directory),
        "--manifest",
        str(good),
        "--node",
        f"http://127.0.0.1:{free_port()}",
        "--api-key-file",
        str(key),
    )
    assert code == 1
    assert "cannot reach the node" in err
    assert _count(api_node) == 0


def test_document_route_is_idempotent_and_refuses_bad_metadata(api: Api) -> None:
    metadata = {
        "patient_id": PATIENT,
        "source_system": "HIS",
        "message_id": "DOC-1",
        "title": "门诊病历",
        "class_hint": "门诊",
    }
    files = {"file": ("a.txt", b"visit notes", "text/plain")}
    first = api.client.post(
        "/api/v1/ingest/documents",
        files=files,
        data={"metadata": json.dumps(metadata)},
        headers=api.auth("archivist"),
    )
    assert first.status_code == 201, first.text
    assert first.json()["record_class"] == "OUTPATIENT"
    again = api.client.post(
        "/api/v1/ingest/documents",
        files=files,
        data={"metadata": json.dumps(metadata)},
        headers=api.auth("archivist"),
    )
    assert again.status_code == 200
    assert again.json() == {**first.json(), "duplicate": True}
    for bad in (
        {**metadata, "extra": 1},
        {k: v for k, v in metadata.items() if k != "patient_id"},
        {**metadata, "trigger_date": "yesterday"},
    ):
        response = api.client.post(
            "/api/v1/ingest/documents",
            files=files,
            data={"metadata": json.dumps(bad)},
            headers=api.auth("archivist"),
        )
        assert response.status_code == 422, response.text
        assert PATIENT not in response.text
    not_json = api.client.post(
        "/api/v1/ingest/documents",
        files=files,
        data={"metadata": "[" * 10_000},
        headers=api.auth("archivist"),
    )
    assert not_json.status_code == 422
    unauthenticated = api.client.post(
        "/api/v1/ingest/documents", files=files, data={"metadata": json.dumps(metadata)}
    )
    assert unauthenticated.status_code == 401
    auditor = api.client.post(
        "/api/v1/ingest/documents",
        files=files,
        data={"metadata": json.dumps({**metadata, "message_id": "DOC-2"})},
        headers=api.auth("auditor"),
    )
    assert auditor.status_code == 403


def _spy_requests(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record each request the importer sends: ("batch", files) or ("one", 1), in order."""
    import archivechain.importer as importer

    sent: list[tuple[str, int]] = []
    real_batch, real_one = importer._send_batch, importer._send_one

    def batch(client: Any, prepared: Any) -> Any:
        sent.append(("batch", len(prepared)))
        return real_batch(client, prepared)

    def one(client: Any, *item: Any) -> Any:
        sent.append(("one", 1))
        return real_one(client, *item)

    monkeypatch.setattr(importer, "_send_batch", batch)
    monkeypatch.setattr(importer, "_send_one", one)
    return sent


def _import_rows(
    live: str,
    legacy: tuple[Path, Path],
    tmp_path: Path,
    rows: list[tuple[str, bytes, str]],
    batch: int,
    parallel: int = 2,
) -> tuple[int, str, str]:
    """Write each (file name, content, patient id) into the legacy directory, list them in a
    manifest and import them ``batch`` at a time, ``parallel`` requests in flight: (exit code,
    stdout, stderr)."""
    directory, key = legacy
    lines = ["file,patient_id"]
    for name, content, patient in rows:
        (directory / name).write_bytes(content)
        lines.append(f"{name},{patient}")
    manifest = tmp_path / "rows.csv"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return _run(
        *("import", str(directory), "--manifest", str(manifest), "--node", live),
        *("--api-key-file", str(key), "--batch", str(batch), "--parallel", str(parallel)),
    )


def test_a_refused_row_in_a_batch_leaves_the_others_imported(
    api_node: NodeRuntime,
    live: str,
    legacy: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The node refuses the batch as a unit (a patient id blank once trimmed) and names the
    document; the CLI reports that one with its code and sends the two others again as one
    batch (not file by file), so they go in."""
    sent = _spy_requests(monkeypatch)
    directory, key = legacy
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "file,patient_id,class_hint\n"
        f"2019/discharge.txt,{PATIENT},住院\n"
        "2019/lab.txt,   ,LAB\n"
        f"scan.bin,{PATIENT},IMAGING\n",
        encoding="utf-8",
    )
    args = ("import", str(directory), "--manifest", str(manifest), "--node", live)
    code, out, err = _run(*args, "--api-key-file", str(key), "--batch", "10")
    assert code == 1
    assert "imported 2, already present 0, failed 1" in out
    assert err.strip().splitlines()[-1] == "failed: lab.txt: invalid_patient_id"
    assert [line for line in err.splitlines() if line.startswith("failed:")] == [
        "failed: lab.txt: invalid_patient_id"
    ]
    assert _count(api_node) == 2
    assert sent == [("batch", 3), ("batch", 2)]
    # Again with the row fixed, in batches of 2: the two already there are found, one is new.
    manifest.write_text(_manifest_csv(tmp_path / "x.csv").read_text(encoding="utf-8"))
    code, out, err = _run(*args, "--api-key-file", str(key), "--batch", "2")
    assert code == 0, err
    assert "imported 1, already present 2, failed 0" in out
    assert _count(api_node) == 3
    code, _, err = _run(*args, "--api-key-file", str(key), "--batch", "0")
    assert code == 2


@pytest.mark.parametrize(
    ("files", "bad", "sent_expected"),
    [
        # Six files, four bad: the batches name three (each resend one file shorter) and a
        # fourth, past the three a group may name and resend without; the two files left go
        # one by one.
        (6, (0, 2, 4, 5), [("batch", n) for n in (6, 5, 4, 3)] + [("one", 1)] * 2),
        # Twelve files, three bad: each is named by a batch and the nine good files go in as
        # the fourth; nothing is sent file by file.
        (12, (1, 5, 9), [("batch", n) for n in (12, 11, 10, 9)]),
    ],
)
def test_a_group_names_three_refused_rows_then_goes_file_by_file(
    api_node: NodeRuntime,
    live: str,
    legacy: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    files: int,
    bad: tuple[int, ...],
    sent_expected: list[tuple[str, int]],
) -> None:
    """Blank patient ids at the ``bad`` positions of one group: the requests sent are exactly
    ``sent_expected``; every refusal is listed once with its code, the good files go in."""
    sent = _spy_requests(monkeypatch)
    rows = [
        (f"p{n:02d}.txt", f"病程记录 {n}".encode(), "   " if n in bad else PATIENT)
        for n in range(files)
    ]
    code, out, err = _import_rows(live, legacy, tmp_path, rows, batch=files)
    assert code == 1
    assert f"imported {files - len(bad)}, already present 0, failed {len(bad)}" in out
    assert sorted(line for line in err.splitlines() if line.startswith("failed:")) == [
        f"failed: p{n:02d}.txt: invalid_patient_id" for n in bad
    ]
    assert sent == sent_expected
    assert _count(api_node) == files - len(bad)


def test_a_batch_refused_for_its_size_goes_file_by_file(
    api_node: NodeRuntime,
    live: str,
    legacy: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three files of 30,000 bytes pass the node's 64 KiB upload limit together, not alone: the
    413 is the batch's size, not one document's, so no file is reported failed; the CLI sends
    each alone and all three go in."""
    sent = _spy_requests(monkeypatch)
    rows = [(f"big{n}.bin", bytes([n]) * 30_000, PATIENT) for n in range(3)]
    code, out, err = _import_rows(live, legacy, tmp_path, rows, batch=10)
    assert code == 0, err
    assert "imported 3, already present 0, failed 0" in out
    assert sent == [("batch", 3), ("one", 1), ("one", 1), ("one", 1)]
    assert _count(api_node) == 3


def _answer(status: int, body: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"code": "invalid_patient_id", "message": "m", "details": {"index": 2}}, 2),
        (409, {"code": "quality_failed", "message": "m", "details": {"index": 0}}, 0),
        (413, {"code": "payload_too_large", "message": "m", "details": {"index": 1}}, None),
        (503, {"code": "unavailable", "message": "m", "details": {"index": 1}}, None),
        (400, {"code": "invalid_patient_id", "message": "m", "details": {"index": 3}}, None),
        (400, {"code": "invalid_patient_id", "message": "m", "details": {"index": -1}}, None),
        (400, {"code": "invalid_patient_id", "message": "m", "details": {"index": True}}, None),
        (400, {"code": "invalid_patient_id", "message": "m", "details": {"index": "1"}}, None),
        (409, {"code": "concurrent_ingest", "message": "m"}, None),
        (400, b"not json", None),
        (400, [1, 2], None),
        (
            422,
            {
                "code": "validation_error",
                "message": "m",
                "details": {"errors": [{"loc": ["body", "metadata", 1, "title"]}]},
            },
            1,
        ),
        (
            422,
            {
                "code": "validation_error",
                "message": "m",
                "details": {
                    "errors": [
                        {"loc": ["body", "metadata", 1, "title"]},
                        {"loc": ["body", "metadata", 2, "title"]},
                    ]
                },
            },
            None,
        ),
        (
            422,
            {
                "code": "validation_error",
                "message": "m",
                "details": {"errors": [{"loc": ["body", "file", 1]}]},
            },
            None,
        ),
    ],
)
def test_which_batch_refusals_name_one_document(
    status: int, body: Any, expected: int | None
) -> None:
    """A batch of three: only a 4xx other than 413 naming a position inside the batch (in
    ``details.index``, or the one ``body.metadata.<index>`` of a schema error) names the
    document; anything else sends the batch's files one by one."""
    from archivechain.importer import _refused_index

    assert _refused_index(_answer(status, body), 3) == expected


def test_parallel_requests_overlap_and_import_each_file_once(
    api_node: NodeRuntime,
    live: str,
    legacy: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--parallel 3`` keeps three batch requests in flight (seen by a spy around the real
    sender, which holds each request a moment); every file goes in once, counted once, and a
    rerun finds them all. A refused key stops a parallel import with exit 2 and one line."""
    import archivechain.importer as importer

    directory, key = legacy
    lines = ["file,patient_id,title"]
    for n in range(14):
        (directory / f"note-{n}.txt").write_text(f"病程记录 {n}", encoding="utf-8")
        lines.append(f"note-{n}.txt,{PATIENT},病程记录 {n}")
    manifest = tmp_path / "notes.csv"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    real_send_batch = importer._send_batch
    in_flight, most = 0, 0
    lock = threading.Lock()
    three_at_once = threading.Event()

    def spy(client: Any, prepared: Any) -> Any:
        nonlocal in_flight, most
        with lock:
            in_flight += 1
            most = max(most, in_flight)
            if in_flight == 3:
                three_at_once.set()
        try:
            # Held until three are in flight together (a fixed pause let a stalled host finish
            # one request before the third began); an import that never has three at once waits
            # here 10 s per request and fails below.
            three_at_once.wait(10)
            return real_send_batch(client, prepared)
        finally:
            with lock:
                in_flight -= 1

    monkeypatch.setattr(importer, "_send_batch", spy)
    args = ("import", str(directory), "--manifest", str(manifest), "--node", live)
    code, out, err = _run(*args, "--api-key-file", str(key), "--batch", "2", "--parallel", "3")
    assert code == 0, err
    assert "imported 14, already present 0, failed 0" in out
    assert most == 3
    assert _count(api_node) == 14
    with api_node.db.session() as session:
        titles = sorted(a.title for a in session.execute(select(Archive)).scalars())
    assert titles == sorted(f"病程记录 {n}" for n in range(14))
    most = 0
    code, out, err = _run(*args, "--api-key-file", str(key), "--batch", "2", "--parallel", "1")
    assert code == 0, err
    assert "imported 0, already present 14, failed 0" in out
    assert most == 1
    stranger = tmp_path / "stranger"
    stranger.write_text("ac_" + "x" * 40 + "\n")
    code, out, err = _run(*args, "--api-key-file", str(stranger), "--parallel", "4", "--batch", "2")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "refused the API key" in err
    assert _count(api_node) == 14
    code, _, err = _run(*args, "--api-key-file", str(key), "--parallel", "9")
    assert code == 2


def test_progress_line_reports_files_rate_and_eta(
    api_node: NodeRuntime, live: str, legacy: tuple[Path, Path], tmp_path: Path
) -> None:
    directory, key = legacy
    manifest = _manifest_csv(tmp_path / "manifest.csv")
    code, _, err = _run(
        "import",
        str(directory),
        "--manifest",
        str(manifest),
        "--node",
        live,
        "--api-key-file",
        str(key),
        "--batch",
        "2",
    )
    assert code == 0, err
    lines = [line for line in err.splitlines() if "files/s" in line]
    # Not a terminal: the first group's line (shown at once), then always the last one.
    assert lines[0].startswith("2/3 files (66%)")
    assert lines[-1].startswith("3/3 files (100%)")
    assert lines[-1].endswith("ETA 0:00:00")


def test_progress_line_arithmetic() -> None:
    now = [100.0]
    progress = Progress(1000, every=5.0, clock=lambda: now[0])
    assert progress.line() == "0/1,000 files (0%)  0 files/s  ETA ?"
    now[0] = 104.0
    progress.done = 200  # 50 files/s: 800 left take 16 s
    assert progress.line() == "200/1,000 files (20%)  50 files/s  ETA 0:00:16"


def test_dry_run_reads_every_file_and_sends_nothing(
    api_node: NodeRuntime, legacy: tuple[Path, Path], tmp_path: Path
) -> None:
    directory, _ = legacy
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "file,patient_id\n2019/discharge.txt,P-1\n2019/lab.txt,P-1\nscan.bin,P-1\n"
        "2019/lab.txt,P-2\n",
        encoding="utf-8",
    )
    size = sum(
        (directory / name).stat().st_size
        for name in ("2019/discharge.txt", "2019/lab.txt", "scan.bin", "2019/lab.txt")
    )
    # No --node, no key: a dry run never contacts a node.
    code, out, err = _run(
        "import", str(directory), "--manifest", str(manifest), "--dry-run", "--batch", "3"
    )
    assert code == 0, err
    assert out.strip() == (
        f"dry run: 4 files, {size:,} bytes, in 2 requests of at most 3 files; "
        "1 repeat an earlier file's content; nothing sent"
    )
    assert _count(api_node) == 0
    # A bad manifest is refused in a dry run as in a real one.
    manifest.write_text("file,patient_id\nmissing.txt,P-1\n", encoding="utf-8")
    code, _, err = _run("import", str(directory), "--manifest", str(manifest), "--dry-run")
    assert code == 2
    assert "no such file" in err
    assert len(err.strip().splitlines()) == 1


def test_a_real_import_needs_a_node_and_a_key(legacy: tuple[Path, Path], tmp_path: Path) -> None:
    directory, _ = legacy
    manifest = _manifest_csv(tmp_path / "manifest.csv")
    code, _, err = _run("import", str(directory), "--manifest", str(manifest))
    assert code == 2
    assert err.strip() == "error: --node and --api-key-file are required (unless --dry-run)"


def test_a_node_lost_midway_still_reports_what_was_done(
    api_node: NodeRuntime,
    legacy: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The node goes away after the second of four files (its server really stops): the CLI
    prints the refusal and the counts it had before the error line, and a rerun against the
    node back up sends the rest and skips what is in."""
    import archivechain.importer as importer

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(api_node), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    real_one, answered = importer._send_one, []

    def one(client: Any, *item: Any) -> Any:
        result = real_one(client, *item)
        answered.append(result)
        if len(answered) == 2:
            server.should_exit = True
            thread.join(10)
        return result

    monkeypatch.setattr(importer, "_send_one", one)
    rows = [
        ("a.txt", b"first note", PATIENT),
        ("b.txt", b"second note", "   "),  # refused by the node: blank once trimmed
        ("c.txt", b"third note", PATIENT),
        ("d.txt", b"fourth note", PATIENT),
    ]
    url = f"http://127.0.0.1:{port}"
    code, out, err = _import_rows(url, legacy, tmp_path, rows, batch=1, parallel=1)
    assert code == 1
    assert "imported 1, already present 0, failed 1 (stopped after 2 of 4 files)" in out
    assert "failed: b.txt: invalid_patient_id" in err
    assert err.strip().splitlines()[-1].endswith("cannot reach the node: ConnectError")
    assert _count(api_node) == 1
    monkeypatch.setattr(importer, "_send_one", real_one)
    with live_server(api_node) as again:
        code, out, _ = _import_rows(again, legacy, tmp_path, rows, batch=1, parallel=1)
    assert code == 1
    assert "imported 2, already present 1, failed 1" in out
    assert _count(api_node) == 3


def test_a_parallel_import_stopped_by_an_error_counts_what_the_groups_beside_it_stored(
    api_node: NodeRuntime,
    live: str,
    legacy: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--parallel 2``, one file per group: the third file's request fails to connect (it goes
    to a port nothing listens on) once the fourth, in flight beside it, is stored. The import
    stops with the connection error, and the count it prints is every file the node answered —
    the two before the failing one and the one after it — which is what the node holds (the fifth
    is never sent); a rerun imports the other two and finds those three."""
    import archivechain.importer as importer

    real_one = importer._send_one
    fourth_stored = threading.Event()

    with httpx.Client(base_url=f"http://127.0.0.1:{free_port()}") as dead:

        def one(client: Any, row: Any, content: bytes, metadata: Any) -> Any:
            if row.path.name == "c.txt":
                fourth_stored.wait(10)
                return real_one(dead, row, content, metadata)
            result = real_one(client, row, content, metadata)
            if row.path.name == "d.txt":
                fourth_stored.set()
            return result

        monkeypatch.setattr(importer, "_send_one", one)
        rows = [(f"{name}.txt", f"病程记录 {name}".encode(), PATIENT) for name in "abcde"]
        code, out, err = _import_rows(live, legacy, tmp_path, rows, batch=1, parallel=2)
    assert fourth_stored.is_set()
    assert code == 1
    assert "imported 3, already present 0, failed 0 (stopped after 3 of 5 files)" in out
    assert err.strip().splitlines()[-1].endswith("cannot reach the node: ConnectError")
    assert _count(api_node) == 3
    monkeypatch.setattr(importer, "_send_one", real_one)
    code, out, err = _import_rows(live, legacy, tmp_path, rows, batch=1, parallel=2)
    assert code == 0, err
    assert "imported 2, already present 3, failed 0" in out
    assert _count(api_node) == 5


def test_a_group_stopped_while_going_file_by_file_counts_the_files_it_sent(
    api_node: NodeRuntime,
    live: str,
    legacy: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One group of three 30,000-byte files is refused for its size (413) and goes file by file:
    the first goes in, the node refuses the second (a blank patient id), the third's request
    fails to connect. The import stops with that error, but the two answers the group had are
    counted and the refusal is listed."""
    import archivechain.importer as importer

    sent = _spy_requests(monkeypatch)
    spied_one = importer._send_one

    with httpx.Client(base_url=f"http://127.0.0.1:{free_port()}") as dead:

        def one(client: Any, row: Any, content: bytes, metadata: Any) -> Any:
            target = dead if row.path.name == "big2.bin" else client
            return spied_one(target, row, content, metadata)

        monkeypatch.setattr(importer, "_send_one", one)
        rows = [
            ("big0.bin", b"\x00" * 30_000, PATIENT),
            ("big1.bin", b"\x01" * 30_000, "   "),
            ("big2.bin", b"\x02" * 30_000, PATIENT),
        ]
        code, out, err = _import_rows(live, legacy, tmp_path, rows, batch=10)
    assert sent == [("batch", 3), ("one", 1), ("one", 1), ("one", 1)]
    assert code == 1
    assert "imported 1, already present 0, failed 1 (stopped after 2 of 3 files)" in out
    assert "failed: big1.bin: invalid_patient_id" in err
    assert err.strip().splitlines()[-1].endswith("cannot reach the node: ConnectError")
    assert _count(api_node) == 1

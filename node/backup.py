"""Online backup of a hospital node and a restore that proves itself before the node serves.

A backup (``create_backup``) is one tar file, written while the node runs::

    manifest.json          format, time, hospital, database kind, log size and root, the latest
                           confirmed checkpoint, the SHA-256 of every other member, the blob list
    database/node.db       SQLite: a consistent copy through SQLite's online backup API
    database/node.pgdump   PostgreSQL: ``pg_dump --format=custom`` of the same snapshot the
                           manifest facts were read in (``pg_export_snapshot``)
    files/<name>           the keystore (still encrypted), the deployment file and every file of
                           ``DATA_DIR_FILES`` found in the data directory
    blobs/<cid>            with ``include_blobs``: each blob the database references (content
                           addressed, verified by its SHA-256 on restore)

``restore_backup`` unpacks one into an empty data directory, leaves ``RESTORE_MARKER`` there (the
node refuses to start while it exists), then ``verify_node_data`` checks, before the marker goes:
every archive's event hash chain, the log's leaves and root against every checkpoint the chain
holds for this hospital, and every blob against its hash. A backup older than the chain's latest
checkpoint is refused with the count of events lost (acknowledged, anchored, not in the backup).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, Final

from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from node.config import NodeSettings
from node.errors import ConfigError, ConflictError, InputError, NodeError

__all__ = [
    "BACKUP_FORMAT",
    "DATA_DIR_FILES",
    "RESTORE_MARKER",
    "BackupError",
    "BackupFormatError",
    "BackupResult",
    "LostEventsError",
    "RestoreRefusedError",
    "VerificationError",
    "VerificationReport",
    "create_backup",
    "refuse_unverified_restore",
    "restore_backup",
    "verify_node_data",
]

BACKUP_FORMAT: Final = "archivechain.backup/v1"
RESTORE_MARKER: Final = "RESTORE_UNVERIFIED"
"""Present in a data directory restored but not (yet, or not successfully) verified."""

DATA_DIR_FILES: Final[tuple[str, ...]] = ("*.toml", "*.json", "tombstones.jsonl")
"""THE list of data-directory files (glob patterns, top level) a backup carries besides the
database, the keystore, the deployment file and the blobs: settings, deployment and the retention
issue's destruction ledger (``tombstones.jsonl`` when ``tombstone_file`` stays in the data directory;
the node replays whatever ledger its settings name at every start). A feature that keeps state in
a file of the data directory adds its name here;
``create_backup`` warns about every file of the data directory it neither carries nor knows to be
derived (``NOT_BACKED_UP``), so a forgotten one is seen at the first backup."""

NOT_BACKED_UP: Final[tuple[str, ...]] = (
    "node.db",  # carried as database/node.db (online copy), never as a raw file
    "node.db-wal",
    "node.db-shm",
    "node.db-journal",
    "node.pid",
    "*.log",
    "blobs",  # carried as blobs/<cid> with include_blobs
    "replicas",  # other hospitals' ciphertext: its custodians re-place what a holder loses
    RESTORE_MARKER,
)
"""Data-directory entries a backup deliberately does not copy as files."""

_KEYSTORE: Final = "files/keystore.json"
_DEPLOYMENT: Final = "files/deployment.json"
_SQLITE: Final = "database/node.db"
_PGDUMP: Final = "database/node.pgdump"
_MAX_PROBLEMS: Final = 50


class BackupError(NodeError):
    """Root of backup and restore errors."""

    code = "backup_error"


class BackupFormatError(BackupError, InputError):
    """The file is not a backup, is damaged, or holds a member it must not."""

    code = "backup_malformed"


class BackupOutputError(BackupError, InputError):
    """The backup file cannot be written where ``--out`` says (permissions, a full disk)."""

    code = "backup_output"


class RestoreRefusedError(BackupError, ConflictError):
    """The restore cannot proceed (target not empty, database not empty, missing tool)."""

    code = "restore_refused"


class VerificationError(BackupError):
    """The restored data does not prove itself: ``problems`` says what is wrong."""

    code = "restore_unverified"

    def __init__(self, problems: list[str], report: VerificationReport) -> None:
        shown = problems[:_MAX_PROBLEMS]
        more = len(problems) - len(shown)
        message = "restored data failed verification:\n  " + "\n  ".join(shown)
        if more:
            message += f"\n  … and {more} more"
        super().__init__(message)
        self.problems = problems
        self.report = report


class LostEventsError(VerificationError):
    """The backup is older than the chain's latest checkpoint of this hospital's log."""

    code = "restore_lost_events"

    def __init__(self, problems: list[str], report: VerificationReport, lost: int) -> None:
        super().__init__(problems, report)
        self.lost = lost


@dataclass(frozen=True, slots=True)
class BackupResult:
    """What ``create_backup`` wrote."""

    path: Path
    log_size: int
    anchored_size: int
    archives: int
    blobs_listed: int
    blobs_included: int
    files: tuple[str, ...]
    warnings: tuple[str, ...]


@dataclass(slots=True)
class VerificationReport:
    """What ``verify_node_data`` checked."""

    hospital: str = ""
    log_size: int = 0
    archives: int = 0
    chain_checkpoints: int = 0
    chain_size: int = 0
    blobs: int = 0
    lost_events: int = 0
    problems: list[str] = field(default_factory=list)


# -- helpers --------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite"):
        return None
    if not parsed.database:
        raise ConfigError("an in-memory SQLite database cannot be backed up")
    return Path(parsed.database)


def _libpq(url: str) -> tuple[str, dict[str, str], str | None]:
    """(libpq URL without password, environment with PGPASSWORD, schema from search_path)."""
    parsed = make_url(url)
    env = dict(os.environ)
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    options = parsed.query.get("options")
    schema = None
    if isinstance(options, str) and options.startswith("-csearch_path="):
        schema = options.removeprefix("-csearch_path=").split(",")[0]
    plain = parsed.set(drivername="postgresql", password=None, query={})
    return plain.render_as_string(hide_password=False), env, schema


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


@dataclass(slots=True)
class _Facts:
    hospital: str
    log_size: int
    log_root: str
    anchored_size: int
    archives: int
    blobs: list[dict[str, Any]]


def _read_facts(session: Session, hospital: str) -> _Facts:
    from anchoring import storage
    from node.models import Archive, ArchiveVersion

    head = storage.current_head(session)
    blobs = [
        {"cid": cid, "sha256": sha, "size": int(size)}
        for cid, sha, size in session.execute(
            select(ArchiveVersion.cid, ArchiveVersion.ciphertext_sha256, ArchiveVersion.stored_size)
            .where(ArchiveVersion.blob_deleted_at.is_(None))
            .order_by(ArchiveVersion.id)
        )
    ]
    unique = list({blob["cid"]: blob for blob in blobs}.values())
    archives = len(session.execute(select(Archive.id)).scalars().all())
    return _Facts(
        hospital=hospital,
        log_size=head.size,
        log_root=head.root.hex(),
        anchored_size=storage.anchored_size(session),
        archives=archives,
        blobs=unique,
    )


# -- backup ---------------------------------------------------------------------------------------


def create_backup(
    settings: NodeSettings,
    out: Path,
    *,
    include_blobs: bool = False,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BackupResult:
    """Write a backup of the node described by ``settings`` to ``out`` (the node may be running)."""
    from node.keystore import Keystore

    keystore_path = settings.resolved_keystore_path
    hospital = Keystore.read_public_info(keystore_path).address
    url = settings.resolved_database_url
    out = out.resolve()
    if out.exists():
        raise RestoreRefusedError(f"{out} exists; a backup never overwrites a file")
    warnings: list[str] = []
    created = _missing_directories(out.parent)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(out.parent, warnings, now())
        with tempfile.TemporaryDirectory(prefix=".backup-", dir=out.parent) as tmp_name:
            tmp = Path(tmp_name)
            members: dict[str, Path] = {}
            sqlite_file = _sqlite_path(url)
            if sqlite_file is not None:
                if not sqlite_file.exists():
                    raise ConfigError(f"no database at {sqlite_file}")
                copy = tmp / "node.db"
                source = sqlite3.connect(f"file:{sqlite_file}?mode=ro", uri=True)
                target = sqlite3.connect(copy)
                try:
                    with target:
                        source.backup(target)  # the online backup API: a consistent snapshot
                finally:
                    source.close()
                    target.close()
                engine = create_engine(f"sqlite:///{copy}")
                try:
                    with Session(engine) as session:
                        facts = _read_facts(session, hospital)
                finally:
                    engine.dispose()
                members[_SQLITE] = copy
                database_kind = "sqlite"
            else:
                facts = _pg_dump(url, tmp / "node.pgdump", hospital)
                members[_PGDUMP] = tmp / "node.pgdump"
                database_kind = "postgresql"
            members[_KEYSTORE] = keystore_path
            deployment = settings.resolved_deployment_file
            if deployment.exists():
                members[_DEPLOYMENT] = deployment
            else:
                warnings.append(f"no deployment file at {deployment}")
            carried = {keystore_path.resolve(), deployment.resolve()}
            if settings.data_dir.is_dir():
                for entry in sorted(settings.data_dir.iterdir()):
                    if entry.resolve() in carried or _matches(entry.name, NOT_BACKED_UP):
                        continue
                    if entry.is_file() and _matches(entry.name, DATA_DIR_FILES):
                        members[f"files/{entry.name}"] = entry
                    else:
                        warnings.append(
                            f"not backed up: {entry.name} (add it to node.backup.DATA_DIR_FILES "
                            "if the node needs it)"
                        )
            blob_files: dict[str, Path] = {}
            if include_blobs:
                blob_files = _blob_files(settings, facts.blobs, warnings)
            hashed = {name: _sha256_file(path) for name, path in members.items()}
            manifest = {
                "format": BACKUP_FORMAT,
                "created_at": now().isoformat(),
                "hospital": hospital,
                "node": settings.name,
                "database": database_kind,
                "log_size": facts.log_size,
                "log_root": facts.log_root,
                "anchored_size": facts.anchored_size,
                "archives": facts.archives,
                "files": hashed,
                "blobs": facts.blobs,
                "blobs_included": sorted(blob_files),
                "data_dir_files": list(DATA_DIR_FILES),
            }
            partial = tmp / "backup.tar"
            with tarfile.open(partial, "w") as tar:
                raw = json.dumps(manifest, indent=2, sort_keys=True).encode()
                info = tarfile.TarInfo("manifest.json")
                info.size, info.mode, info.mtime = len(raw), 0o600, int(now().timestamp())
                tar.addfile(info, io.BytesIO(raw))
                for name, path in [
                    *members.items(),
                    *((f"blobs/{c}", p) for c, p in blob_files.items()),
                ]:
                    tar.add(path, arcname=name, recursive=False)
            os.chmod(partial, 0o600)
            os.replace(partial, out)
    except OSError as exc:
        _remove_directories(created)
        if not _writing(exc, out.parent):
            raise
        raise BackupOutputError(f"cannot write {out}: {exc.strerror or exc}") from None
    except BaseException:
        _remove_directories(created)
        raise
    return BackupResult(
        path=out,
        log_size=facts.log_size,
        anchored_size=facts.anchored_size,
        archives=facts.archives,
        blobs_listed=len(facts.blobs),
        blobs_included=len(blob_files),
        files=tuple(sorted(members)),
        warnings=tuple(warnings),
    )


STALE_TEMPORARY_SECONDS: Final = 3600
"""A ``.backup-*`` directory next to ``--out`` untouched this long is what a killed backup left
(a full copy of the database): the next backup removes it, and says so."""


def _missing_directories(directory: Path) -> list[Path]:
    """``directory`` and those of its ancestors that do not exist yet, deepest first."""
    missing: list[Path] = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    return missing


def _remove_directories(directories: list[Path]) -> None:
    for directory in directories:  # deepest first; only those this backup created
        with contextlib.suppress(OSError):
            directory.rmdir()


def _writing(exc: OSError, directory: Path) -> bool:
    """Whether ``exc`` is a failure to write the output (rather than to read what is backed up):
    no file name (a write to an open file, e.g. a full disk) or one in ``directory``."""
    if exc.filename is None:
        return True
    try:
        return Path(os.fsdecode(exc.filename)).resolve().is_relative_to(directory)
    except (OSError, ValueError):
        return False


def _remove_stale_temporaries(directory: Path, warnings: list[str], now: datetime) -> None:
    """Remove the ``.backup-*`` directories in ``directory`` that a killed backup left: nothing in
    them written for ``STALE_TEMPORARY_SECONDS`` (a running backup keeps writing its file)."""
    for entry in sorted(directory.glob(".backup-*")):
        try:
            if not entry.is_dir() or entry.is_symlink():
                continue
            latest = max([entry.stat().st_mtime, *(p.lstat().st_mtime for p in entry.iterdir())])
        except OSError:
            continue
        if now.timestamp() - latest < STALE_TEMPORARY_SECONDS:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        warnings.append(f"removed {entry}, left by an interrupted backup")


def _blob_files(
    settings: NodeSettings, blobs: list[dict[str, Any]], warnings: list[str]
) -> dict[str, Path]:
    if settings.blob_store != "local":
        raise ConfigError(
            "--with-blobs copies the local blob store; with IPFS, the pinned replicas are the "
            "blob backup (the manifest still lists every blob and its hash)"
        )
    from node.blobstore.base import BlobNotFoundError
    from node.blobstore.local import LocalBlobStore

    store = LocalBlobStore(settings.blob_dir)
    found: dict[str, Path] = {}
    for blob in blobs:
        try:
            path = store.path_of(blob["cid"])
        except BlobNotFoundError:  # an IPFS cold tier's id: not a file of this store
            warnings.append(f"blob {blob['cid']} is in the IPFS cold tier, not copied")
            continue
        if path.is_file():
            found[blob["cid"]] = path
        else:
            warnings.append(f"blob {blob['cid']} is referenced but missing from the store")
    return found


def _pg_dump(url: str, out: Path, hospital: str) -> _Facts:
    """``pg_dump`` of the snapshot the facts are read in (exported, so both see the same data)."""
    if shutil.which("pg_dump") is None:
        raise RestoreRefusedError("pg_dump is not installed; it is needed to back up PostgreSQL")
    libpq, env, schema = _libpq(url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"))
            snapshot = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
            with Session(bind=conn) as session:
                facts = _read_facts(session, hospital)
            command = ["pg_dump", "--format=custom", "--no-owner", "--no-privileges",
                       f"--snapshot={snapshot}", f"--file={out}"]  # fmt: skip
            if schema:
                command.append(f"--schema={schema}")
            result = subprocess.run(
                [*command, libpq], env=env, capture_output=True, text=True, check=False
            )
            conn.execute(text("COMMIT"))
    finally:
        engine.dispose()
    if result.returncode != 0:
        raise BackupError(f"pg_dump failed: {result.stderr.strip()[:500]}")
    return facts


# -- restore --------------------------------------------------------------------------------------


def _safe_members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    for member in tar.getmembers():
        name = PurePosixPath(member.name)
        if (
            not member.isfile()
            or name.is_absolute()
            or ".." in name.parts
            or not (
                member.name == "manifest.json"
                or member.name in (_SQLITE, _PGDUMP)
                or (len(name.parts) == 2 and name.parts[0] in ("files", "blobs"))
            )
        ):
            raise BackupFormatError(f"the backup holds an unexpected member: {member.name!r}")
        yield member


def _read_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    try:
        handle = tar.extractfile("manifest.json")
    except KeyError:
        raise BackupFormatError("not an archivechain backup (no manifest.json)") from None
    if handle is None:
        raise BackupFormatError("not an archivechain backup (manifest.json is not a file)")
    try:
        manifest = json.loads(handle.read(1 << 24))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BackupFormatError("the backup's manifest is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != BACKUP_FORMAT:
        raise BackupFormatError(f"not an {BACKUP_FORMAT} backup")
    return manifest


def restore_backup(
    backup: Path,
    settings: NodeSettings,
    *,
    blobs_from: Path | None = None,
    reader: Any = None,
) -> VerificationReport:
    """Unpack ``backup`` into the (empty) data directory of ``settings``, then verify it.

    Raises ``VerificationError`` (or ``LostEventsError``) if the restored data does not prove
    itself; the data directory then keeps ``RESTORE_MARKER`` and the node refuses to start."""
    data_dir = settings.data_dir
    if data_dir.exists() and any(data_dir.iterdir()):
        raise RestoreRefusedError(f"{data_dir} is not empty; restore only into a fresh directory")
    try:
        tar = tarfile.open(backup, "r:*")  # noqa: SIM115 - closed by the with below
    except tarfile.ReadError:  # its message lists each compression tried, one line each
        raise BackupFormatError(
            f"cannot read backup {backup}: not a tar file (plain, gzip, bzip2 or xz)"
        ) from None
    except tarfile.TarError as exc:
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise BackupFormatError(f"cannot read backup {backup}: {reason}") from None
    except OSError as exc:
        raise BackupFormatError(f"cannot read backup {backup}: {exc.strerror or exc}") from None
    with tar:
        manifest = _read_manifest(tar)
        members = list(_safe_members(tar))
        data_dir.mkdir(parents=True, exist_ok=True)
        marker = data_dir / RESTORE_MARKER
        marker.write_text(f"restore of {backup.name} started {datetime.now(UTC).isoformat()}\n")
        with tempfile.TemporaryDirectory(prefix=".restore-", dir=data_dir) as tmp_name:
            tmp = Path(tmp_name)
            for member in members:
                if member.name != "manifest.json":
                    _extract(tar, member, tmp)
            _check_hashes(tmp, manifest)
            _place(tmp, manifest, settings, blobs_from)
    report = verify_node_data(settings, reader=reader)
    marker.unlink()
    return report


def _extract(tar: tarfile.TarFile, member: tarfile.TarInfo, tmp: Path) -> None:
    """Extract one member (already checked by ``_safe_members``: a plain file under an expected
    name) into ``tmp``. Python before 3.11.4 (Debian 12's 3.11.2, in the node's image) has no
    extraction filters, and ``filter=`` raises TypeError there: extract without it."""
    if hasattr(tarfile, "data_filter"):
        tar.extract(member, tmp, filter="data")
    else:
        tar.extract(member, tmp)


def _check_hashes(tmp: Path, manifest: dict[str, Any]) -> None:
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise BackupFormatError("the backup's manifest lists no files")
    for name, expected in files.items():
        path = tmp / name
        if not path.is_file():
            raise BackupFormatError(f"the backup lacks {name}, which its manifest lists")
        if _sha256_file(path) != expected:
            raise BackupFormatError(f"{name} in the backup does not match its SHA-256: damaged")
    for path in tmp.rglob("*"):
        relative = path.relative_to(tmp).as_posix()
        if path.is_file() and not relative.startswith("blobs/") and relative not in files:
            raise BackupFormatError(
                f"the backup holds {relative}, which its manifest does not list"
            )


def _place(
    tmp: Path, manifest: dict[str, Any], settings: NodeSettings, blobs_from: Path | None
) -> None:
    url = settings.resolved_database_url
    sqlite_file = _sqlite_path(url)
    if manifest.get("database") == "sqlite":
        if sqlite_file is None:
            raise RestoreRefusedError("this backup holds a SQLite database; configure no "
                                      "database_url (or a sqlite one) to restore it")  # fmt: skip
        if sqlite_file.exists():
            raise RestoreRefusedError(f"{sqlite_file} exists; refusing to overwrite a database")
        sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(tmp / _SQLITE, sqlite_file)
    elif manifest.get("database") == "postgresql":
        if sqlite_file is not None:
            raise RestoreRefusedError(
                "this backup holds a PostgreSQL dump; set database_url to an empty PostgreSQL "
                "database to restore it"
            )
        _pg_restore(url, tmp / _PGDUMP)
    else:
        raise BackupFormatError("the backup's manifest names no known database kind")
    keystore = settings.resolved_keystore_path
    for name, target in ((_KEYSTORE, keystore), (_DEPLOYMENT, settings.resolved_deployment_file)):
        source = tmp / name
        if not source.exists():
            continue
        if target.exists():
            if _sha256_file(target) != _sha256_file(source):
                raise RestoreRefusedError(f"{target} exists and differs from the backup's copy")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(source, target)
        os.chmod(target, 0o600)
    for source in sorted((tmp / "files").glob("*")):
        target = settings.data_dir / source.name
        if not target.exists():
            shutil.move(source, target)
    _place_blobs(tmp / "blobs", manifest, settings, blobs_from)


def _place_blobs(
    extracted: Path, manifest: dict[str, Any], settings: NodeSettings, blobs_from: Path | None
) -> None:
    if settings.blob_store != "local":
        return  # IPFS: blobs come from the pinned replicas, checked by verify_node_data
    from node.blobstore.local import LocalBlobStore

    store = LocalBlobStore(settings.blob_dir)
    other = LocalBlobStore(blobs_from) if blobs_from is not None else None
    for blob in manifest.get("blobs", []):
        cid = str(blob["cid"])
        target = store.path_of(cid)
        if target.exists():
            continue
        candidates = [extracted / cid]
        if other is not None:
            candidates.append(other.path_of(cid))
        for candidate in candidates:
            if candidate.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(candidate, target)
                break


def _pg_restore(url: str, dump: Path) -> None:
    if shutil.which("pg_restore") is None:
        raise RestoreRefusedError("pg_restore is not installed; it is needed to restore PostgreSQL")
    libpq, env, schema = _libpq(url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                text(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_schema = coalesce(:schema, current_schema())"
                ),
                {"schema": schema},
            ).scalar_one()
    finally:
        engine.dispose()
    if tables:
        raise RestoreRefusedError("the target PostgreSQL database is not empty")
    command = ["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error",
               f"--dbname={libpq}", str(dump)]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BackupError(f"pg_restore failed: {result.stderr.strip()[:500]}")


# -- verification ---------------------------------------------------------------------------------


class _Frontier:
    """The right frontier of an RFC 6962 tree being built leaf by leaf: the root at any size."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, bytes]] = []  # (height, hash) of perfect subtrees
        self.size = 0

    def add(self, leaf: bytes) -> None:
        from anchoring import merkle

        height, current = 0, leaf
        while self.stack and self.stack[-1][0] == height:
            _, left = self.stack.pop()
            current = merkle.node_hash(left, current)
            height += 1
        self.stack.append((height, current))
        self.size += 1

    def root(self) -> bytes:
        from anchoring import merkle

        return merkle.hash_from_subtrees([h for _, h in self.stack])


def _chain_checkpoints(settings: NodeSettings, hospital: str, reader: Any) -> list[Any]:
    from anchoring.deployment import Deployment
    from anchoring.rpcview import NotaryReader

    if reader is None:
        deployment = Deployment.load(settings.resolved_deployment_file)
        reader = NotaryReader(settings.rpc_url, deployment.notary.address)
    count = reader.checkpoint_count(hospital)
    return [reader.checkpoint_at(hospital, index) for index in range(count)]


def verify_node_data(settings: NodeSettings, *, reader: Any = None) -> VerificationReport:
    """Check a node's data before it serves: the log against every on-chain checkpoint of this
    hospital, every archive's event hash chain, every blob against its hash.

    Raises ``LostEventsError`` when the chain holds checkpoints beyond the log (events lost),
    ``VerificationError`` for any other mismatch. ``reader`` is a ``ChainReader`` (default: the
    notary of the deployment file over ``settings.rpc_url``)."""
    from node import migrations
    from node.db import Database
    from node.keystore import Keystore

    report = VerificationReport()
    report.hospital = Keystore.read_public_info(settings.resolved_keystore_path).address
    checkpoints = _chain_checkpoints(settings, report.hospital, reader)
    report.chain_checkpoints = len(checkpoints)
    report.chain_size = max((c.size for c in checkpoints), default=0)
    url = settings.resolved_database_url
    migrations.upgrade(url)
    db = Database.connect(url)
    try:
        with db.session() as session:
            _verify_log(session, report, checkpoints)
            _verify_archives(session, report)
            _verify_search_terms(session, report)
            _verify_blobs(session, settings, report)
    finally:
        db.dispose()
    if report.lost_events:
        raise LostEventsError(report.problems, report, report.lost_events)
    if report.problems:
        raise VerificationError(report.problems, report)
    return report


def _verify_log(session: Session, report: VerificationReport, checkpoints: list[Any]) -> None:
    from anchoring import merkle, storage
    from anchoring.errors import AnchoringError
    from anchoring.events import parse_event

    by_size: dict[int, list[Any]] = {}
    for checkpoint in checkpoints:
        by_size.setdefault(checkpoint.size, []).append(checkpoint)
    frontier = _Frontier()
    problems = report.problems
    rows = session.execute(
        select(storage.LogEntry.index, storage.LogEntry.event).order_by(storage.LogEntry.index)
    ).yield_per(2000)
    for index, raw in rows:
        if index != frontier.size:
            problems.append(f"log: entry {frontier.size} is missing (next stored is {index})")
            break
        try:
            event = parse_event(bytes(raw))
        except AnchoringError as exc:
            problems.append(f"log: entry {index} is not a valid event ({exc})")
        else:
            if event.log_index != index or event.hospital != report.hospital:
                problems.append(f"log: entry {index} names log index {event.log_index} of "
                                f"{event.hospital}")  # fmt: skip
        frontier.add(merkle.leaf_hash(bytes(raw)))
        for checkpoint in by_size.get(frontier.size, []):
            if frontier.root() != checkpoint.root:
                problems.append(
                    f"log: the root of the first {checkpoint.size} events differs from on-chain "
                    f"checkpoint #{checkpoint.index}"
                )
    report.log_size = frontier.size
    head = storage.current_head(session)
    if head.size != frontier.size or (frontier.size and head.root != frontier.root()):
        problems.append(
            f"log: the stored tree head (size {head.size}) does not match the stored events "
            f"(size {frontier.size})"
        )
    if report.chain_size > frontier.size:
        report.lost_events = report.chain_size - frontier.size
        problems.insert(
            0,
            f"LOST EVENTS: the chain holds a checkpoint of {report.chain_size} events of this "
            f"hospital's log, the backup only {frontier.size}: {report.lost_events} events "
            "acknowledged and anchored after this backup are lost (see docs/deployment.md, "
            "restoring an old backup)",
        )


def _verify_archives(session: Session, report: VerificationReport) -> None:
    from anchoring import lifecycle, storage
    from anchoring.errors import AnchoringError
    from anchoring.events import parse_event
    from node.models import Archive, ForeignEntry

    for archive in session.execute(select(Archive).order_by(Archive.id)).scalars():
        report.archives += 1
        foreign = session.execute(
            select(ForeignEntry.event)
            .where(ForeignEntry.archive_id == archive.id)
            .order_by(ForeignEntry.position)
        ).scalars()
        own = [entry.event for entry in storage.entries_for_archive(session, archive.id)]
        try:
            state = lifecycle.replay(parse_event(bytes(raw)) for raw in (*foreign, *own))
        except AnchoringError as exc:
            report.problems.append(f"archive {archive.id}: its event chain is broken ({exc})")
            continue
        if bytes.fromhex(state.head) != archive.last_event_hash:
            report.problems.append(
                f"archive {archive.id}: the catalogue's last event is not the head of its chain"
            )


_SEARCH_TERM_PROBLEMS: Final = {
    "missing": "without an archive row",
    "department": "filed under another department than the archive's",
    "destroyed": "left after the archive's destruction (PHI that should have been erased)",
}
_ARCHIVES_NAMED: Final = 20
"""At most this many archives are named per kind of keyword-index problem."""


def _verify_search_terms(session: Session, report: VerificationReport) -> None:
    """The keyword index against the catalogue, in one pass: every term's archive row exists
    (no foreign key enforces it, migration 0018), has the term's department, and is not
    destroyed. Archives are named, never terms (they hold fragments of PHI)."""
    from node.models import CatalogueState

    rows = session.execute(
        text(
            "SELECT t.archive_id, CASE WHEN a.id IS NULL THEN 'missing' "
            "WHEN a.state = :destroyed THEN 'destroyed' ELSE 'department' END AS problem, "
            "count(*) FROM search_terms t LEFT JOIN archives a ON a.id = t.archive_id "
            "WHERE a.id IS NULL OR a.state = :destroyed OR a.department <> t.department "
            "GROUP BY t.archive_id, problem ORDER BY problem, t.archive_id"
        ),
        {"destroyed": CatalogueState.DESTROYED.value},
    ).tuples()
    found: dict[str, list[tuple[str, int]]] = {}
    for archive_id, problem, terms in rows:
        found.setdefault(problem, []).append((archive_id, terms))
    for problem, archives in found.items():
        for archive_id, terms in archives[:_ARCHIVES_NAMED]:
            report.problems.append(
                f"search index: archive {archive_id}: {terms} term(s) "
                f"{_SEARCH_TERM_PROBLEMS[problem]}"
            )
        if len(archives) > _ARCHIVES_NAMED:
            report.problems.append(
                f"search index: {len(archives) - _ARCHIVES_NAMED} more archive(s) with term(s) "
                f"{_SEARCH_TERM_PROBLEMS[problem]}"
            )


def _verify_blobs(session: Session, settings: NodeSettings, report: VerificationReport) -> None:
    from node.blobstore import open_node_blob_store
    from node.blobstore.base import BlobNotFoundError, BlobRef, BlobStoreError
    from node.models import NOT_HELD, Archive, ArchiveVersion, CatalogueState

    store = open_node_blob_store(settings)  # both tiers
    try:
        seen: set[str] = set()
        # Only archives this node holds: a destroyed or transferred one's ciphertext is gone
        # legitimately (even when a catalogue rebuilt from peers did not mark it deleted).
        not_held = sorted({*NOT_HELD, CatalogueState.DESTROYED})
        versions = session.execute(
            select(ArchiveVersion)
            .join(Archive, Archive.id == ArchiveVersion.archive_id)
            .where(ArchiveVersion.blob_deleted_at.is_(None), Archive.state.not_in(not_held))
        ).scalars()
        for version in versions:
            if version.cid in seen:
                continue
            seen.add(version.cid)
            report.blobs += 1
            ref = BlobRef(version.cid, version.stored_size, version.ciphertext_sha256)
            try:
                store.verify(ref)
            except BlobNotFoundError:
                report.problems.append(
                    f"blob {version.cid} (archive {version.archive_id}) is missing"
                )
            except BlobStoreError as exc:
                report.problems.append(f"blob {version.cid} (archive {version.archive_id}): {exc}")
    finally:
        store.close()


def refuse_unverified_restore(data_dir: Path) -> None:
    """Raise ``ConfigError`` if ``data_dir`` holds a restore that was not verified."""
    marker = data_dir / RESTORE_MARKER
    if marker.exists():
        raise ConfigError(
            f"{data_dir} was restored from a backup that has not passed verification "
            f"({RESTORE_MARKER} is present); run `archivechain restore --verify-only "
            f"--data-dir {data_dir}` and fix what it reports before starting the node"
        )

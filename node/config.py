"""Node configuration: a TOML file plus ``ARCHIVECHAIN_*`` environment variables (env wins).

The configuration fails closed: the default mode is ``production``, in which the node refuses to
start with a missing or insecure keystore passphrase, a dev chain key, or an unauthenticated setup.
``dev`` mode (what ``archivechain up`` uses) may generate keys and use the documented dev passphrase.

Data directory layout (``data_dir``)::

    node.toml        this file (optional; written by ``archivechain up``)
    keystore.json    encrypted keys (hospital Ethereum key, encryption key, KEKs, pseudonym secret)
    node.db          SQLite database (unless ``database_url`` points elsewhere)
    blobs/           local content-addressed store (unless ``blob_store = "ipfs"``)
    tombstones.jsonl destroyed archives, replayed at every start (unless ``tombstone_file``)
    node.log         log file when started in the background
    RESTORE_UNVERIFIED  present after ``archivechain restore`` until verification passed; the
                     node refuses to start while it exists (``node.backup``)

A new file here that the node needs must be added to ``node.backup.DATA_DIR_FILES``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from node.classification import ClassificationRules
from node.db import DEFAULT_SQLITE_CACHE_MIB
from node.errors import ConfigError
from node.policy import PolicyRule, default_policy
from node.retention import DEFAULT_RETENTION_YEARS, check_retention_years

DEFAULT_MEDIA_TYPES = (
    "application/pdf",
    "application/json",
    "application/fhir+json",
    "application/dicom",
    "application/xml",
    "application/hl7-v2",
    "text/plain",
    "text/csv",
    "image/jpeg",
    "image/png",
    "image/tiff",
    "application/octet-stream",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
)


DEFAULT_ARCHIVING_DAYS: dict[str, int] = {c: 7 for c in DEFAULT_RETENTION_YEARS}
"""Days from creation within which a record counts as archived on time (归档率), per class."""


class WebhookTarget(BaseModel):
    """Where alerts are POSTed: each body is signed with HMAC-SHA256 under ``secret``."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=512)
    secret: SecretStr = Field(min_length=16)
    min_severity: Literal["info", "warning", "critical"] = "warning"


MAX_PUBLIC_URL = 208
"""Longest ``public_url``: a QR label's text, ``{public_url}/v/{26-character id}?c={16 hex}``,
is stored in ``tags.label`` (256 characters)."""

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "ip6-localhost"})


def ipfs_endpoint(api: str) -> tuple[str, str]:
    """(host, port) of an IPFS HTTP RPC address given as a multiaddr
    (``/ip4/127.0.0.1/tcp/5001/http``, ``/dns/ipfs/tcp/5001``) or a URL (``http://host:5001``),
    loopback names folded together: two settings name the same daemon when these are equal."""
    text = api.strip()
    if text.startswith("/"):
        parts = text.split("/")
        host, port = (parts[2], parts[4]) if len(parts) > 4 and parts[3] == "tcp" else (text, "")
    else:
        url = urlsplit(text if "//" in text else f"http://{text}")
        host, port = url.hostname or text, str(url.port or "")
    host = host.lower().strip("[]")
    return ("loopback" if host in _LOOPBACK_NAMES else host), port


class NodeSettings(BaseSettings):
    """Everything a hospital node needs to run."""

    model_config = SettingsConfigDict(
        env_prefix="ARCHIVECHAIN_", extra="forbid", validate_default=True
    )

    mode: Literal["dev", "production"] = "production"
    name: str = Field("hospital", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    data_dir: Path = Path("data/node")

    database_url: str | None = None
    sqlite_cache_mib: int = Field(DEFAULT_SQLITE_CACHE_MIB, ge=1, le=4096)
    """SQLite only: each connection's page cache in MiB (filled as pages are read)."""
    blob_store: Literal["local", "ipfs"] = "local"
    ipfs_api: str = "/ip4/127.0.0.1/tcp/5001/http"

    rpc_url: str = "http://127.0.0.1:8545"
    deployment_file: Path | None = None

    keystore_path: Path | None = None
    keystore_passphrase: SecretStr | None = None
    keystore_passphrase_file: Path | None = None

    host: str = "127.0.0.1"
    port: int = Field(8600, ge=1, le=65535)
    public_url: str | None = None
    """The URL people reach this node at (QR labels point to ``{public_url}/v/{id}``); default
    ``http://{host}:{port}``; at most ``MAX_PUBLIC_URL`` characters either way (``_labels_fit``)."""

    # HTTP server guards against slow and crowding clients (see api.server).
    http_header_timeout: float = Field(10.0, gt=0, le=300)
    """Seconds for a request's line and headers to arrive."""
    http_body_timeout: float = Field(30.0, gt=0, le=3600)
    """Seconds for a request body to arrive, plus one per ``http_body_min_rate`` bytes received."""
    http_body_min_rate: int = Field(16 * 1024, ge=1)
    """Bytes per second a large body must average to keep its connection."""
    http_idle_timeout: int = Field(5, ge=1, le=3600)
    """Seconds an idle kept-alive connection stays open."""
    http_max_connections: int = Field(1000, ge=1)
    """Open connections at most (lowered to fit the file-descriptor limit)."""

    anchor_interval: float = Field(1.0, gt=0)
    anchor_max_batch: int = Field(1000, ge=1)
    anchor_confirmations: int = Field(1, ge=1)
    anchor_tick: float = Field(0.25, gt=0)
    outbox_stuck_seconds: float = Field(300.0, gt=0)
    """A chain transaction unconfirmed for longer than this is an alert (``outbox_stuck``)."""

    peers: dict[str, str] = Field(default_factory=dict)
    """Node URL of each other hospital, by member address (node-to-node API)."""
    transfer_offer_ttl: float = Field(86_400.0, gt=0)
    metadata_read_log_window: float = Field(900.0, ge=0)
    """Seconds during which repeated metadata reads of one archive by one caller for one purpose
    are logged once (0: log every read). Content reads are always logged."""
    watcher_confirmations: int = Field(1, ge=0)
    watcher_tick: float = Field(1.0, gt=0)
    watcher_stall_seconds: float = Field(300.0, gt=0)
    """Seconds the chain watcher may keep failing (or stay in one pass) before ``/healthz``
    reports ``watcher_stalled`` and the monitor alerts."""

    fixity_interval: float = Field(7 * 86_400.0, gt=0)
    """Seconds from the start of one scheduled fixity cycle (every stored blob re-read) to the
    start of the next."""
    fixity_tick: float = Field(60.0, gt=0)
    """Seconds between scheduled fixity steps (each checks up to ``fixity_versions_per_tick``)."""
    fixity_versions_per_tick: int = Field(1000, ge=1)
    fixity_batch_size: int = Field(500, ge=1, le=10_000)
    """Versions read ahead together; their FIXITY_CHECK events (and cursor moves) are committed in
    units of at least a quarter of them as the reads complete."""
    fixity_max_bytes_per_second: float = Field(32 * 1024 * 1024, ge=0)
    """Read rate limit of fixity audits (0: unthrottled)."""
    fixity_read_workers: int = Field(2, ge=1, le=32)
    """Threads that read and hash blobs during a fixity audit, one batch ahead of the commits."""
    fixity_read_processes: int = Field(2, ge=0, le=32)
    """Worker processes that read and hash the blob files of unthrottled fixity audits
    (``fixity_max_bytes_per_second = 0``) of a plain local store, so reading does not compete for
    the GIL with the event logging; the threads then only wait for them. Started on the first
    such audit and kept until the node stops. 0: threads only."""
    replica_count: int = Field(1, ge=0, le=16)
    """Encrypted replicas of each version at peer hospitals (docs/recovery.md; 0: none)."""
    replica_count_by_class: dict[str, int] = Field(default_factory=dict)
    """Per record class override of ``replica_count`` (e.g. ``{"IMAGING" = 2}``)."""
    replica_quota_bytes: int = Field(50 * 1024**3, ge=0)
    """Ciphertext this node holds for any one other hospital, at most."""
    replica_tick: float = Field(30.0, gt=0)
    """Seconds between replica steps (place missing replicas, drop those of destroyed archives)."""
    replica_batch: int = Field(200, ge=1)
    """Versions placed (or replicas challenged) per step, at most."""
    replica_challenge_interval: float = Field(86_400.0, ge=0)
    """Seconds after a replica's last passed challenge before the replica job challenges it again
    (a replica not yet verified, or whose last challenge went unanswered, is due at once). Each
    passed challenge is a REPLICA ``verified`` event in the archive's chain: one a day per replica
    is a periodic proof of retrievability (365 events a year) where challenging at every step
    (``replica_tick``) logged up to 2,880 a day. At 200 challenges per 30 s step, a day covers about
    576,000 replicas; beyond that the longest unverified go first. Fixity audits challenge the
    replicas of the versions they check regardless (and restart this interval). 0: every step."""
    replica_challenge_bytes: int = Field(64 * 1024, ge=1, le=1024 * 1024)
    """Longest byte range a replica challenge asks a peer to hash."""
    log_replica_count: int = Field(2, ge=0, le=16)
    """Peers this node ships its log to (chosen like replica holders, for the key ``log``)."""
    log_quota_entries: int = Field(50_000_000, ge=0)
    """Entries of any one other hospital's shipped log this node holds, at most (then 409
    ``log_quota_exceeded``)."""
    log_ship_batch: int = Field(2000, ge=1, le=10_000)
    """Log entries per shipment request."""
    log_ship_tick: float = Field(5.0, gt=0)
    """Seconds between log shipments to the log peers."""
    anchor_after_replication: bool = False
    """Anchor only log entries that every log peer already holds (the replicated point), so a
    restore from peers always reaches the latest checkpoint; anchoring then waits for shipping
    (and stops while no log peer answers)."""
    cold_blob_dir: Path | None = None
    """A second blob directory (cheaper media) for the cold tier; None: one tier only."""
    cold_ipfs_api: str | None = None
    """The HTTP RPC multiaddr of an IPFS daemon that is the cold tier instead of a directory
    (e.g. ``/ip4/10.0.0.9/tcp/5001/http``); not together with ``cold_blob_dir``, and never the
    hot tier's daemon (``ipfs_api``): a blob has the same CID in both tiers there, so dropping
    the hot copy after a move would unpin the cold one."""
    tier_cold_after_days: dict[str, float] = Field(default_factory=dict)
    """Per record class: days after archiving after which an archive's ciphertext moves to the
    cold tier (classes not named stay hot)."""
    tier_cold_idle_days: dict[str, float] = Field(default_factory=dict)
    """Per record class: days without a content read before an archive due by age moves cold
    (classes not named: age alone); a cold archive of such a class read within that many days
    moves back to the hot tier."""
    tier_tick: float = Field(3600.0, gt=0)
    """Seconds between tier-policy steps."""
    clock_skew_tolerance_seconds: float = Field(300.0, ge=0, le=3600)
    """How far this node's clock may be behind the previous event of an archive (a former
    custodian's, a grant's, or ours before the clock stepped back) for a new event to take that
    event's time instead of refusing it (``node.ledger.event_time``); 0 takes none."""
    anchoring_lag_alert_seconds: float = Field(300.0, gt=0)
    """Anchoring lag (age of the oldest unanchored event) above which ``/healthz`` reports
    ``anchoring_lag`` and the monitor raises the alert of that name."""
    monitor_tick: float = Field(60.0, gt=0)
    """Seconds between checks of node health and of the access-anomaly rule (alerts)."""
    access_anomaly_window: float = Field(3600.0, gt=0)
    access_anomaly_max_patients: int = Field(50, ge=1)
    """One actor reading the content of more distinct patients' records than this within
    ``access_anomaly_window`` seconds is an ``access_anomaly`` alert."""
    archiving_deadline_days: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_ARCHIVING_DAYS)
    )
    """Per record class: an archive ARCHIVED within this many days of its creation is on time
    (the compliance report's on-time archiving rate)."""
    qc_policy: Literal["refuse", "warn", "off"] = "refuse"
    """What archiving does when 四性检测 fails: refuse (409 ``qc_failed``, the default, as
    DA/T 70 asks), warn (archive and keep the ``qc_failed`` alert) or off (no check)."""
    qc_required_metadata: dict[str, list[str]] = Field(default_factory=dict)
    """Metadata keys an archive of a class must carry (integrity), e.g. {"INPATIENT": ["ward"]}."""
    qc_max_bytes: int = Field(256 * 1024 * 1024, ge=1)
    """Content larger than this is not format-checked (usability) at archiving time."""
    alert_webhooks: list[WebhookTarget] = Field(default_factory=list)
    """Alert delivery: each new alert at or above a target's ``min_severity`` is POSTed to it."""
    webhook_tick: float = Field(5.0, gt=0)
    webhook_max_attempts: int = Field(8, ge=1, le=100)
    webhook_backoff: float = Field(5.0, gt=0)
    """Seconds before the first retry; doubled after each failure, at most an hour."""
    webhook_timeout: float = Field(10.0, gt=0, le=300)
    log_audit_interval: float = Field(86_400.0, gt=0)
    """Seconds between scheduled log audits (log against the chain, per-archive hash chains)."""
    ocr_enabled: bool = False
    """Recognise the text of scanned records (images, PDFs without a text layer) at ingestion
    for keyword search, with the ``tesseract`` program (``node.ocr``)."""
    ocr_languages: str = Field("chi_sim+eng", pattern=r"^[a-z_]{2,16}(\+[a-z_]{2,16}){0,5}$")
    """Tesseract languages, ``+``-joined (installed as ``tesseract-ocr-<lang>`` packages)."""
    ocr_timeout: float = Field(60.0, gt=0, le=3600)
    """Seconds one image may take to recognise before it is given up (no text, not an error)."""
    mllp_enabled: bool = False
    """Start the HL7 v2 MLLP listener with the node."""
    mllp_host: str = "127.0.0.1"
    mllp_port: int = Field(2575, ge=0, le=65535)
    """TCP port of the MLLP listener (0: any free port, logged at start)."""
    mllp_max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    mllp_idle_timeout: float = Field(300.0, gt=0)
    """Seconds an MLLP connection may stay silent (or take to finish a message)."""

    dicom_enabled: bool = False
    """Start the DICOM C-STORE SCP with the node."""
    dicom_ae_title: str = Field("ARCHIVECHAIN", pattern=r"^[ -~]{1,16}$")
    dicom_host: str = "127.0.0.1"
    dicom_port: int = Field(11112, ge=0, le=65535)
    """TCP port of the C-STORE SCP (0: any free port)."""
    dicom_allowed_callers: tuple[str, ...] = ()
    """Calling AE titles accepted (empty: any caller that addresses our AE title)."""
    classification: ClassificationRules = Field(default_factory=ClassificationRules)
    """Rules that classify and grade ingested records (node.classification): TOML tables under
    ``[classification]``; each table given replaces that default table whole. Invalid rules
    (an unknown class, a malformed code, a key listed twice, a reversed ICD-10 range) refuse
    the start."""
    qc_audit_interval: float = Field(604_800.0, gt=0)
    """Seconds between scheduled 四性检测 audits (every held archive, plus the plaintext scan)."""

    max_upload_bytes: int = Field(2 * 1024**3, ge=1)
    chunk_size: int = Field(1024 * 1024, ge=4096, le=64 * 1024 * 1024)
    allowed_media_types: tuple[str, ...] = DEFAULT_MEDIA_TYPES
    retention_years: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_RETENTION_YEARS))
    """Years each record class is kept (node.retention: never below the class's legal floor)."""
    retention_reminder_days: tuple[PositiveInt, ...] = (180, 30, 7)
    """Horizons (days before a deadline) at which ``retention_due`` alerts are raised."""
    retention_job_hours: float = Field(24.0, gt=0)
    """Hours between runs of the retention job (reminders, due archives into review)."""
    disposition_approval_days: int = Field(30, ge=1, le=365)
    """Days an approved disposition stays valid for execution."""
    disposition_overdue_days: int = Field(30, ge=0, le=3650)
    """Days after its retention deadline an archive held here (not on hold) may still await
    its disposition before it is a ``disposition_overdue`` alert."""
    web_assets_dir: Path | None = None
    """``node_modules`` holding the pinned npm packages whose files the web pages use (Swagger UI,
    …); default: the source tree's ``node_modules`` (``api.web.assets``)."""
    public_rpc_url: str | None = Field(None, pattern=r"^https?://[^\s]+$", max_length=512)
    """The chain's JSON-RPC URL as browsers reach it (the public verification page reads
    checkpoints there); default ``rpc_url``."""
    tag_company_prefix: str | None = Field(None, pattern=r"^[0-9]{6,12}$")
    """The hospital's GS1 company prefix (6–12 digits) for GIAI-96 RFID tags (``node.tags``)."""
    tombstone_file: Path | None = None
    """The destruction ledger, replayed at every start (default ``data_dir/tombstones.jsonl``);
    backups carry it (``node.backup.DATA_DIR_FILES``) when it is in the data directory; keep the
    live file on another volume as well, so a restored older backup cannot resurrect a key
    destroyed after it."""
    access_policy: list[PolicyRule] = Field(default_factory=default_policy)
    """The access policy table (``node.policy``; docs/regulators.md "Access policy")."""
    break_glass_hours: float = Field(4.0, gt=0, le=72)
    """How long a break-glass window stays open (reads outside policy by its clinician)."""
    signin_domain: str | None = Field(None, pattern=r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$")
    """The EIP-4361 ``domain`` members must sign for (default: the host[:port] of
    ``base_url``)."""
    signin_roles: tuple[Literal["REGULATOR", "INSURER", "AUDITOR", "HOSPITAL"], ...] = (
        "REGULATOR",
        "INSURER",
    )
    """Registry roles whose members may sign in to this node."""
    signin_token_minutes: float = Field(15.0, gt=0, le=24 * 60)
    """Lifetime of a member sign-in token."""
    signin_nonce_minutes: float = Field(10.0, gt=0, le=24 * 60)
    """How long a sign-in challenge (its nonce) may be answered."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit arguments, then the environment, then the TOML file (when one is configured).
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @model_validator(mode="after")
    def _retention_is_lawful(self) -> NodeSettings:
        # Every class present, none unknown, none below its legal floor: in every mode.
        check_retention_years(self.retention_years)
        days = self.archiving_deadline_days
        if set(days) != set(DEFAULT_ARCHIVING_DAYS) or any(d < 0 for d in days.values()):
            raise ValueError("archiving_deadline_days needs every class, each at least 0 days")
        return self

    @model_validator(mode="after")
    def _labels_fit(self) -> NodeSettings:
        if len(self.base_url.rstrip("/")) > MAX_PUBLIC_URL:  # the default from host and port too
            raise ValueError(
                f"the node's public URL ({'public_url' if self.public_url else 'host'}) may have "
                f"at most {MAX_PUBLIC_URL} characters: QR labels hold it"
            )
        return self

    @model_validator(mode="after")
    def _tiers_on_separate_daemons(self) -> NodeSettings:
        if (
            self.blob_store == "ipfs"
            and self.cold_ipfs_api is not None
            and ipfs_endpoint(self.cold_ipfs_api) == ipfs_endpoint(self.ipfs_api)
        ):
            raise ValueError(
                "cold_ipfs_api names the hot tier's IPFS daemon (ipfs_api): each tier needs its "
                "own daemon (moving a blob would unpin its only copy)"
            )
        return self

    @model_validator(mode="after")
    def _policy_ids_unique(self) -> NodeSettings:
        ids = [rule.id for rule in self.access_policy]
        if len(set(ids)) != len(ids):
            raise ValueError("access_policy rule ids must be unique")
        return self

    # -- derived paths -------------------------------------------------------------------------

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'node.db').resolve()}"

    @property
    def replica_dir(self) -> Path:
        """Where ciphertext held for other hospitals is stored (never mixed with our own)."""
        return self.data_dir / "replicas"

    @property
    def resolved_tombstone_file(self) -> Path:
        return self.tombstone_file or self.data_dir / "tombstones.jsonl"

    @property
    def resolved_keystore_path(self) -> Path:
        return self.keystore_path or self.data_dir / "keystore.json"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def resolved_deployment_file(self) -> Path:
        return self.deployment_file or self.data_dir / "deployment.json"

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def resolved_signin_domain(self) -> str:
        """The EIP-4361 domain: configured, else the authority (host[:port]) of ``base_url``."""
        if self.signin_domain:
            return self.signin_domain
        return self.base_url.split("://", 1)[-1].split("/", 1)[0]

    def passphrase(self) -> str:
        """The keystore passphrase from config or its file; refuses insecure values outside dev."""
        from node.keystore import DEV_PASSPHRASE, is_insecure_passphrase

        value: str | None = None
        if self.keystore_passphrase is not None:
            value = self.keystore_passphrase.get_secret_value()
        elif self.keystore_passphrase_file is not None:
            try:
                value = self.keystore_passphrase_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"cannot read keystore_passphrase_file: {exc.strerror}") from exc
        if value is None:
            if self.mode == "dev":
                return DEV_PASSPHRASE
            raise ConfigError(
                "no keystore passphrase: set ARCHIVECHAIN_KEYSTORE_PASSPHRASE or "
                "keystore_passphrase_file (production mode refuses to start without one)"
            )
        if self.mode != "dev" and is_insecure_passphrase(value):
            raise ConfigError(
                "the keystore passphrase is insecure (empty, too short or the dev default); "
                "production mode refuses to start"
            )
        return value


def load_settings(config_file: Path | None = None, **overrides: Any) -> NodeSettings:
    """Settings from an optional TOML file, then the environment, then explicit overrides."""
    try:
        if config_file is None:
            return NodeSettings(**overrides)
        if not config_file.is_file():
            raise ConfigError(f"config file not found: {config_file}")

        class _FromFile(NodeSettings):
            model_config = SettingsConfigDict(
                **{**NodeSettings.model_config, "toml_file": config_file}
            )

        return _FromFile(**overrides)
    except ConfigError:
        raise
    except Exception as exc:  # pydantic ValidationError, TOML syntax errors
        first = str(exc).strip().splitlines()
        raise ConfigError("invalid configuration: " + " ".join(first[:3])) from exc

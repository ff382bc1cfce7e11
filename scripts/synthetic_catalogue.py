"""Synthetic catalogue content shared by the benchmarks (``bench_search``,
``bench_hospital_ingest``): the vocabulary of generated Chinese and Latin titles and texts, the
4 KB benchmark document, and a set-based filler that puts 10^6 archive rows and their search terms
into a node's database in minutes. No real PHI: every word is generated or a common medical term.
"""

from __future__ import annotations

import random
import time
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from typing import Any

from sqlalchemy import text

from node.classification import SourceHints
from node.services.ingestion import IncomingDocument
from node.textindex import index_terms

WORDS_ZH = [
    "出院",
    "小结",
    "胸痛",
    "冠状动脉",
    "造影",
    "心肌",
    "梗死",
    "高血压",
    "糖尿病",
    "肺炎",
    "护理",
    "记录",
    "检验",
    "报告",
    "血常规",
    "影像",
    "胸部",
]
WORDS_EN = [
    "follow",
    "up",
    "chest",
    "pain",
    "stable",
    "discharge",
    "summary",
    "lab",
    "report",
    "imaging",
    "ct",
    "mri",
    "nursing",
]
DEPARTMENTS = ["cardiology", "respiratory", "oncology", "pediatrics", "psychiatry"]
RARE_WORDS = 5000
WORDS_PER_ARCHIVE = 10  # 3 in the title, 7 in the text
_TITLE_WORDS = 3
_BUCKETS = 100_000


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def document(i: int, rng: random.Random) -> IncomingDocument:
    """The ``i``-th 4 KB benchmark document (plain text, Chinese and Latin words)."""
    title = "".join(rng.sample(WORDS_ZH, 3))
    body_text = " ".join(rng.sample(WORDS_ZH, 6) + rng.sample(WORDS_EN, 4))
    body = (body_text + " ").encode("utf-8")
    content = (body * (4096 // len(body) + 1))[:4096]
    return IncomingDocument(
        content=content,
        media_type="text/plain",
        patient_id=f"BENCH-{i % 5000}",
        source_system="HIS",
        title=title,
        message_id=f"BENCH-{i}",
        encounter_id=f"V-{i // 10}",
        department="cardiology",
        hints=SourceHints(document_type="18842-5"),
        kind="bench",
    )


def vocabulary(seed: int = 13) -> list[str]:
    """Frequent words first, then 5,000 generated two-character Chinese words."""
    rng = random.Random(seed)
    rare = {
        chr(rng.randint(0x4E00, 0x9FA5)) + chr(rng.randint(0x4E00, 0x9FA5))
        for _ in range(RARE_WORDS)
    }
    return [*WORDS_ZH, *WORDS_EN, *sorted(rare)]


_MULTIPLIER = 2654435761
_WORD = 2**32


def _hash(expr: str, modulo: int, postgres: bool) -> str:
    """SQL for a deterministic pseudo-random integer in [0, modulo) from the integer ``expr``
    (Knuth's multiplicative hash, high bits), the same on both databases (``draw`` in Python)."""
    value = f"(({expr}) * {_MULTIPLIER}) % {_WORD}"
    if postgres:
        value = f"((({expr})::bigint * {_MULTIPLIER}) % {_WORD})"
    return f"({value} * {modulo} / {_WORD})"


def draw(value: int, modulo: int) -> int:
    """``_hash`` in Python: the filler's draws, for tests that rebuild an archive by hand."""
    return (value * _MULTIPLIER) % _WORD * modulo // _WORD


@lru_cache(maxsize=4)
def _buckets(words: tuple[str, ...]) -> list[int]:
    """Each bucket's word index (cached: ``synthetic`` is called once per archive)."""
    weights = list(accumulate(1.0 / (rank + 1) ** 0.8 for rank in range(len(words))))
    return [
        min(len(words) - 1, bisect_right(weights, (b + 0.5) / _BUCKETS * weights[-1]))
        for b in range(_BUCKETS)
    ]


@dataclass(frozen=True)
class SyntheticArchive:
    """What the filler writes for archive number ``i``, as the real path would take it: the
    title (words 1–3), the extracted text (words 4–10), department and sensitivity."""

    archive_id: str
    title: str
    text: str
    department: str
    sensitivity: str


def synthetic(i: int, words: list[str] | None = None) -> SyntheticArchive:
    """The ``i``-th archive of ``fill`` computed in Python (the same draws as the SQL)."""
    words = words or vocabulary()
    buckets = _buckets(tuple(words))
    drawn = [words[buckets[draw(i * WORDS_PER_ARCHIVE + slot, _BUCKETS)]] for slot in range(10)]
    if draw(i, 100) < 90:
        sensitivity = "NORMAL"
    elif draw(i + 7, 10) < 7:
        sensitivity = "SENSITIVE"
    else:
        sensitivity = "HIGHLY_SENSITIVE"
    return SyntheticArchive(
        archive_id=f"{i:026X}",
        title=" ".join(drawn[:_TITLE_WORDS]),
        text=" ".join(drawn[_TITLE_WORDS:]),
        department=DEPARTMENTS[i % len(DEPARTMENTS)],
        sensitivity=sensitivity,
    )


def fill(db: Any, total: int, custodian: str) -> tuple[float, int]:
    """Insert ``total`` synthetic archives and their search terms, set-based; (seconds, terms).

    Each archive draws ``WORDS_PER_ARCHIVE`` words (Zipf-like weights 1/rank^0.8, so the
    frequent words are in a third of the archives or more) through a 100,000-bucket table. The
    rows are what ``ArchiveService.create_many`` writes for the title ``w1 w2 w3`` (no metadata)
    and the extracted text ``w4 … w10``: the same ``title`` and ``search_text`` columns and the
    same search terms (``index_terms`` of each word, computed once per word: the words are
    separated by spaces, so the archive's terms are the union of its words' terms) —
    ``tests/test_search_scale.py`` compares them with archives made by the real path.
    Department one of five, sensitivity 90 % NORMAL and 10 % SENSITIVE (the draw meant to make
    3 % HIGHLY_SENSITIVE never fires: the two hashes of ``i`` and ``i + 7`` are correlated, and
    the filled 10^6 catalogues of docs/benchmarks.md were made so); the draws are a deterministic hash of the archive number, the same on both databases
    (``synthetic`` computes them in Python). Archive ids are hex counters (ordered like ULIDs);
    no blobs, no events.

    Set-based and in archive-id order, so that every B-tree is appended to rather than split at
    random: on SQLite the terms go in with ``INSERT OR IGNORE`` (an archive drawing a word twice
    adds its terms once) under a large page cache; on PostgreSQL the term table's keys are
    dropped, the rows inserted (one small DISTINCT per archive) and the keys rebuilt with a
    large ``maintenance_work_mem``. Both generate the rows inside the server (no rows shipped).
    """
    words = vocabulary()
    buckets = _buckets(tuple(words))
    started = time.perf_counter()
    with db.transaction() as session:
        conn = session.connection()
        postgres = conn.dialect.name == "postgresql"
        if postgres:
            conn.execute(text("SET LOCAL work_mem = '256MB'"))
            conn.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
            conn.execute(text("SET LOCAL synchronous_commit = off"))
        else:
            conn.execute(text("PRAGMA cache_size = -1000000"))  # 1 GB for this connection
            conn.execute(text("PRAGMA temp_store = MEMORY"))
        conn.execute(text("CREATE TABLE bench_words (rank INTEGER, term VARCHAR(64))"))
        conn.execute(text("CREATE TABLE bench_vocab (rank INTEGER PRIMARY KEY, word VARCHAR(64))"))
        conn.execute(text("CREATE TABLE bench_buckets (b INTEGER PRIMARY KEY, rank INTEGER)"))
        conn.execute(
            text("INSERT INTO bench_words VALUES (:rank, :term)"),
            [{"rank": r, "term": t} for r, w in enumerate(words) for t in sorted(index_terms(w))],
        )
        conn.execute(
            text("INSERT INTO bench_vocab VALUES (:rank, :word)"),
            [{"rank": r, "word": w} for r, w in enumerate(words)],
        )
        conn.execute(
            text("INSERT INTO bench_buckets VALUES (:b, :rank)"),
            [{"b": b, "rank": r} for b, r in enumerate(buckets)],
        )
        conn.execute(text("CREATE INDEX bench_words_rank ON bench_words (rank)"))
        if postgres:
            series = "generate_series(0, :n - 1) AS s(i)"
            slots = f"generate_series(0, {WORDS_PER_ARCHIVE - 1}) AS k(slot)"
            archive_id = "upper(lpad(to_hex(i), 26, '0'))"
            blob = "decode(repeat('00', 32), 'hex')"
            instant = "(timestamp '2020-01-01' + i * interval '1 minute')"
            conn.execute(text("ANALYZE bench_words"))
            conn.execute(text("ANALYZE bench_vocab"))
            conn.execute(text("ANALYZE bench_buckets"))
        else:
            series = (
                "(WITH RECURSIVE c(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM c WHERE i < :n - 1)"
                " SELECT i FROM c)"
            )
            slots = (
                "(WITH RECURSIVE k(slot) AS (SELECT 0 UNION ALL SELECT slot + 1 FROM k "
                f"WHERE slot < {WORDS_PER_ARCHIVE - 1}) SELECT slot FROM k)"
            )
            archive_id = "printf('%026X', i)"
            blob = "zeroblob(32)"
            # as SQLAlchemy stores a DateTime on SQLite (microseconds always written), so that
            # a search cursor's (created_at, id) compares with it as with real rows
            instant = "strftime('%Y-%m-%d %H:%M:%f', '2020-01-01', '+' || i || ' minutes') || '000'"
        sensitivity = (
            f"CASE WHEN {_hash('i', 100, postgres)} < 90 THEN 'NORMAL' "
            f"WHEN {_hash('i + 7', 10, postgres)} < 7 THEN 'SENSITIVE' "
            "ELSE 'HIGHLY_SENSITIVE' END"
        )
        department = (
            "CASE "
            + " ".join(
                f"WHEN i % {len(DEPARTMENTS)} = {n} THEN '{d}'" for n, d in enumerate(DEPARTMENTS)
            )
            + " END"
        )

        def word(slot: int) -> str:
            bucket = _hash(f"i * {WORDS_PER_ARCHIVE} + {slot}", _BUCKETS, postgres)
            return (
                "(SELECT v.word FROM bench_buckets b JOIN bench_vocab v ON v.rank = b.rank "
                f"WHERE b.b = {bucket})"
            )

        title = " || ' ' || ".join(word(slot) for slot in range(_TITLE_WORDS))
        conn.execute(
            text(
                "INSERT INTO archives (id, record_class, sensitivity, department, title, "
                "patient_pseudonym, source_system, metadata_json, search_text, state, custodian, "
                "trigger_date, on_hold, hold_by_regulator, current_version, last_event_hash, "
                "event_count, chain_status, created_by, created_at, updated_at) "
                f"SELECT {archive_id}, 'INPATIENT', {sensitivity}, {department}, "
                "t, 'p' || (i % 50000), 'HIS', '{}', lower(t), 'CREATED', "
                f":custodian, {instant}, false, false, 1, {blob}, 1, 'none', 'bench', "
                f"{instant}, {instant} FROM (SELECT i, {title} AS t FROM {series}) AS titled"
            ),
            {"n": total, "custodian": custodian},
        )
        draw_sql = _hash(f"i * {WORDS_PER_ARCHIVE} + slot", _BUCKETS, postgres)
        if postgres:
            conn.execute(text("ALTER TABLE search_terms DROP CONSTRAINT pk_search_terms"))
            conn.execute(text("DROP INDEX IF EXISTS ix_search_terms_archive_id_term"))
            conn.execute(
                text(
                    "INSERT INTO search_terms (term, archive_id, department) "
                    f"SELECT t.term, {archive_id}, {department} "
                    f"FROM {series} CROSS JOIN LATERAL "
                    f"(SELECT DISTINCT w.term FROM {slots} "
                    f"JOIN bench_buckets b ON b.b = {draw_sql} "
                    "JOIN bench_words w ON w.rank = b.rank) AS t"
                ),
                {"n": total},
            )
            conn.execute(
                text(
                    "ALTER TABLE search_terms ADD CONSTRAINT pk_search_terms "
                    "PRIMARY KEY (term, archive_id) INCLUDE (department)"
                )
            )
            conn.execute(
                text(
                    "CREATE INDEX ix_search_terms_archive_id_term ON search_terms (archive_id, term)"
                )
            )
        else:
            conn.execute(
                text(
                    "INSERT OR IGNORE INTO search_terms (term, archive_id, department) "
                    f"SELECT w.term, {archive_id}, {department} "
                    f"FROM {series} AS s CROSS JOIN {slots} AS k "
                    f"CROSS JOIN bench_buckets b CROSS JOIN bench_words w "
                    f"WHERE b.b = {draw_sql} AND w.rank = b.rank"
                ),
                {"n": total},
            )
        for table in ("bench_words", "bench_vocab", "bench_buckets"):
            conn.execute(text(f"DROP TABLE {table}"))
        rows = conn.execute(text("SELECT count(*) FROM search_terms")).scalar_one()
    with db.writer.connect() as conn:  # planner statistics, as a running node's autovacuum keeps
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("VACUUM ANALYZE" if postgres else "ANALYZE"))
    return time.perf_counter() - started, int(rows)

"""Catalogue search at scale (issue 13 §4), on SQLite and PostgreSQL.

- The synthetic filler of ``scripts/bench_search.py`` writes what the real path writes: the
  same search terms and the same catalogue columns as ``ArchiveService.create`` for the same
  title, text, department and sensitivity.
- The bounded search (rarest term first, per-candidate probes, capped count, composite
  indexes) lists exactly what a plain reading of the rules lists: every archive the caller may
  read that holds every query term, newest first, page by page, the total counted up to the cap.
  Walked by keyset cursors, the pages list the same, each match once.
  The expected lists are computed here in Python from the filler's draws and the access policy,
  not by the service's SQL.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select, update

from anchoring.events import Purpose, RecordClass, Sensitivity
from node.models import Archive, SearchTerm
from node.policy import AccessPolicy, PolicyAction, PolicyRule, Relation
from node.principal import Principal, Role
from node.services import archives as archives_module
from node.services.archives import (
    SEARCH_TOTAL_CAP,
    ArchiveService,
    CatalogueQuery,
    NewArchive,
    SearchFilters,
)
from node.textindex import index_terms, query_terms
from scripts.synthetic_catalogue import DEPARTMENTS, fill, synthetic, vocabulary
from tests.fixtures.node import MakeNode

COMPARED = (
    "record_class",
    "sensitivity",
    "department",
    "title",
    "search_text",
    "state",
    "source_system",
    "metadata_json",
    "current_version",
    "on_hold",
    "chain_status",
)


def _terms(node: Any, archive_id: str) -> set[tuple[str, str]]:
    """The archive's search terms, each with the department its posting carries."""
    with node.db.session() as session:
        return set(
            session.execute(
                select(SearchTerm.term, SearchTerm.department).where(
                    SearchTerm.archive_id == archive_id
                )
            ).tuples()
        )


def _row(node: Any, archive_id: str) -> dict[str, Any]:
    with node.db.session() as session:
        archive = session.get_one(Archive, archive_id)
        return {column: getattr(archive, column) for column in COMPARED}


def test_filler_writes_what_the_real_path_writes(make_node: MakeNode, database_url: str) -> None:
    node = make_node(database_url=database_url)
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "t").secret)
    total = 24
    _seconds, rows = fill(node.db, total, node.ledger.hospital)
    words = vocabulary()
    made = 0
    for i in range(total):
        drawn = synthetic(i, words)
        assert drawn.department == DEPARTMENTS[i % len(DEPARTMENTS)]
        real = node.archives.create(
            archivist,
            NewArchive(
                record_class=RecordClass.INPATIENT,
                sensitivity=Sensitivity(drawn.sensitivity),
                department=drawn.department,
                title=drawn.title,
                patient_id=f"P-{i}",
                source_system="HIS",
                media_type="text/plain",
                text=drawn.text,
            ),
            [b"synthetic"],
        )
        synthetic_terms = _terms(node, drawn.archive_id)
        assert synthetic_terms == _terms(node, real.id), i
        expected = {(term, drawn.department) for term in index_terms(drawn.title, drawn.text)}
        assert synthetic_terms == expected, i
        assert _row(node, drawn.archive_id) == _row(node, real.id), i
        made += len(synthetic_terms)
    assert rows == made
    # the draws vary: both words and sensitivities differ between archives
    assert len({synthetic(i, words).title for i in range(total)}) > total // 2
    assert {synthetic(i, words).sensitivity for i in range(200)} == {"NORMAL", "SENSITIVE"}


def _may_read(principal: Principal, node: Any, sensitivity: str, department: str) -> bool:
    """The access policy for a metadata read, archive by archive (no break-glass window)."""
    purpose = principal.default_purpose
    if principal.department is None:
        rel = Relation.NONE
    else:
        rel = Relation.OWN if department == principal.department else Relation.OTHER
    allowed = node.gate.policy.decide(
        principal.role, Sensitivity(sensitivity), rel, purpose, PolicyAction.READ_METADATA
    ).allowed
    if principal.department_scoped and department != principal.department:
        return False
    return bool(allowed)


@pytest.mark.timeout(900)
def test_bounded_search_lists_what_the_rules_list(make_node: MakeNode, database_url: str) -> None:
    node = make_node(database_url=database_url)
    total = 2_400
    words, catalogue, terms = _filled(node, total)
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "t").secret)
    clinician = node.keys.authenticate(
        node.keys.issue(Role.CLINICIAN, "t", department="cardiology").secret
    )
    rare = next(w for w in words[40:] if sum(w in t for t in terms) >= 3)
    cases: list[tuple[Principal, SearchFilters]] = [
        (archivist, SearchFilters(text="出院")),  # in more archives than the cap
        (archivist, SearchFilters(text="胸痛 chest")),
        (archivist, SearchFilters(text="出院小结")),  # two bigrams
        (archivist, SearchFilters(text=rare)),
        (archivist, SearchFilters(text="胸痛", department="oncology")),
        (archivist, SearchFilters(text="出院 chest", department="cardiology")),
        (archivist, SearchFilters()),  # newest first, more than the cap
        (archivist, SearchFilters(department="pediatrics", state="CREATED")),
        (clinician, SearchFilters(text="出院")),
        (clinician, SearchFilters(text="ct 胸痛")),
        (clinician, SearchFilters()),
        (clinician, SearchFilters(department="oncology")),  # outside a clinician's scope
        (clinician, SearchFilters(text="nosuchword")),
    ]
    seen_capped = seen_policy = False
    for principal, base in cases:
        expected = _expected(node, principal, base, catalogue, terms)
        if principal is clinician and base.text == "出院":
            everyone = [a for a, held in zip(catalogue, terms, strict=True) if "出院" in held]
            seen_policy = 0 < len(expected) < len(everyone)
        seen_capped = _lists_expected(node, principal, base, expected) or seen_capped
    assert seen_capped
    assert seen_policy


def _filled(node: Any, total: int) -> tuple[list[str], list[Any], list[set[str]]]:
    """Fill ``total`` synthetic archives; their vocabulary, draws and search terms."""
    fill(node.db, total, node.ledger.hospital)
    words = vocabulary()
    catalogue = [synthetic(i, words) for i in range(total)]
    return words, catalogue, [index_terms(a.title, a.text) for a in catalogue]


def _expected(
    node: Any, principal: Principal, base: SearchFilters, catalogue: list[Any], terms: list[Any]
) -> list[str]:
    """What a plain reading of the rules lists for ``base``, newest first."""
    wanted = query_terms(base.text) if base.text else []
    expected = [
        a.archive_id
        for a, held in zip(catalogue, terms, strict=True)
        if all(t in held for t in wanted)
        and (base.department is None or a.department == base.department)
        and _may_read(principal, node, a.sensitivity, a.department)
    ]
    expected.reverse()  # newest first: ids and created_at both grow with the number
    return expected


def _lists_expected(
    node: Any, principal: Principal, base: SearchFilters, expected: list[str]
) -> bool:
    """Check pages at several offsets and a cursor walk against ``expected``; return whether
    a count was capped."""
    capped = False
    for offset, limit in ((0, 50), (50, 50), (100, 7), (950, 50), (990, 20), (1_000, 200)):
        filters = replace(base, limit=limit, offset=offset)
        with node.db.session() as session:
            built = node.archives._catalogue_query(principal, filters, session)
            counted, exact, ids, more = node.archives._matching(built, filters, session)
        label = f"{principal.role} {base} offset {offset}"
        assert ids == expected[offset : offset + limit], label
        assert more == (offset + limit < len(expected)), label
        cap = max(SEARCH_TOTAL_CAP, offset + limit)
        assert (counted, exact) == (min(len(expected), cap), len(expected) <= cap), label
        capped = capped or not exact
    # Pages of 173, or of a third of the matches (at least 1) when fewer: every case resumes.
    page = max(1, min(173, len(expected) // 3))
    walked = _walk_cursors(node, principal, replace(base, limit=page))
    assert walked == expected, f"{principal.role} {base} by cursor"
    return capped


@pytest.mark.timeout(900)
@pytest.mark.parametrize("ratio", [0, 10**9], ids=["probe", "merge"])
def test_both_plans_of_a_query_of_several_terms_list_the_same(
    make_node: MakeNode, database_url: str, ratio: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite the postings of several terms are merged or probed (``_MERGE_RATIO``); each
    plan, forced, lists what the rules list (PostgreSQL always intersects them fenced)."""
    monkeypatch.setattr(archives_module, "_MERGE_RATIO", ratio)
    node = make_node(database_url=database_url)
    total = 1_500
    words, catalogue, terms = _filled(node, total)
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "t").secret)
    clinician = node.keys.authenticate(
        node.keys.issue(Role.CLINICIAN, "t", department="cardiology").secret
    )
    rare = next(w for w in words[40:] if sum(w in t for t in terms) >= 3)
    merged: list[bool] = []
    for principal, base in (
        (archivist, SearchFilters(text="胸痛 chest")),
        (archivist, SearchFilters(text=f"{rare} 出院")),  # a rare term and a frequent one
        (archivist, SearchFilters(text="冠状动脉")),  # three bigrams, always together
        (archivist, SearchFilters(text="出院 chest", department="oncology")),
        (clinician, SearchFilters(text="出院 小结")),
        (clinician, SearchFilters(text="心肌 梗死 ct")),
    ):
        expected = _expected(node, principal, base, catalogue, terms)
        _lists_expected(node, principal, base, expected)
        with node.db.session() as session:
            built = node.archives._catalogue_query(principal, base, session)
        merged.append(not built.order)
    sqlite = database_url.startswith("sqlite")
    assert merged == [sqlite and ratio > 0] * len(merged)


def test_a_merge_out_of_order_falls_back_to_probing(
    make_node: MakeNode, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Were SQLite's merge ever to stream out of order, ``_matching`` notices and the search
    probes instead: the same page, never a wrong one."""
    node = make_node(database_url=sqlite_url)
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "t").secret)
    for i in range(30):  # real archives: a search logs its reads, with their events
        node.archives.create(
            archivist,
            NewArchive(
                record_class=RecordClass.INPATIENT,
                sensitivity=Sensitivity.NORMAL,
                department="cardiology",
                title="胸痛 chest pain" if i % 5 else "胸痛 only",
                patient_id=f"P-{i}",
                source_system="HIS",
                media_type="text/plain",
            ),
            [b"synthetic"],
        )
    filters = SearchFilters(text="胸痛 chest", limit=20, purpose=Purpose.OPERATIONS)
    right = node.archives.search(archivist, filters)
    assert (len(right.items), right.total) == (20, 24)
    real = ArchiveService._merged

    def scrambled(*args: Any) -> CatalogueQuery:
        query = real(*args).query
        return CatalogueQuery(query.order_by(query.selected_columns[0].asc()), ())

    monkeypatch.setattr(ArchiveService, "_merged", staticmethod(scrambled))
    with node.db.session() as session:
        built = node.archives._catalogue_query(archivist, filters, session)
        with pytest.raises(archives_module._OutOfOrder):
            node.archives._matching(built, filters, session)
    with caplog.at_level("WARNING", logger="node.services.archives"):
        again = node.archives.search(archivist, filters)
    assert [a.id for a in again.items] == [a.id for a in right.items]
    assert (again.total, again.next_cursor is not None) == (right.total, True)
    assert "out of order" in caplog.text
    with node.db.session() as session:  # and probes from then on
        assert node.archives._catalogue_query(archivist, filters, session).order


def test_term_plans_compare_the_terms_over_their_newest_postings(
    make_node: MakeNode, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``_term_plan`` against its rule computed here from the filler's draws: the rarest term
    over the newest ``_DENSITY_WINDOW`` postings first, and a merge when no other term holds
    more than ``_MERGE_RATIO`` times its postings over the same archive ids."""
    window = 40
    monkeypatch.setattr(archives_module, "_DENSITY_WINDOW", window)
    node = make_node(database_url=database_url)
    total = 900
    words, catalogue, terms = _filled(node, total)
    postings: dict[str, list[str]] = {}
    for archive, held in zip(reversed(catalogue), reversed(terms), strict=True):  # newest first
        for term in held:
            postings.setdefault(term, []).append(archive.archive_id)

    def rule(query: str) -> tuple[list[str], bool]:
        wanted = query_terms(query)
        newest = {t: postings.get(t, [])[:window] for t in wanted}
        ordered = sorted(wanted, key=lambda t: (len(newest[t]), min(newest[t], default="")))
        held = len(newest[ordered[0]])
        if held == 0:
            return ordered, False
        oldest = min(newest[ordered[0]])
        bound = archives_module._MERGE_RATIO * held
        within = [sum(a >= oldest for a in postings.get(t, [])) for t in ordered[1:]]
        return ordered, all(n <= bound for n in within)

    rare = next(w for w in words[40:] if sum(w in t for t in terms) >= 3)
    sparse = next(w for w in words[40:] if 0 < sum(w in t for t in terms) <= 2)
    merges: set[bool] = set()
    for query in (
        "胸痛 chest",
        f"{rare} 出院",
        f"{sparse} 出院 ct",
        "冠状动脉",
        "出院 小结",
        "心肌 梗死 ct",
        f"{rare} nosuchword",
    ):
        with node.db.session() as session:
            plan = archives_module._term_plan(session, query_terms(query))
        assert (plan.terms, plan.merge) == rule(query), query
        merges.add(plan.merge)
    assert merges == {True, False}


@pytest.mark.timeout(600)
def test_a_policy_that_grants_other_departments_is_followed_by_department_filters(
    make_node: MakeNode, database_url: str
) -> None:
    """A policy table unlike the default one: clinicians may read NORMAL records of other
    departments (which their department scope still hides) and SENSITIVE ones of their own
    only. Every department filter, with and without text, lists what the rules list: nothing
    of another department (only clinicians carry a department)."""
    node = make_node(database_url=database_url)
    node.gate.policy = AccessPolicy(
        [
            PolicyRule(
                id="normal-elsewhere",
                effect="allow",
                roles=("archivist", "clinician"),
                sensitivities=("NORMAL",),
                relations=("other",),
                purposes=("*",),
                actions=("read_metadata",),
            ),
            PolicyRule(
                id="sensitive-at-home",
                effect="allow",
                roles=("archivist", "clinician"),
                sensitivities=("SENSITIVE",),
                relations=("own",),
                purposes=("*",),
                actions=("read_metadata",),
            ),
        ]
    )
    total = 600
    _words, catalogue, terms = _filled(node, total)
    clinician = node.keys.authenticate(
        node.keys.issue(Role.CLINICIAN, "t", department="cardiology").secret
    )
    listed: dict[str | None, int] = {}
    for department in (None, "cardiology", "oncology"):
        for text in (None, "出院", "胸痛 chest"):
            base = SearchFilters(text=text, department=department)
            expected = _expected(node, clinician, base, catalogue, terms)
            _lists_expected(node, clinician, base, expected)
            listed[department] = listed.get(department, 0) + len(expected)
    assert listed["cardiology"] == listed[None] > 0
    assert listed["oncology"] == 0


def test_a_department_bound_walk_skips_other_departments_postings(
    make_node: MakeNode, database_url: str
) -> None:
    """A department-bound text search (a department filter, or a clinician's own department)
    walks the postings by the department each carries, before reading any archive row: a
    posting relabelled to another department (the node never does it: an archive's department
    is fixed at creation) drops out of every department-bound plan — one term, and two terms
    merged (SQLite) or intersected (PostgreSQL) — while an unbound search, which reads the
    archive row alone, still lists it."""
    node = make_node(database_url=database_url)
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "t").secret)
    clinician = node.keys.authenticate(
        node.keys.issue(Role.CLINICIAN, "t", department="cardiology").secret
    )
    created = [
        node.archives.create(
            archivist,
            NewArchive(
                record_class=RecordClass.INPATIENT,
                sensitivity=Sensitivity.NORMAL,
                department="cardiology",
                title="出院 小结",
                patient_id=f"P-{i}",
                source_system="HIS",
                media_type="text/plain",
            ),
            [b"x"],
        ).id
        for i in range(3)
    ]
    newest_first = sorted(created, reverse=True)
    relabelled = created[1]
    with node.db.transaction() as session:
        session.execute(
            update(SearchTerm)
            .where(SearchTerm.archive_id == relabelled)
            .values(department="oncology")
        )
    kept = [a for a in newest_first if a != relabelled]

    def listed(principal: Principal, text: str, department: str | None = None) -> list[str]:
        page = node.archives.search(principal, SearchFilters(text=text, department=department))
        return [item.id for item in page.items]

    for text in ("出院", "出院 小结"):
        assert listed(archivist, text) == newest_first, text
        assert listed(archivist, text, "cardiology") == kept, text
        assert listed(clinician, text) == kept, text
        assert listed(archivist, text, "oncology") == [], text  # the row is still checked


def _walk_cursors(node: Any, principal: Principal, filters: SearchFilters) -> list[str]:
    """Every page of a search, each resuming at the previous page's cursor (as ``search``
    makes it), without logging the reads of 2,400 archives."""
    walked: list[str] = []
    while True:
        with node.db.session() as session:
            built = node.archives._catalogue_query(principal, filters, session)
            _total, _exact, ids, more = node.archives._matching(built, filters, session)
            walked += ids
            if not more:
                return walked
            assert len(ids) == filters.limit
            cursor = node.archives._cursor_after(session, ids[-1], filters)
        filters = replace(filters, cursor=cursor)


def test_search_refuses_a_bad_page(make_node: MakeNode, sqlite_url: str) -> None:
    node = make_node(database_url=sqlite_url)
    archivist = node.keys.authenticate(node.keys.issue(Role.ARCHIVIST, "t").secret)
    from node.errors import InputError

    for filters in (SearchFilters(limit=0), SearchFilters(limit=201), SearchFilters(offset=-1)):
        with pytest.raises(InputError):
            node.archives.search(archivist, filters)
    with pytest.raises(InputError):
        node.archives.search(archivist, SearchFilters(text="!!!", purpose=Purpose.OPERATIONS))

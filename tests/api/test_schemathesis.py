"""Property-based tests of the whole OpenAPI document with schemathesis (v4), in process (ASGI).

Each operation is called with generated valid and invalid requests on a real node (both databases);
a test fails on any 5xx, on a status code, content type, header or body the document does not
declare, on invalid input the API accepts, and on an operation that ignores its credentials.

Every operation the document declares — whoever added it — is fuzzed with an archivist key (one
test per database; the failures of all operations are collected and reported together). Archive
operations are fuzzed again with the id of a real archive, so the commands and reads behind the
404 are fuzzed too, and ``/keys`` again with an admin key.

The generated cases are the same on every run (Hypothesis ``derandomize``), so a run fails only
on a change of the API or the node, never on a random draw; ``ARCHIVECHAIN_FUZZ_RANDOM=1``
explores new cases on each run (what to do on a schedule or before a release).

(``schemathesis.pytest.from_fixture`` cannot run under pytest 9.2 — it writes ``Item._nodeid`` —
so the operations are driven with ``@given`` on each operation's strategies.)
"""

from __future__ import annotations

import os
import re
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CheckContext, not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.parameters import ParameterLocation
from schemathesis.core.transport import Response
from schemathesis.generation.meta import (
    CaseMetadata,
    ComponentInfo,
    FuzzingPhaseData,
    GenerationInfo,
    PhaseInfo,
    TestPhase,
)
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api.conftest import Api


def negative_data_rejection_or_too_large(
    ctx: CheckContext, response: Response, case: schemathesis.Case
) -> bool | None:
    """``negative_data_rejection``, with 413 counted as a rejection: a body over the route's size
    limit is refused before its schema is looked at (``api/limits.py``), which is exactly what
    invalid data should get. Schemathesis's default list of rejection statuses lacks 413."""
    if response.status_code == 413:
        return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection_or_too_large,
    ignored_auth,
]
"""``positive_data_acceptance`` is left out on purpose: schema-valid requests are legitimately
refused by business rules (an empty file, a media type this node does not accept, a bundle whose
base64 is not canonical, a clinician's department) with 400/415/422."""

EXAMPLES = 25

ARCHIVE_OPERATIONS = [
    ("GET", "/api/v1/archives/{archive_id}"),
    ("GET", "/api/v1/archives/{archive_id}/content"),
    ("GET", "/api/v1/archives/{archive_id}/events"),
    ("GET", "/api/v1/archives/{archive_id}/proof"),
    ("POST", "/api/v1/archives/{archive_id}/amend"),
    ("POST", "/api/v1/archives/{archive_id}/archive"),
    ("POST", "/api/v1/archives/{archive_id}/hold"),
    ("DELETE", "/api/v1/archives/{archive_id}/hold"),
]
KEY_OPERATIONS = [
    ("POST", "/api/v1/keys"),
    ("GET", "/api/v1/keys"),
    ("DELETE", "/api/v1/keys/{key_id}"),
]


def _plain_string_accepts(schema: dict[str, Any], text: str) -> bool:
    """Whether a query parameter's schema surely accepts ``text``: a string schema (or an
    ``anyOf`` with one) limited only by length and pattern. Anything else (formats, enums,
    numbers) counts as not accepted, so the negative check stays on."""
    for option in schema.get("anyOf", [schema]):
        if option.get("type") != "string" or set(option) - {
            "type",
            "maxLength",
            "minLength",
            "pattern",
        }:
            continue
        if not option.get("minLength", 0) <= len(text) <= option.get("maxLength", len(text)):
            continue
        if "pattern" in option and re.search(option["pattern"], text) is None:
            continue
        return True
    return False


INJECTED_HEADERS = frozenset({"authorization"})
"""Headers ``fuzz`` sends with every case (``api.auth``), over whatever the case generated."""


def _headers_restored(case: schemathesis.Case, injected: frozenset[str]) -> bool:
    """True when every header the operation declares is one the test sends itself, over the
    case's own: a mutated header component (e.g. the security scheme's ``Authorization``
    dropped) then never reaches the app."""
    return {p.name.lower() for p in case.operation.headers} <= injected


def _query_arrives_valid(
    case: schemathesis.Case, injected: frozenset[str] = INJECTED_HEADERS
) -> bool:
    """True when only the query was mutated (or the headers as well, where the test's own
    ``injected`` headers replace every declared one) and every parameter still arrives valid: a
    value mutated into a one-item array of a number (``actor: [0.0]``) is sent as ``actor=0.0``,
    a string any string parameter accepts. Every required parameter must be present, every sent
    one declared, single-valued and accepted as a string by its schema."""
    meta = case.meta
    assert meta is not None
    for location, info in meta.components.items():
        if not info.mode.is_negative or location is ParameterLocation.QUERY:
            continue
        if location is ParameterLocation.HEADER and _headers_restored(case, injected):
            continue
        return False
    query = case.query or {}
    declared = {p.name: p for p in case.operation.query}
    if any(p.is_required and name not in query for name, p in declared.items()):
        return False
    for name, value in query.items():
        items = value if isinstance(value, list) else [value]
        if name not in declared or len(items) != 1:
            return False
        (item,) = items
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            return False
        if not _plain_string_accepts(declared[name].definition.get("schema", {}), str(item)):
            return False
    return True


def _mutation_lost_in_transit(case: schemathesis.Case) -> bool:
    """True when a negative case's mutation cannot survive serialisation, so the request that
    arrives is valid and rightly accepted: a *file* part mutated into a number or an object is
    sent as a file holding that text (any bytes are a valid file), an extra query parameter
    whose value is an empty list is not sent at all, and a query value that is sent as text
    its string parameter accepts (``_query_arrives_valid``)."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_negative:
        return False
    body = case.body
    if isinstance(body, dict) and "file" in body and not isinstance(body["file"], bytes | str):
        return True
    query = case.query or {}
    return any(value == [] for value in query.values()) or _query_arrives_valid(case)


def checks_for(case: schemathesis.Case) -> list[Any]:
    """Every check, but ``negative_data_rejection`` only where the invalid data reaches the app."""
    if _mutation_lost_in_transit(case):
        return [check for check in CHECKS if check is not negative_data_rejection_or_too_large]
    return CHECKS


def _describe(exc: BaseException) -> str:
    """A failure's summary, its distinct check failures included."""
    parts = [str(exc)]
    if isinstance(exc, BaseExceptionGroup):
        parts.extend(str(inner) for inner in exc.exceptions)
    return "\n".join(parts)[:3000]


def _label(operation: tuple[str, str]) -> str:
    return f"{operation[0]} {operation[1]}"


def fuzz(
    api: Api,
    method: str,
    path: str,
    who: str,
    *,
    path_parameters: dict[str, Any] | None = None,
    examples: int = EXAMPLES,
) -> None:
    """Run ``examples`` positive and negative cases of one operation through every check."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    operation = schema[path][method]
    strategies = [
        operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ]
    headers = api.auth(who)
    assert {name.lower() for name in headers} == INJECTED_HEADERS

    @given(case=st.one_of(strategies))
    @settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=not os.environ.get("ARCHIVECHAIN_FUZZ_RANDOM"),
    )
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=checks_for(case))

    run()


def test_fuzz_every_operation_as_archivist(api: Api) -> None:
    """Every operation the document declares (whoever wrote it), with an archivist key."""
    document = api.client.get("/openapi.json").json()
    operations = sorted(
        (method.upper(), path) for path, item in document["paths"].items() for method in item
    )
    assert set(ARCHIVE_OPERATIONS) | set(KEY_OPERATIONS) <= set(operations)
    failures: list[str] = []
    for method, path in operations:
        try:
            fuzz(api, method, path, "archivist")
        except (Exception, FailureGroup) as exc:  # collect them all, then report them all
            failures.append(f"{method} {path}: {_describe(exc)}")
    assert not failures, "\n\n".join(failures)


@pytest.mark.parametrize("operation", ARCHIVE_OPERATIONS, ids=_label)
def test_fuzz_on_a_real_archive(api: Api, operation: tuple[str, str]) -> None:
    archive_id = api.create()["id"]
    api.node.worker.run_until_anchored(timeout=30)  # so `GET …/proof?wait=N` answers at once
    fuzz(api, *operation, "archivist", path_parameters={"archive_id": archive_id})


@pytest.mark.parametrize("operation", KEY_OPERATIONS, ids=_label)
def test_fuzz_keys_as_admin(api: Api, operation: tuple[str, str]) -> None:
    fuzz(api, *operation, "admin")


def _negative_query_case(
    api: Api, query: dict[str, Any], *, headers_too: bool = False
) -> schemathesis.Case:
    """A negative case of ``GET /access/denials`` that mutated its query (and its headers with
    ``headers_too``), as a fuzzing run describes such a case, with ``query``."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app)
    operation = schema["/api/v1/access/denials"]["GET"]
    negative = GenerationMode.NEGATIVE
    meta = CaseMetadata(
        generation=GenerationInfo(time=0.0, mode=negative),
        components={
            location: ComponentInfo(mode=negative)
            for location in (ParameterLocation.QUERY, ParameterLocation.HEADER)[: 1 + headers_too]
        },
        phase=PhaseInfo(
            name=TestPhase.FUZZING,
            data=FuzzingPhaseData(
                description="a query parameter of the wrong type",
                parameter=next(iter(query)),
                parameter_location=ParameterLocation.QUERY,
                location=None,
            ),
        ),
    )
    return operation.Case(query=query, _meta=meta)


QUERY_MUTATIONS = [
    ({"actor": [0.0]}, True),  # sent as actor=0.0: a valid actor
    ({"actor": 7, "archive_id": ["A1"]}, True),
    ({"actor": [0.0, 1]}, False),  # two values
    ({"actor": [True]}, False),
    ({"actor": [{"a": 1}]}, False),
    ({"actor": ["x" * 81]}, False),  # over maxLength
    ({"actor": ["a\x01b"]}, False),  # outside the pattern
    ({"limit": [5]}, False),  # an integer parameter: not judged here
    ({"since": [1.5]}, False),  # a date-time format: not judged here
    ({"unknown": [1]}, False),
]


def test_a_query_mutation_counts_as_lost_only_when_the_sent_text_is_valid(api: Api) -> None:
    """The filter that turns off ``negative_data_rejection`` is narrow: a query mutation counts
    as lost in transit only when what is sent is a single text its string parameter accepts, and
    the node does accept each such request."""
    for query, lost in QUERY_MUTATIONS:
        case = _negative_query_case(api, query)
        assert _query_arrives_valid(case) is lost, query
        assert _mutation_lost_in_transit(case) is lost, query
        if lost:
            response = api.client.get(
                "/api/v1/access/denials", params=query, headers=api.auth("auditor")
            )
            assert response.status_code == 200, (query, response.text)
    # The headers mutated as well: lost only because the test sends its own Authorization
    # over them (the operation declares no other header); another header would reach the app.
    headers_too = _negative_query_case(api, {"actor": [0.0]}, headers_too=True)
    assert [p.name for p in headers_too.operation.headers] == ["Authorization"]
    assert _query_arrives_valid(headers_too)
    assert not _query_arrives_valid(headers_too, injected=frozenset())
    assert not _query_arrives_valid(headers_too, injected=frozenset({"x-other"}))
    invalid_too = _negative_query_case(api, {"actor": [True]}, headers_too=True)
    assert not _query_arrives_valid(invalid_too)  # the query itself still arrives invalid

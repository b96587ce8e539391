"""OpenAPI-driven fuzzing of the HTTP API (schemathesis) against the real server on loopback.

The app is served by uvicorn on a 127.0.0.1 socket inside the test's event loop (as in
``test_api.py``). The OpenAPI document is fetched from the running server's ``/openapi.json``
and loaded with ``schemathesis.openapi.from_dict`` (base URL: that server); schemathesis sends
its requests from a worker thread (its transport blocks; the server keeps running in the loop).
Every operation of that document (anything under the ``/emulator`` mount excepted) is fuzzed
once per caller — one test per caller:

* ``anonymous`` — no credentials, or the garbage session cookie / bearer token that schemathesis
  generates for the security schemes;
* ``admin`` — a signed-in admin: a real session cookie and the matching ``X-CSRF-Token``;
* ``program`` — an API key that may read tokens (``Authorization: Bearer ebc_…``).

Three real seller accounts are connected first through the real OAuth flow (our ``/connect`` →
the emulator's consent → our ``/callback``), so ids exist. Per operation the cases are:

* generated: schemathesis's positive and negative generators (bodies, query strings, path ids,
  headers, cookies), mixed with positive cases pinned to the real account ids so the handlers
  behind the ownership check run too (refresh, access token, terminal filter, disconnect; the
  disconnect operation is fuzzed last);
* edge values derived from the document that random generation rarely draws: integers just
  beyond 64 bits where a parameter has no ``maximum``, ``date-time`` values at both ends of the
  calendar and one without a UTC offset, and a JSON body that is not UTF-8.

Each answer must pass ``not_a_server_error`` (no 5xx), ``status_code_conformance`` (the status
is documented for the operation), ``content_type_conformance`` and
``response_schema_conformance`` (the answer is what the document says), and every error answer
(4xx/5xx) must have the one shape ``{"error": {"code": str, "message": str, ...}}``. Failures are
collected rather than raised inside Hypothesis (so nothing is shrunk and every failing operation
is listed) and reported at the end: the request as a curl command, the answer, and how many
cases failed the same way.

Deterministic and bounded: Hypothesis runs derandomized (fixed seed), without an example
database, deadline or shrinking, with at most ``MAX_EXAMPLES`` generated cases per operation and
caller (~300 requests per test). SQLite only — the fuzzer targets the HTTP layer; the
PostgreSQL store is covered by the other integration tests. About 10 s per test on the 2-core
development machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, Verbosity, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ebay_connector.api import create_app
from ebay_connector.api.app import EMULATOR_MOUNT
from ebay_connector.api.auth import CSRF_HEADER, SESSION_COOKIE
from ebay_connector.api_keys import ApiKeys
from ebay_connector.runtime import Runtime
from ebay_connector.users import Role, Users

Operation = APIOperation[Any, Any, Any, Any]
FuzzCase = Case[Operation]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.parametrize("database", ["sqlite"], indirect=True),
]

PASSWORD = "correct horse battery"
ADMIN_EMAIL = "admin@fuzz.test"
MAX_EXAMPLES = 20  # generated cases per operation and caller
REQUEST_TIMEOUT_S = 10.0
FUZZ_TIMEOUT_S = 180.0  # one caller's whole run; normally ~10 s
CONNECTED_SELLERS = ("fuzz_seller_1", "fuzz_seller_2", "fuzz_seller_3")
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
# Disconnect deletes accounts: fuzz it after everything that wants them to exist.
LAST_METHODS = ("DELETE",)
# Edge values (see the module docstring).
BEYOND_INT64 = (2**63, -(2**63) - 1)
EDGE_DATETIMES = (
    "0001-01-01T00:00:00+14:00",  # valid RFC 3339, before datetime.min in UTC
    "9999-12-31T23:59:59-14:00",  # valid RFC 3339, after datetime.max in UTC
    "2026-01-01T00:00:00",  # no offset: not an RFC 3339 date-time
)
NOT_UTF8_JSON = b'{"\xff": 1}'


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True)
class Caller:
    name: str
    headers: dict[str, str] = field(default_factory=dict)
    cookies: dict[str, str] = field(default_factory=dict)


@dataclass
class Finding:
    operation: str
    kind: str
    count: int
    report: str  # the first occurrence: request (curl) and answer


@dataclass
class FuzzReport:
    caller: str
    operations: list[str] = field(default_factory=list)
    findings: dict[tuple[str, str], Finding] = field(default_factory=dict)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    cases: int = 0

    def add(self, operation: str, kind: str, report: str) -> None:
        key = (operation, kind)
        if key in self.findings:
            self.findings[key].count += 1
        else:
            self.findings[key] = Finding(operation, kind, 1, report)

    def summary(self) -> str:
        lines = [
            f"{self.caller}: {self.cases} cases over {len(self.operations)} operations; "
            "statuses seen:"
        ]
        for operation in self.operations:
            counts = self.statuses.get(operation, Counter())
            seen = ", ".join(f"{status}×{n}" for status, n in sorted(counts.items()))
            lines.append(f"  {operation}: {seen}")
        return "\n".join(lines)

    def failure_text(self) -> str:
        parts = [f"the fuzzer found {len(self.findings)} distinct failure(s) as {self.caller}:"]
        for finding in self.findings.values():
            parts.append(
                f"\n=== {finding.operation} — {finding.kind} ({finding.count} case(s)); "
                f"first one:\n{finding.report.strip()}"
            )
        parts.append("\n" + self.summary())
        return "\n".join(parts)


# ---------------------------------------------------------------------- server and setup


@contextlib.asynccontextmanager
async def serving(runtime: Runtime) -> AsyncIterator[str]:
    """The API on a fresh 127.0.0.1 port in this event loop; yields its base URL."""
    # IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY only on accepted sockets whose proto is TCP.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(runtime), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "the API server did not start"
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def _sign_in(base: str, email: str) -> Caller:
    async with httpx.AsyncClient(
        base_url=base, timeout=REQUEST_TIMEOUT_S, trust_env=False
    ) as client:
        answer = await client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
        assert answer.status_code == 200, answer.text
        cookie = client.cookies[SESSION_COOKIE]
        csrf = answer.json()["csrf_token"]
    return Caller("admin", headers={CSRF_HEADER: csrf}, cookies={SESSION_COOKIE: cookie})


async def _connect(base: str, admin: Caller, username: str) -> int:
    """The real browser flow: our /connect → the emulator's consent (agree) → our /callback."""
    async with httpx.AsyncClient(
        base_url=base,
        timeout=REQUEST_TIMEOUT_S,
        headers=admin.headers,
        cookies=admin.cookies,
        trust_env=False,
    ) as session:
        start = await session.get("/api/ebay/connect", follow_redirects=False)
        assert start.status_code == 302, start.text
        consent = urlsplit(start.headers["location"])
        query = {k: v[0] for k, v in parse_qs(consent.query).items()}
        async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, trust_env=False) as browser:
            agreed = await browser.post(
                f"{consent.scheme}://{consent.netloc}{consent.path}",
                data={**query, "username": username, "decision": "agree"},
            )
        assert agreed.status_code == 302, agreed.text
        back = parse_qs(urlsplit(agreed.headers["location"]).query)
        done = await session.get(
            "/api/ebay/callback", params={"code": back["code"][0], "state": back["state"][0]}
        )
        assert done.status_code == 200, done.text
        account_id: int = done.json()["account_id"]
    return account_id


# ------------------------------------------------------------------------- the cases


def _parameters(operation: Operation) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = operation.definition.raw.get("parameters", [])
    return params


def _alternatives(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """A parameter's schema and the branches of its ``anyOf`` / ``oneOf`` (FastAPI's Optional)."""
    branches = [schema]
    for key in ("anyOf", "oneOf"):
        branches.extend(b for b in schema.get(key, []) if isinstance(b, dict))
    return branches


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _body_properties(operation: Operation) -> set[str]:
    components = operation.schema.raw_schema.get("components", {}).get("schemas", {})
    names: set[str] = set()
    for ref in _refs(operation.definition.raw.get("requestBody", {})):
        names.update(components.get(ref.rsplit("/", 1)[-1], {}).get("properties", {}))
    return names


def _pinned(operation: Operation, account_id: int) -> dict[str, Any] | None:
    """Fixed parts that point a positive case at a real account of the caller's organization."""
    located = {(p.get("in"), p.get("name")) for p in _parameters(operation)}
    if ("path", "account_id") in located:
        return {"path_parameters": {"account_id": account_id}}
    if ("query", "account") in located:
        return {"query": {"account": account_id}}
    if "ebay_account_id" in _body_properties(operation):
        return {"body": {"ebay_account_id": account_id}, "media_type": "application/json"}
    return None


def _edge_cases(operation: Operation, account_id: int) -> list[FuzzCase]:
    """Edge values for each parameter (the others left out, or pinned for path parameters)."""
    params = _parameters(operation)
    path_defaults = {p["name"]: account_id for p in params if p.get("in") == "path"}
    cases: list[FuzzCase] = []
    for param in params:
        location, name = param.get("in"), param["name"]
        values: list[Any] = []
        for branch in _alternatives(param.get("schema", {})):
            if branch.get("type") == "integer" and "maximum" not in branch:
                values.extend(BEYOND_INT64)
            if branch.get("type") == "string" and branch.get("format") == "date-time":
                values.extend(EDGE_DATETIMES)
        for value in values:
            if location == "path":
                cases.append(operation.Case(path_parameters={**path_defaults, name: value}))
            elif location == "query":
                cases.append(operation.Case(path_parameters=path_defaults, query={name: value}))
    if _body_properties(operation):
        cases.append(
            operation.Case(
                path_parameters=path_defaults, body=NOT_UTF8_JSON, media_type="application/json"
            )
        )
    return cases


# --------------------------------------------------------------------------- the fuzzing


def _error_shape_problem(status: int, content: bytes) -> str | None:
    """Why an error answer does not have the one error shape (None when it does)."""
    if status < 400:
        return None
    try:
        body = json.loads(content)
    except ValueError:
        return f"error answer {status} is not JSON: {content[:200]!r}"
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return f"error answer {status} has no 'error' object: {content[:300]!r}"
    if not isinstance(error.get("code"), str) or not isinstance(error.get("message"), str):
        return f"error answer {status} lacks a string 'code' / 'message': {content[:300]!r}"
    return None


def _send_and_check(
    session: requests.Session, case: FuzzCase, caller: Caller, label: str, report: FuzzReport
) -> None:
    try:
        response = case.call(
            session=session,
            headers=caller.headers or None,
            cookies=caller.cookies or None,
            timeout=REQUEST_TIMEOUT_S,
        )
    finally:
        session.cookies.clear()  # a cookie an answer set (e.g. a login) must not leak onward
    report.cases += 1
    report.statuses.setdefault(label, Counter())[response.status_code] += 1
    try:
        case.validate_response(response, checks=CHECKS)
    except FailureGroup as group:
        kind = " + ".join(sorted({failure.title for failure in group.exceptions}))
        report.add(label, kind, str(group))
    problem = _error_shape_problem(response.status_code, response.content)
    if problem is not None:
        curl = case.as_curl_command(headers=dict(response.request.headers))
        report.add(label, "error shape", f"{problem}\nReproduce with:\n    {curl}")


def _fuzz_operation(
    session: requests.Session,
    operation: Operation,
    caller: Caller,
    account_ids: list[int],
    report: FuzzReport,
) -> None:
    definition = operation.definition.raw
    negatable = bool(
        definition.get("parameters") or definition.get("requestBody") or definition.get("security")
    )
    modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if negatable else [])
    generated = [operation.as_strategy(generation_mode=mode) for mode in modes]
    pinned = [
        operation.as_strategy(**fixed)
        for account_id in account_ids
        if (fixed := _pinned(operation, account_id)) is not None
    ]
    label = operation.label

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        verbosity=Verbosity.quiet,
        # Each example is a real HTTP round trip (some a real refresh with the emulator); how
        # long schemathesis takes to build a case is not what this test is about.
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(case=st.one_of(*generated, *pinned))
    def run(case: FuzzCase) -> None:
        _send_and_check(session, case, caller, label, report)

    run()
    for case in _edge_cases(operation, account_ids[0]):
        _send_and_check(session, case, caller, label, report)


def _fuzz(
    base: str, document: dict[str, Any], caller: Caller, account_ids: list[int]
) -> FuzzReport:
    """Runs in a worker thread: schemathesis's requests block, the server runs in the loop."""
    config = schemathesis.Config()  # explicit: no schemathesis.toml is discovered
    config.projects.override.update(base_url=base)
    schema = schemathesis.openapi.from_dict(document, config=config)
    operations: list[Operation] = []
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            pytest.fail(f"schemathesis cannot use an operation: {result.err()}", pytrace=False)
        if not result.ok().path.startswith(EMULATOR_MOUNT):
            operations.append(result.ok())
    operations.sort(key=lambda op: op.method.upper() in LAST_METHODS)
    report = FuzzReport(caller.name, [op.label for op in operations])
    with requests.Session() as session:
        session.trust_env = False  # loopback only: no proxy from the environment
        for operation in operations:
            _fuzz_operation(session, operation, caller, account_ids, report)
    return report


# What each caller must have reached, to show the fuzzer got past authentication.
REACHED = {
    "anonymous": [("GET /healthz", 200), ("GET /api/admin/ebay/accounts", 401)],
    "admin": [
        ("GET /api/admin/ebay/accounts", 200),
        ("POST /api/admin/ebay/token/refresh", 200),
        ("GET /api/ebay/connect", 302),
        ("DELETE /api/admin/ebay/accounts/{account_id}", 200),
    ],
    "program": [
        ("GET /api/v1/accounts", 200),
        ("GET /api/v1/accounts/{account_id}/access-token", 200),
    ],
}


@pytest.mark.parametrize("caller_name", ["anonymous", "admin", "program"])
async def test_fuzz_every_operation(runtime: Runtime, caller_name: str) -> None:
    org_id = await runtime.store.create_organization("fuzz")
    await Users(runtime.db).create(org_id, ADMIN_EMAIL, Role.ADMIN, PASSWORD)
    _, key = await ApiKeys(runtime.db).create(org_id, "fuzz", can_read_tokens=True)
    async with serving(runtime) as base:
        admin = await _sign_in(base, ADMIN_EMAIL)
        account_ids = [await _connect(base, admin, name) for name in CONNECTED_SELLERS]
        caller = {
            "anonymous": Caller("anonymous"),
            "admin": admin,
            "program": Caller("program", headers={"Authorization": f"Bearer {key}"}),
        }[caller_name]
        async with httpx.AsyncClient(
            base_url=base, timeout=REQUEST_TIMEOUT_S, trust_env=False
        ) as client:
            answer = await client.get("/openapi.json")
            assert answer.status_code == 200, answer.text
            document = answer.json()
        report = await asyncio.wait_for(
            asyncio.to_thread(_fuzz, base, document, caller, account_ids), FUZZ_TIMEOUT_S
        )
    assert len(report.operations) >= 10, report.operations
    if report.findings:
        pytest.fail(report.failure_text(), pytrace=False)
    for operation, status in REACHED[caller_name]:
        assert report.statuses.get(operation, Counter())[status] > 0, report.summary()

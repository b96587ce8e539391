"""Hostile input against the real server on loopback, on SQLite and PostgreSQL.

Walks the served OpenAPI document and sends, to every JSON body field, query parameter and
path parameter of every operation, values chosen to break things: NUL and control characters,
unicode oddities (a lone surrogate, bidi overrides, emoji), SQL metacharacters, path traversal,
template and log-injection strings, very long strings, and numbers that are negative, huge,
fractional or not numbers. Plus raw bodies that are not JSON (or deeply nested, or with a
number of 5,000 digits), bodies over the 64 KiB limit (announced by ``Content-Length`` or
streamed chunked), and the OAuth callback with everything wrong that ``test_api.py`` does not
already cover.

Every answer must be a 4xx with ``{"error": {"code", "message"}}`` or a status the document
lists for the operation — never a 5xx — and a refused write must leave the database exactly as
it was (all rows of all tables compared before and after; only the login counters, which record
refused sign-ins by design, are left out).

Already covered elsewhere (not repeated here): forged / replayed / foreign / declined / expired
state and replayed / expired code in ``test_api.py::test_forged_replayed_foreign_and_declined_
states_change_nothing`` and ``test_api.py::test_an_expired_code_is_refused_and_nothing_is_
written``; bad JSON, a wrong type and a 100 KB body in ``test_api.py::test_errors_have_one_
shape``; schemathesis's generated cases in ``test_api_fuzz.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx
import pytest
import sqlalchemy as sa
from itsdangerous import URLSafeTimedSerializer

from ebay_connector.core.roles import Role
from ebay_connector.db import models as m
from ebay_connector.db.api_keys import ApiKeys
from ebay_connector.db.users import Users
from ebay_connector.emulator import Emulator
from ebay_connector.runtime import Runtime
from ebay_connector.web.api.auth import CSRF_HEADER
from ebay_connector.web.app import EMULATOR_MOUNT, MAX_BODY_BYTES
from tests.conftest import DatabaseTarget, FakeClock, open_test_runtime
from tests.integration.test_api_fuzz import serving

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
ADMIN = "admin@hostile.test"
LONG = "A" * 20_000  # long, but under the body limit

HOSTILE_STRINGS: tuple[str, ...] = (
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x01\x02\x07\x08\x1b[31mred\x7f",
    "line\r\nX-Injected: yes\r\n\r\n",
    "' OR '1'='1",
    "1; DROP TABLE users; --",
    '" OR 1=1 -- ',
    "%' AND 1=0 UNION SELECT NULL--",
    "\\",
    "../../../../etc/passwd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%00",
    "\ud800",  # a lone surrogate: not encodable as UTF-8
    "\u202e\u200b\ufeff\u0301",
    "😀" * 50,
    "ﬀ𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "<script>alert(1)</script>",
    "{{7*7}}${jndi:ldap://x/a}",
    LONG,
)
HOSTILE_NUMBERS: tuple[Any, ...] = (
    -1,
    0,
    2**31,
    2**63,
    -(2**63) - 1,
    10**30,
    1.5,
    1e308,
    True,
    None,
    [],
    {},
    "1",
    "NaN",
)
HOSTILE_PATH_IDS: tuple[str, ...] = (
    "..",
    "../..",
    "..%2F..%2Fopenapi.json",
    "%2e%2e%2f%2e%2e",
    "1%2F..%2F2",
    "1;DROP TABLE ebay_accounts",
    "1'--",
    "-1",
    "0",
    "99999999999999999999999",
    "1.5",
    "1e3",
    "0x10",
    "%20%31",
    "%EF%BC%91",  # a fullwidth digit one
    "%00",
    "%F0%9F%98%80",
    "null",
    "A" * 5000,
)
RAW_BODIES: tuple[bytes, ...] = (
    b"",
    b"{",
    b"[]",
    b"null",
    b"1",
    b'"text"',
    b'{"ebay_account_id":}',
    b'{"ebay_account_id": 1, "ebay_account_id": "x"}',
    b'{"ebay_account_id": 1' + b" " * 10 + b"}}}",
    b"[" * 30_000 + b"]" * 30_000,
    b'{"ebay_account_id": ' + b"9" * 5000 + b"}",
    b'{"email": "\\ud800@x.y", "password": "\\udfff"}',
    b"\xff\xfe\x00{",
    b"\xef\xbb\xbf{}",
)


def _routes(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        if path.startswith(EMULATOR_MOUNT):
            continue
        for method, operation in item.items():
            if method in ("get", "post", "put", "patch", "delete"):
                yield method.upper(), path, operation


def _body_schema(document: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any] | None:
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema")
    if schema is None:
        return None
    ref = schema.get("$ref", "")
    resolved: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return resolved


def _documented(operation: dict[str, Any]) -> set[int]:
    return {int(status) for status in operation.get("responses", {}) if status.isdigit()}


HTTP_PARSER_REFUSAL = "Invalid HTTP request received."


def _problem(answer: httpx.Response, documented: set[int]) -> str | None:
    """Why an answer is not acceptable for hostile input (None when it is)."""
    status = answer.status_code
    if status >= 500:
        return f"server error {status}: {answer.text[:300]}"
    if status < 400:
        return None if status in documented else f"undocumented {status}"
    if status == 400 and answer.text == HTTP_PARSER_REFUSAL:
        # Not HTTP at all (e.g. a control character in a header value, RFC 9110 §5.5): the
        # server's HTTP parser refuses it before the application sees a byte.
        return None
    try:
        error = answer.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"{status} without the error shape: {answer.text[:300]}"
    if not isinstance(error.get("code"), str) or not isinstance(error.get("message"), str):
        return f"{status} lacks code/message: {answer.text[:300]}"
    return None


async def _dump(runtime: Runtime, ignore: frozenset[str] = frozenset()) -> dict[str, list[str]]:
    """Every row of every table (the login counters excepted: they record refusals)."""
    tables: dict[str, list[str]] = {}
    async with runtime.db.read() as conn:
        for table in m.Base.metadata.sorted_tables:
            if table.name == "login_throttles" or table.name in ignore:
                continue
            rows = (await conn.execute(sa.select(table))).all()
            tables[table.name] = sorted(repr(tuple(row)) for row in rows)
    return tables


class Probe:
    """Sends requests and collects every unacceptable answer (reported together at the end)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.problems: list[str] = []
        self.sent = 0

    async def send(
        self,
        client: httpx.AsyncClient,
        method: str,
        url: str,
        documented: set[int],
        *,
        write: bool = False,
        ignore: frozenset[str] = frozenset(),
        **kwargs: Any,
    ) -> httpx.Response:
        before = await _dump(self.runtime, ignore) if write else None
        if "json" in kwargs:
            # Encoded here with \u escapes: httpx cannot encode a lone surrogate as UTF-8.
            kwargs["content"] = json.dumps(kwargs.pop("json")).encode()
            kwargs["headers"] = {**kwargs.get("headers", {}), "Content-Type": "application/json"}
        answer = await client.request(method, url, **kwargs)
        self.sent += 1
        what = f"{method} {url[:120]!r} {repr(kwargs)[:160]}"
        problem = _problem(answer, documented)
        if problem is not None:
            self.problems.append(f"{what}: {problem}")
        if before is not None and answer.status_code >= 400:
            after = await _dump(self.runtime, ignore)
            changed = [name for name in before if before[name] != after[name]]
            if changed:
                self.problems.append(f"{what}: refused ({answer.status_code}) but wrote {changed}")
        return answer

    def check(self) -> None:
        assert not self.problems, f"{len(self.problems)} of {self.sent}:\n" + "\n".join(
            self.problems[:40]
        )


@pytest.fixture
async def runtime(
    database: DatabaseTarget, emulator: tuple[Emulator, str], tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Runtime]:
    """As the shared fixture, but with the per-client login limit off: hundreds of hostile
    sign-ins come from 127.0.0.1 and must each reach the users table, not a 429."""
    async with open_test_runtime(
        database,
        emulator,
        tmp_path,
        clock,
        http_timeout_seconds=3,
        login_max_failures_per_client=0,
        login_max_failures=1000,
        # Configured, so the walk reaches the account-deletion challenge's real handler.
        deletion_verification_token="hostile-input-verification-token-0123456789",
    ) as rt:
        yield rt


class Site:
    def __init__(self, base: str, admin: httpx.AsyncClient, key: str, account_id: int) -> None:
        self.base = base
        self.admin = admin
        self.key = key
        self.account_id = account_id


RETURN_URL = "https://tool.example.com/back"


@pytest.fixture
async def site(runtime: Runtime) -> AsyncIterator[Site]:
    org = await runtime.store.create_organization("hostile")
    await Users(runtime.db).create(org, ADMIN, Role.ADMIN, PASSWORD)
    _, key = await ApiKeys(runtime.db).create(
        org, "hostile", can_read_tokens=True, can_connect=True, can_proxy=True
    )
    await runtime.return_urls.add(org, RETURN_URL)
    async with (
        serving(runtime) as base,
        httpx.AsyncClient(base_url=base, timeout=30, trust_env=False) as admin,
    ):
        if True:
            signed = await admin.post(
                "/api/auth/login", json={"email": ADMIN, "password": PASSWORD}
            )
            assert signed.status_code == 200, signed.text
            admin.headers[CSRF_HEADER] = signed.json()["csrf_token"]
            account_id = await _connect(admin, "hostile_seller")
            yield Site(base, admin, key, account_id)


async def _consent(session: httpx.AsyncClient, username: str, **params: Any) -> dict[str, str]:
    """Our /connect → the emulator's consent page (agree); the callback's query, not yet sent."""
    start = await session.post("/api/ebay/connect", params=params, follow_redirects=False)
    assert start.status_code == 303, start.text
    consent = urlsplit(start.headers["location"])
    query = {k: v[0] for k, v in parse_qs(consent.query).items()}
    async with httpx.AsyncClient(trust_env=False) as browser:
        agreed = await browser.post(
            f"{consent.scheme}://{consent.netloc}{consent.path}",
            data={**query, "username": username, "decision": "agree"},
        )
    assert agreed.status_code == 302, agreed.text
    return {k: v[0] for k, v in parse_qs(urlsplit(agreed.headers["location"]).query).items()}


async def _connect(session: httpx.AsyncClient, username: str) -> int:
    back = await _consent(session, username)
    done = await session.get("/api/ebay/callback", params=back)
    assert done.status_code == 200, done.text
    account_id: int = done.json()["account_id"]
    return account_id


async def _document(site: Site) -> dict[str, Any]:
    answer = await site.admin.get("/openapi.json")
    assert answer.status_code == 200
    document: dict[str, Any] = answer.json()
    return document


def _caller(site: Site, path: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {site.key}"} if path.startswith("/api/v1/") else {}


def _base_body(schema: dict[str, Any], account_id: int) -> dict[str, Any]:
    """A valid body to start from (one field at a time is then made hostile), so each field is
    reached with the others valid — a hostile description behind a valid URL, for one."""
    samples: dict[str, Any] = {
        "ebay_account_id": account_id,
        "email": ADMIN,
        "password": "not the password",
        "url": "https://hooks.example.com/hostile",
        "description": "ops",
        "force": False,
        "end_user_id": "seller-1",
        "end_user_label": "Seller One",
        "return_url": RETURN_URL + "/done",
        "account_id": None,  # a new connect, not a reconnect
    }
    return {name: samples.get(name, "x") for name in schema.get("properties", {})}


async def test_hostile_values_in_every_body_field_and_query_parameter(
    site: Site, runtime: Runtime
) -> None:
    document = await _document(site)
    probe = Probe(runtime)
    fields = 0
    for method, path, operation in _routes(document):
        if path == "/api/auth/login":
            continue  # each attempt costs an argon2 hash: its own, smaller test below
        documented = _documented(operation)
        url = path.replace("{account_id}", str(site.account_id))
        headers = _caller(site, path)
        schema = _body_schema(document, operation)
        if schema is not None:
            base = _base_body(schema, site.account_id)
            for name in schema.get("properties", {}):
                fields += 1
                for value in (*HOSTILE_STRINGS, *HOSTILE_NUMBERS):
                    await probe.send(
                        site.admin,
                        method,
                        url,
                        documented,
                        write=method != "GET",
                        headers=headers,
                        json={**base, name: value},
                    )
            # An unknown extra field and a body that is not an object.
            await probe.send(site.admin, method, url, documented, json={**base, "x\x00": 1})
        for parameter in operation.get("parameters", []):
            if parameter.get("in") != "query":
                continue
            fields += 1
            for value in (*HOSTILE_STRINGS, *HOSTILE_NUMBERS):
                if isinstance(value, list | dict) or value is None:
                    continue
                if value == "\ud800":
                    query = f"{parameter['name']}=%ED%A0%80"  # the surrogate's (invalid) UTF-8
                else:
                    query = f"{parameter['name']}={quote(str(value), safe='')}"
                await probe.send(
                    site.admin,
                    method,
                    f"{url}?{query}",
                    documented,
                    headers=headers,
                    follow_redirects=False,
                )
    probe.check()
    assert fields >= 10  # the walk found the document's fields
    assert probe.sent > 500


async def test_hostile_path_ids_and_cursors(site: Site, runtime: Runtime) -> None:
    document = await _document(site)
    probe = Probe(runtime)
    walked = 0
    for method, path, operation in _routes(document):
        if "{" not in path:
            continue
        walked += 1
        for raw in HOSTILE_PATH_IDS:
            await probe.send(
                site.admin,
                method,
                site.base + re.sub(r"\{[^}]+\}", raw, path),
                _documented(operation),
                write=method != "GET",
                headers=_caller(site, path),
            )
    terminal = document["paths"]["/api/admin/ebay/tokens/terminal-logs"]["get"]
    for cursor in ("0", "-1", str(2**62 + 1), str(2**64), "abc", "1.5", "", "%00", "1e3"):
        await probe.send(
            site.admin,
            "GET",
            f"/api/admin/ebay/tokens/terminal-logs?cursor={cursor}",
            _documented(terminal),
        )
    # A cursor past every entry is a valid, empty page.
    page = await site.admin.get("/api/admin/ebay/tokens/terminal-logs", params={"cursor": 1})
    assert page.status_code == 200
    assert page.json()["entries"] == []
    assert walked >= 2
    probe.check()
    # The account the traversal attempts aimed around is still there.
    assert await runtime.store.account_token(site.account_id) is not None


async def test_every_field_is_reached_with_the_others_valid(site: Site, runtime: Runtime) -> None:
    """The walk's valid base really is valid: each field alone decides the answer."""
    document = await _document(site)
    for method, path, operation in _routes(document):
        schema = _body_schema(document, operation)
        if schema is None or path == "/api/auth/login" or "{" in path:
            continue
        answer = await site.admin.request(
            method, path, json=_base_body(schema, site.account_id), headers=_caller(site, path)
        )
        assert answer.status_code < 400, (method, path, answer.text)


async def test_text_and_integer_limits_hold_on_every_backend(site: Site, runtime: Runtime) -> None:
    """A NUL in a webhook description and an id past what the column holds are the caller's
    error (422), never the database's (a 5xx carrying its driver's text)."""
    probe = Probe(runtime)
    for text in ("ops\x00", "a\u202eb", "line\nbreak", "\ud800"):
        answer = await probe.send(
            site.admin,
            "POST",
            "/api/admin/webhooks",
            {201},
            write=True,
            json={"url": "https://hooks.example.com/h", "description": text},
        )
        assert answer.status_code == 422, (text, answer.text)
    for after in ("9223372036854775808", "2147483648", "-1", "1e3", "%00"):
        page = await site.admin.get(f"/ui/terminal/entries?after={after}")
        assert page.status_code == 422, (after, page.text[:200])
        assert "error" in page.json()
    probe.check()


async def test_malformed_bodies_and_wrong_content_types(site: Site, runtime: Runtime) -> None:
    document = await _document(site)
    probe = Probe(runtime)
    posted = 0
    for method, path, operation in _routes(document):
        if _body_schema(document, operation) is None:
            continue
        posted += 1
        documented = _documented(operation)
        for raw in RAW_BODIES:
            answer = await probe.send(
                site.admin,
                method,
                path,
                documented,
                write=True,
                content=raw,
                headers={"Content-Type": "application/json"},
            )
            assert answer.status_code in (401, 413, 422), (path, raw[:40], answer.text)
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "", "x/\x7f"):
            await probe.send(
                site.admin,
                method,
                path,
                documented,
                write=True,
                content=b'{"ebay_account_id": 1}',
                headers={"Content-Type": content_type},
            )
    assert posted >= 3
    probe.check()


async def test_bodies_over_the_limit_are_refused_even_when_streamed(
    site: Site, runtime: Runtime
) -> None:
    probe = Probe(runtime)
    path = "/api/admin/ebay/token/refresh"
    big = b'{"ebay_account_id": 1, "pad": "' + b"x" * (MAX_BODY_BYTES + 10) + b'"}'

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    announced = await probe.send(site.admin, "POST", path, {413}, write=True, content=big)
    streamed = await probe.send(
        site.admin,
        "POST",
        path,
        {413},
        write=True,
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    for answer in (announced, streamed):
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"]["code"] == "too_large"
    probe.check()


async def test_the_oauth_callback_refuses_what_test_api_does_not_cover(
    site: Site, runtime: Runtime
) -> None:
    probe = Probe(runtime)
    documented = {200, 302, 303}
    admin = site.admin

    async def callback(
        client: httpx.AsyncClient, query: str, expected: int, code: str, *, uses_state: bool = False
    ) -> None:
        # A refusal writes nothing; only a valid state's own row is used up (by design).
        ignore = frozenset({"connect_states"}) if uses_state else frozenset()
        answer = await probe.send(
            client, "GET", f"/api/ebay/callback?{query}", documented, write=True, ignore=ignore
        )
        assert answer.status_code == expected, (query[:80], answer.text)
        assert answer.json()["error"]["code"] == code, (query[:80], answer.text)

    back = await _consent(admin, "callback_seller")
    state, code = quote(back["state"]), quote(back["code"])
    # Signed like ours, but with another secret; and ours, signed over another nonce.
    forged = URLSafeTimedSerializer(b"x" * 32, salt="ebay-connector oauth state").dumps("n")
    await callback(admin, f"code={code}&state={quote(forged)}", 400, "invalid_state")
    await callback(admin, f"code={code}", 400, "invalid_state")
    await callback(admin, "", 400, "invalid_state")
    await callback(admin, f"code={code}&state=", 400, "invalid_state")
    await callback(admin, f"code={code}&state=%00", 400, "invalid_state")
    await callback(admin, f"code={code}&state=' OR 1=1--", 400, "invalid_state")
    await callback(admin, f"code={code}&state={'A' * 3000}", 422, "validation_error")
    await callback(admin, f"code={'A' * 3000}&state={state}", 422, "validation_error")
    await callback(admin, f"code={code}&state={state}&expires_in=-1", 422, "validation_error")
    async with httpx.AsyncClient(base_url=site.base, trust_env=False) as anonymous:
        await callback(anonymous, f"code={code}&state={state}", 401, "unauthorized")
    # The state survived every refusal above; missing the code uses it up.
    await callback(admin, f"state={state}", 400, "missing_code", uses_state=True)
    await callback(admin, f"code={code}&state={state}", 400, "invalid_state")
    # eBay's other error answers, with and without a state.
    await callback(admin, "error=access_denied", 400, "invalid_state")
    fresh = await _consent(admin, "callback_seller")
    await callback(
        admin,
        f"error=server_error&error_description=%0D%0Aboom&state={quote(fresh['state'])}",
        400,
        "consent_declined",
        uses_state=True,
    )
    # The code of that consent was never used: still, its state is gone.
    await callback(
        admin, f"code={quote(fresh['code'])}&state={quote(fresh['state'])}", 400, "invalid_state"
    )
    probe.check()
    usernames = {a.ebay_username for a in await runtime.store.accounts()}
    assert "callback_seller" not in usernames


async def test_sign_in_with_hostile_emails_and_passwords_is_a_clean_401(
    site: Site, runtime: Runtime
) -> None:
    """Every value as the e-mail; the ones that matter to a hash (NUL, controls, a surrogate,
    long) as the password; the database-hostile ones through the UI's form too. (Each attempt
    with a well-formed e-mail costs an argon2 hash, hence the subsets.)"""
    probe = Probe(runtime)
    for_password = {"\x00", "a\x00b", "\x01\x02\x07\x08\x1b[31mred\x7f", "\ud800", "😀" * 50}
    for_form = {"\x00", "a\x00b", "\ud800", "' OR '1'='1", "😀" * 50, LONG}
    async with httpx.AsyncClient(base_url=site.base, trust_env=False, timeout=30) as client:
        for value in HOSTILE_STRINGS:
            bodies = [{"email": value, "password": PASSWORD}]
            if value in for_password:
                bodies.append({"email": ADMIN, "password": value})
            for body in bodies:
                answer = await probe.send(client, "POST", "/api/auth/login", {200}, json=body)
                assert answer.status_code in (401, 422), (body, answer.text)
            if value not in for_form:
                continue
            if value == "\ud800":
                form_body = b"email=%ED%A0%80&password=%ED%A0%80"
            else:
                form_body = f"email={quote(value)}&password={quote(value)}".encode()
            form = await client.post(
                "/login",
                content=form_body,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            # The form answers with its page (HTML) or, for a field over its limit, the error shape.
            assert form.status_code in (401, 422), (value[:40], form.text[:200])
    probe.check()

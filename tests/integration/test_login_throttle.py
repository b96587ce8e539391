"""Login throttling on real SQLite and PostgreSQL: the JSON login and the UI form share
one counter per e-mail and per client address, kept in the database so every API process sees it.

The app is called in-process through ``httpx.ASGITransport`` so each test can choose the socket
peer address (the transport's ``client``); time moves with the FakeClock, never by sleeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from ebay_connector.core.roles import Role
from ebay_connector.db import login_throttle
from ebay_connector.db.users import UserRow, Users
from ebay_connector.runtime import Runtime, open_runtime
from ebay_connector.web.app import create_app
from tests.conftest import DatabaseTarget, FakeClock, make_settings

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
EMAIL = "admin@throttle.test"
UNKNOWN = "nobody@throttle.test"


class CountingUsers(Users):
    """The real users, counting how many passwords reach argon2 (the cost throttling saves)."""

    calls = 0

    async def authenticate(self, email: str, password: str) -> UserRow | None:
        self.calls += 1
        return await super().authenticate(email, password)


@contextlib.asynccontextmanager
async def _runtime(
    database: DatabaseTarget, tmp_path: Path, clock: FakeClock, **extra: Any
) -> AsyncIterator[Runtime]:
    # No eBay call happens here: the emulator URL is never dialled.
    conf = make_settings(database, "http://127.0.0.1:9/emulator", tmp_path, **extra)
    async with open_runtime(
        conf, clock=clock, rng=random.Random(7), schema=database.schema
    ) as runtime:
        yield runtime


def _app(runtime: Runtime) -> tuple[FastAPI, CountingUsers]:
    users = CountingUsers(runtime.db)
    runtime.users = users
    app = create_app(runtime)
    return app, users


def _client(app: FastAPI, peer: str = "203.0.113.7") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def _login(client: httpx.AsyncClient, email: str, password: str, **kw: Any) -> httpx.Response:
    return await client.post("/api/auth/login", json={"email": email, "password": password}, **kw)


@contextlib.asynccontextmanager
async def _with_user(
    database: DatabaseTarget, tmp_path: Path, clock: FakeClock, **extra: Any
) -> AsyncIterator[Runtime]:
    async with _runtime(database, tmp_path, clock, **extra) as rt:
        org = await rt.store.create_organization("throttle")
        await Users(rt.db).create(org, EMAIL, Role.ADMIN, PASSWORD)
        yield rt


@pytest.fixture
async def runtime(database: DatabaseTarget, tmp_path: Path, clock: FakeClock) -> Any:
    """The default policy: 5 attempts per e-mail per 15 minutes, then 60 s doubling."""
    async with _with_user(database, tmp_path, clock) as rt:
        yield rt


@pytest.fixture
async def strict(database: DatabaseTarget, tmp_path: Path, clock: FakeClock) -> Any:
    """Two attempts per e-mail: the same rules with fewer (slow, argon2) password checks."""
    async with _with_user(database, tmp_path, clock, login_max_failures=2) as rt:
        yield rt


async def test_the_sixth_attempt_is_refused_before_any_password_check(runtime: Runtime) -> None:
    app, users = _app(runtime)
    async with _client(app) as client:
        for _ in range(5):
            wrong = await _login(client, EMAIL, "wrong password!")
            assert wrong.status_code == 401
            assert wrong.json()["error"]["code"] == "invalid_credentials"
        refused = await _login(client, EMAIL, PASSWORD)  # even the right password
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_attempts"
    assert refused.headers["retry-after"] == "60"
    assert "set-cookie" not in refused.headers
    assert users.calls == 5  # the sixth never reached argon2


async def test_a_refusal_does_not_reveal_whether_the_email_exists(strict: Runtime) -> None:
    app, _ = _app(strict)
    answers: dict[str, list[tuple[int, str, str | None]]] = {}
    for email, peer in ((EMAIL, "198.51.100.1"), (UNKNOWN, "198.51.100.2")):
        async with _client(app, peer) as client:
            seen = []
            for _ in range(4):
                answer = await _login(client, email, "wrong password!")
                seen.append((answer.status_code, answer.text, answer.headers.get("retry-after")))
            answers[email] = seen
    assert answers[EMAIL] == answers[UNKNOWN]
    assert [status for status, _, _ in answers[EMAIL]] == [401] * 2 + [429] * 2


async def test_lockouts_grow_and_a_success_resets(strict: Runtime, clock: FakeClock) -> None:
    app, _ = _app(strict)
    async with _client(app) as client:
        waits = []
        for _ in range(3):
            for _ in range(2):
                assert (await _login(client, EMAIL, "wrong password!")).status_code == 401
            refused = await _login(client, EMAIL, "wrong password!")
            assert refused.status_code == 429
            waits.append(int(refused.headers["retry-after"]))
            clock.advance(seconds=waits[-1] - 1)
            still = await _login(client, EMAIL, PASSWORD)
            assert still.status_code == 429  # a refusal inside the lock: not extended, still on
            assert still.headers["retry-after"] == "1"
            clock.advance(seconds=1)
        assert waits == [60, 120, 240]
        assert (await _login(client, EMAIL, PASSWORD)).status_code == 200
        # The success forgot the e-mail's history: two tries again, then the first lockout.
        for _ in range(2):
            assert (await _login(client, EMAIL, "wrong password!")).status_code == 401
        again = await _login(client, EMAIL, "wrong password!")
        assert again.headers["retry-after"] == "60"


async def test_failures_older_than_the_window_are_forgotten(
    strict: Runtime, clock: FakeClock
) -> None:
    app, _ = _app(strict)
    async with _client(app) as client:
        assert (await _login(client, EMAIL, "wrong password!")).status_code == 401
        clock.advance(minutes=14, seconds=59)
        assert (await _login(client, EMAIL, "wrong password!")).status_code == 401
        assert (await _login(client, EMAIL, "wrong password!")).status_code == 429
        clock.advance(minutes=2)  # the lock is over; its window starts with the lock
        assert (await _login(client, EMAIL, "wrong password!")).status_code == 401
        clock.advance(minutes=15)  # that failure's window is over too
        for _ in range(2):
            assert (await _login(client, EMAIL, "wrong password!")).status_code == 401
        assert (await _login(client, EMAIL, "wrong password!")).status_code == 429


async def test_the_ui_form_and_the_json_login_share_the_counter(runtime: Runtime) -> None:
    app, users = _app(runtime)
    async with _client(app) as client:
        for _ in range(3):
            assert (await _login(client, EMAIL, "wrong password!")).status_code == 401
        for _ in range(2):
            form = await client.post("/login", data={"email": EMAIL, "password": "nope nope"})
            assert form.status_code == 401
        page = await client.post("/login", data={"email": EMAIL, "password": PASSWORD})
    assert page.status_code == 429
    assert page.headers["retry-after"] == "60"
    assert "Too many sign-in attempts" in page.text
    assert "set-cookie" not in page.headers
    assert users.calls == 5


async def test_per_client_limit_and_spoofed_forwarded_for(
    database: DatabaseTarget, tmp_path: Path, clock: FakeClock
) -> None:
    async with _runtime(
        database,
        tmp_path,
        clock,
        login_max_failures_per_client=3,
        trusted_proxies="10.0.0.1, 10.1.0.0/16",
    ) as runtime:
        app, _ = _app(runtime)
        async with _client(app, "203.0.113.9") as guesser, _client(app, "10.0.0.1") as proxy:
            for n in range(3):
                answer = await _login(guesser, f"u{n}@throttle.test", "wrong password!")
                assert answer.status_code == 401
            # A fourth e-mail from the same address: refused; X-Forwarded-For from an untrusted
            # peer is ignored, so spoofing it does not escape.
            spoofed = await _login(
                guesser,
                "u9@throttle.test",
                "wrong password!",
                headers={"X-Forwarded-For": "192.0.2.44"},
            )
            assert spoofed.status_code == 429
            # Through the trusted proxy each forwarded client has its own counter; the proxy's
            # own address and trusted hops in the chain are skipped.
            for n in range(3):
                forwarded = await _login(
                    proxy,
                    f"p{n}@throttle.test",
                    "wrong password!",
                    headers={"X-Forwarded-For": "192.0.2.50, 10.1.2.3"},
                )
                assert forwarded.status_code == 401
            blocked = await _login(
                proxy,
                "p9@throttle.test",
                "wrong password!",
                headers={"X-Forwarded-For": "192.0.2.50"},
            )
            assert blocked.status_code == 429
            other = await _login(
                proxy,
                "p9@throttle.test",
                "wrong password!",
                headers={"X-Forwarded-For": "192.0.2.51"},
            )
            assert other.status_code == 401


async def test_two_api_processes_share_one_lock(
    runtime: Runtime, database: DatabaseTarget, tmp_path: Path, clock: FakeClock
) -> None:
    first, _ = _app(runtime)
    async with _runtime(database, tmp_path, clock) as other_runtime:
        second, second_users = _app(other_runtime)
        async with _client(first) as one, _client(second, "198.51.100.99") as two:
            for _ in range(5):
                assert (await _login(one, EMAIL, "wrong password!")).status_code == 401
            refused = await _login(two, EMAIL, PASSWORD)
        assert refused.status_code == 429
        assert second_users.calls == 0


async def test_parallel_guesses_cannot_outrun_the_counter(runtime: Runtime) -> None:
    app, users = _app(runtime)
    async with _client(app) as client:
        answers = await asyncio.gather(
            *(_login(client, EMAIL, f"guess number {n}") for n in range(24))
        )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [401] * 5 + [429] * 19
    assert users.calls == 5


async def test_the_table_holds_no_email_or_address(runtime: Runtime) -> None:
    app, _ = _app(runtime)
    async with _client(app, "192.0.2.77") as client:
        await _login(client, EMAIL, "wrong password!")
    async with runtime.db.read() as conn:
        rows = (await conn.execute(sa.text("SELECT * FROM login_throttles"))).all()
    assert {row.kind for row in rows} == {"email", "client"}
    dump = repr(rows)
    assert "throttle.test" not in dump
    assert "192.0.2.77" not in dump


# The pure core ----------------------------------------------------------------------------------

POLICY = login_throttle.Policy(
    max_failures=2,
    max_failures_per_client=10,
    window=timedelta(minutes=15),
    lockout=timedelta(minutes=1),
    lockout_max=timedelta(minutes=5),
)
T0 = datetime(2026, 11, 28, 12, tzinfo=UTC)


def test_lockouts_double_up_to_the_cap() -> None:
    durations = [login_throttle.lockout_for(n, POLICY) for n in range(1, 6)]
    assert durations == [timedelta(minutes=m) for m in (1, 2, 4, 5, 5)]
    assert login_throttle.lockout_for(10_000, POLICY) == timedelta(minutes=5)


def test_a_key_quiet_for_a_day_starts_afresh() -> None:
    locked = login_throttle.Counter(0, T0, 7, T0 + timedelta(minutes=5), T0)
    later = login_throttle.admit(locked, T0 + login_throttle.MEMORY, 2, POLICY)
    assert later.allowed
    assert later.state.lockouts == 0


def test_a_clock_that_went_back_does_not_freeze_the_window() -> None:
    state = login_throttle.Counter(2, T0, 0, None, T0)
    decision = login_throttle.admit(state, T0 - timedelta(minutes=1), 2, POLICY)
    assert decision.allowed


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.1", "192.0.2.1", "203.0.113.1"),  # untrusted peer: header ignored
        ("10.0.0.1", "192.0.2.1", "192.0.2.1"),
        ("10.0.0.1", "192.0.2.9, 192.0.2.1, 10.0.0.2", "192.0.2.1"),  # rightmost untrusted
        ("10.0.0.1", "not-an-ip, 192.0.2.1", "192.0.2.1"),
        ("10.0.0.1", "192.0.2.1, not-an-ip", "10.0.0.1"),  # malformed hop: the peer
        ("10.0.0.1", "10.0.0.3", "10.0.0.1"),  # only proxies: the peer
        ("10.0.0.1", None, "10.0.0.1"),
        (None, "192.0.2.1", None),
    ],
)
def test_client_address(peer: str | None, forwarded: str | None, expected: str | None) -> None:
    trusted = login_throttle.parse_networks("10.0.0.0/24")
    assert login_throttle.client_address(peer, forwarded, trusted) == expected

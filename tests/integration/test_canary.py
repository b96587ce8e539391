"""No secret in the clear: every token, code and the client secret are canaries.

After connecting, refreshing (ok, transient, revoked, undecryptable) and reading everything back,
no canary may appear in any table (other than inside its ciphertext), any log line at DEBUG, or
any exception text. The second test adds the passwords and the API key as canaries and walks
every API answer and every rendered page of a full connect → refresh → debug refresh → token API
→ failure run; the one answer that legitimately carries a secret, the token API's
``GET /api/v1/accounts/{id}/access-token`` answer to its own caller, is left out of the haystack.
The benchmarks' output is not scanned here: the smallest run takes > 20 s on the shared machine.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from ebay_connector import demo
from ebay_connector.core.exchange import Trigger
from ebay_connector.core.roles import Role
from ebay_connector.db import models
from ebay_connector.db.api_keys import ApiKeys
from ebay_connector.db.users import Users
from ebay_connector.emulator import Emulator, Faults
from ebay_connector.errors import ConnectorError
from ebay_connector.keys.crypto import TokenField
from ebay_connector.runtime import Runtime
from ebay_connector.web.app import create_app
from tests.conftest import DatabaseTarget, FakeClock, open_test_runtime
from tests.helpers import connect_seller

pytestmark = pytest.mark.integration

HANG_TIMEOUT_S = 3  # the hang case below ends when the HTTP timeout gives up


@pytest.fixture
async def runtime(
    database: DatabaseTarget, emulator: tuple[Emulator, str], tmp_path: Path, clock: FakeClock
) -> AsyncIterator[Runtime]:
    async with open_test_runtime(
        database, emulator, tmp_path, clock, http_timeout_seconds=HANG_TIMEOUT_S
    ) as rt:
        yield rt


async def _dump(runtime: Runtime) -> str:
    """Every value of every table, as text."""
    parts: list[str] = []
    async with runtime.db.engine.connect() as conn:
        for table in models.Base.metadata.sorted_tables:
            for row in (await conn.execute(sa.select(table))).all():
                parts.extend(repr(value) for value in row)
    return "\n".join(parts)


async def _plaintexts(runtime: Runtime) -> set[str]:
    ring = runtime.keys.ring
    found: set[str] = set()
    for account in await runtime.store.accounts():
        for field, ct in (
            (TokenField.ACCESS_TOKEN, account.access_token_ciphertext),
            (TokenField.REFRESH_TOKEN, account.refresh_token_ciphertext),
        ):
            if ct is None:
                continue
            with contextlib.suppress(ConnectorError):  # undecryptable: nothing to leak
                found.add(ring.decrypt(ct, account_id=account.account_id, field=field))
    return found


def _windows(secret: str, size: int = 24) -> list[str]:
    """Distinctive slices of a secret (its common `v^1.1#...` head is skipped)."""
    tail = secret[28:] if secret.startswith("v^") else secret
    return [tail[i : i + size] for i in range(0, max(len(tail) - size, 1), size)]


async def test_no_secret_in_database_logs_or_errors(
    runtime: Runtime,
    emulator: tuple[Emulator, str],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    emu, _ = emulator
    organization = await runtime.store.create_organization("Canary org")
    code = await demo.consent_code(runtime, "canary_seller")
    account_id = await connect_seller(runtime, organization, "canary_seller", code=code)
    canaries: set[str] = {code, runtime.settings.app_client_secret}
    canaries |= await _plaintexts(runtime)

    errors: list[str] = []
    for faults in (None, Faults(error_rate=1.0), Faults(malformed="json"), Faults(hang=True)):
        if faults is not None:
            emu.set_faults(faults, username="canary_seller")
        clock.advance(hours=2)
        try:
            result = await runtime.refresher.refresh(account_id, Trigger.DEBUG)
            errors.append(result.message)
        except ConnectorError as exc:
            errors.append(str(exc))
        emu.clear_faults("canary_seller")
        canaries |= await _plaintexts(runtime)
    clock.advance(seconds=31)  # past the on-demand cooldown of the last failure
    token = await runtime.refresher.get_access_token(account_id)
    canaries.add(token.access_token)
    emu.revoke_user("canary_seller")
    clock.advance(hours=2)
    errors.append((await runtime.refresher.refresh(account_id, Trigger.SCHEDULED)).message)

    assert len(canaries) >= 5
    dump = await _dump(runtime)
    exchanges = [repr(e) for e in await runtime.journal.exchanges(limit=100)]
    haystacks: dict[str, Any] = {
        "database": dump,
        "logs": caplog.text,
        "errors": "\n".join(errors),
        "exchanges": "\n".join(exchanges),
    }
    _assert_no_canary(haystacks, canaries)
    # The masked records still let two exchanges be compared.
    assert "fingerprint" in dump


ADMIN_PASSWORD = "canary-admin-Pw-7c1f9e2a4b"
VIEWER_PASSWORD = "canary-viewer-Pw-3d8e6b0f51"


def _assert_no_canary(haystacks: dict[str, str], canaries: set[str]) -> None:
    # pytest.fail, not assert: a failing assert would print the secret in the test report.
    for where, text in haystacks.items():
        for canary in canaries:
            if canary in text:
                pytest.fail(f"a secret appears in clear in {where}", pytrace=False)
            if any(window in text for window in _windows(canary)):
                pytest.fail(f"part of a secret appears in {where}", pytrace=False)


async def test_no_secret_in_any_answer_page_dump_log_or_error(
    runtime: Runtime,
    emulator: tuple[Emulator, str],
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    emu, _ = emulator
    organization = await runtime.store.create_organization("Canary shop")
    people = Users(runtime.db)
    await people.create(organization, "admin@canary.test", Role.ADMIN, ADMIN_PASSWORD)
    await people.create(organization, "viewer@canary.test", Role.VIEWER, VIEWER_PASSWORD)
    _, api_key = await ApiKeys(runtime.db).create(organization, "sync", can_read_tokens=True)
    code = await demo.consent_code(runtime, "canary_shop_seller")
    account = await connect_seller(runtime, organization, "canary_shop_seller", code=code)
    canaries: set[str] = {
        code,
        runtime.settings.app_client_secret,
        ADMIN_PASSWORD,
        VIEWER_PASSWORD,
        api_key,
        # The secret part alone: the key is "ebc_<hex id>_<secret>", and the secret itself may
        # hold "_" (URL-safe base64): the text after the last "_" can be a few characters any
        # dump holds by chance.
        api_key.split("_", 2)[2],
    }
    canaries |= await _plaintexts(runtime)

    answers: list[str] = []  # every answer body and header, except the token API's own answer
    errors: list[str] = []
    transport = httpx.ASGITransport(app=create_app(runtime))
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://canary") as admin,
        httpx.AsyncClient(transport=transport, base_url="http://canary") as program,
        httpx.AsyncClient(transport=transport, base_url="http://canary") as stranger,
    ):

        def keep(answer: httpx.Response) -> httpx.Response:
            answers.append(f"{answer.request.method} {answer.request.url} {answer.status_code}")
            answers.append(repr(dict(answer.headers)))
            answers.append(answer.text)
            return answer

        signed_in = keep(
            await admin.post(
                "/api/auth/login", json={"email": "admin@canary.test", "password": ADMIN_PASSWORD}
            )
        )
        assert signed_in.status_code == 200
        admin.headers["X-CSRF-Token"] = signed_in.json()["csrf_token"]
        program.headers["Authorization"] = f"Bearer {api_key}"
        ref = {"ebay_account_id": account}

        clock.advance(hours=2)
        assert keep(await admin.post("/api/admin/ebay/token/refresh", json=ref)).status_code == 200
        clock.advance(hours=2)
        debug = keep(await admin.post("/api/admin/ebay/token/refresh-debug", json=ref))
        assert debug.status_code == 200 and debug.json()["outcome"] == "ok"
        canaries |= await _plaintexts(runtime)
        clock.advance(hours=2)
        served = await program.get(f"/api/v1/accounts/{account}/access-token")
        assert served.status_code == 200  # its job is to carry the token: not in the haystack
        canaries.add(served.json()["access_token"])
        canaries |= await _plaintexts(runtime)

        # Failure paths: eBay failing, wrong credentials, a revoked grant.
        emu.set_faults(Faults(error_rate=1.0), username="canary_shop_seller")
        clock.advance(hours=2)
        keep(await admin.post("/api/admin/ebay/token/refresh-debug", json=ref))
        keep(await program.get(f"/api/v1/accounts/{account}/access-token"))
        emu.clear_faults("canary_shop_seller")
        wrong = {"email": "admin@canary.test", "password": ADMIN_PASSWORD + "x"}
        assert keep(await stranger.post("/api/auth/login", json=wrong)).status_code == 401
        bad_key = {"Authorization": f"Bearer {api_key}x"}
        assert keep(await stranger.get("/api/v1/accounts", headers=bad_key)).status_code == 401
        emu.revoke_user("canary_shop_seller")
        clock.advance(hours=2)
        keep(await admin.post("/api/admin/ebay/token/refresh", json=ref))
        assert keep(await program.get(f"/api/v1/accounts/{account}/access-token")).status_code in (
            409,
            503,
        )
        try:
            await runtime.refresher.get_access_token(account)
        except ConnectorError as exc:
            errors.append(f"{exc.code}: {exc}")

        # Every reading route of the API and every page of the UI, after all of that.
        for path in (
            "/api/auth/me",
            "/api/admin/ebay/accounts",
            "/api/admin/ebay/tokens/terminal-logs",
            f"/api/admin/ebay/tokens/terminal-logs?account={account}",
            "/readyz",
            "/",
            "/terminal",
            "/ui/terminal/entries",
            "/workers",
        ):
            assert keep(await admin.get(path)).status_code == 200, path
        # The deployment's figures are the instance operator's: an organization's admin is
        # refused (the answer is still searched for canaries).
        assert keep(await admin.get("/api/admin/workers")).status_code == 403
        keep(await admin.post("/api/admin/workers/token-refresh/run-once"))
        keep(await program.get("/api/v1/accounts"))
        keep(await stranger.get("/login"))

    assert len(answers) > 60
    _assert_no_canary(
        {
            "database": await _dump(runtime),
            "logs": caplog.text,
            "answers and pages": "\n".join(answers),
            "errors": "\n".join(errors),
        },
        canaries,
    )

"""No secret in the clear: every token, code and the client secret are canaries.

After connecting, refreshing (ok, transient, revoked, undecryptable) and reading everything back,
no canary may appear in any table (other than inside its ciphertext), any log line at DEBUG, or
any exception text.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import pytest
import sqlalchemy as sa

from ebay_connector import demo, models
from ebay_connector.connect import connect_with_code
from ebay_connector.crypto import TokenField
from ebay_connector.emulator import Emulator, Faults
from ebay_connector.errors import ConnectorError
from ebay_connector.exchange import Trigger
from ebay_connector.runtime import Runtime
from tests.conftest import FakeClock

pytestmark = pytest.mark.integration


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
    connection = await connect_with_code(
        store=runtime.store,
        journal=runtime.journal,
        client=runtime.client,
        keyring=runtime.keys.ring,
        organization_id=organization,
        environment=runtime.environment,
        code=code,
        scopes=runtime.settings.scope_list,
        policy_config=runtime.settings.policy,
        clock=clock,
    )
    account_id = connection.account_id
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
    for where, text in haystacks.items():
        for canary in canaries:
            assert canary not in text, f"a secret appears in clear in {where}"
            for window in _windows(canary):
                assert window not in text, f"part of a secret appears in {where}"
    # The masked records still let two exchanges be compared.
    assert "fingerprint" in dump

"""An account id is never handed out twice, on SQLite as on PostgreSQL.

A program keeps the id of the account whose tokens it reads; if a disconnected account's id came
back for the next seller connected, that program would silently read another seller's token.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from ebay_connector.runtime import Runtime

pytestmark = pytest.mark.integration


async def connect(runtime: Runtime, organization_id: int, username: str) -> int:
    now = runtime.clock()
    account_id, created = await runtime.store.save_connection(
        organization_id=organization_id,
        environment=runtime.environment,
        ebay_user_id=f"id-{username}",
        ebay_username=username,
        label=username,
        scopes=["https://api.ebay.com/oauth/api_scope"],
        encrypt=lambda aid, field, text: f"sealed-{aid}-{field}",  # the store only stores it
        access_token="unused",
        access_expires_at=now + timedelta(hours=2),
        refresh_token="unused",
        refresh_expires_at=now + timedelta(days=500),
        next_attempt_at=None,
        exchanges=[],
    )
    assert created
    return account_id


async def test_a_deleted_accounts_id_is_never_given_to_the_next_account(
    runtime: Runtime,
) -> None:
    org = await runtime.store.create_organization("Ids")
    first = await connect(runtime, org, "first_seller")
    newest = await connect(runtime, org, "second_seller")
    assert newest > first
    assert await runtime.store.delete_account(newest)  # the newest: SQLite would reuse its id
    third = await connect(runtime, org, "third_seller")
    assert third > newest
    assert await runtime.store.delete_account(third)
    assert await runtime.store.delete_account(first)
    fourth = await connect(runtime, org, "fourth_seller")
    assert fourth > third

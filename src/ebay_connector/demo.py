"""Demo data: one organization and eight accounts, connected through the emulator's real consent
page and code exchange, then put in the states real failures leave accounts in (a revoked grant,
a lost key, eBay failing, a token about to expire).

The demo organization is recreated at every start, because the emulator keeps its grants in
memory: tokens from an earlier run would all be unknown to it.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import httpx

from ebay_connector.core.roles import Role
from ebay_connector.emulator import Emulator, Faults
from ebay_connector.errors import ConnectFailed
from ebay_connector.keys.crypto import KeyRing, TokenField, generate_key
from ebay_connector.runtime import Runtime

DEMO_ORGANIZATION = "Demo Shop"


class Scenario(enum.StrEnum):
    HEALTHY = "healthy"
    EXPIRING = "expiring within the refresh window"
    EXPIRED = "access token already expired"
    REVOKED = "grant revoked on eBay's side"
    UNDECRYPTABLE = "refresh token ciphertext cannot be decrypted"
    EBAY_500 = "eBay answers 500 for this account"
    REFRESH_ENDING = "refresh token expires in 20 days"


@dataclass(frozen=True)
class DemoAccount:
    username: str
    label: str
    scenario: Scenario


DEMO_ACCOUNTS = (
    DemoAccount("demo_main_store", "Main store", Scenario.HEALTHY),
    DemoAccount("demo_outlet", "Outlet", Scenario.HEALTHY),
    DemoAccount("demo_expiring", "Spare parts", Scenario.EXPIRING),
    DemoAccount("demo_expired", "Vintage", Scenario.EXPIRED),
    DemoAccount("demo_revoked", "Old brand", Scenario.REVOKED),
    DemoAccount("demo_undecryptable", "Migrated shop", Scenario.UNDECRYPTABLE),
    DemoAccount("demo_ebay_500", "EU store", Scenario.EBAY_500),
    DemoAccount("demo_refresh_ending", "Wholesale", Scenario.REFRESH_ENDING),
)


DEMO_ADMIN = "admin@demo.local"
DEMO_VIEWER = "viewer@demo.local"


@dataclass(frozen=True)
class SeededAccount:
    account_id: int
    demo: DemoAccount


@dataclass(frozen=True)
class Demo:
    organization_id: int
    accounts: list[SeededAccount]
    admin_password: str
    viewer_password: str


async def consent_code(runtime: Runtime, username: str) -> str:
    """Answer the emulator's consent page the way a seller would (one GET, one POST)."""
    state = secrets.token_urlsafe(16)
    url = runtime.client.consent_url(runtime.settings.scope_list, state)
    # The emulator's consent page, not eBay: a plain client, not the refresh path's session.
    async with httpx.AsyncClient(timeout=runtime.settings.http_timeout_seconds) as browser:
        page = await browser.get(url)
        if page.status_code != 200:
            raise ConnectFailed(f"consent page answered {page.status_code}", code="consent_failed")
        answer = await browser.post(
            runtime.client.endpoints.authorize_url,
            data={
                "client_id": runtime.client.app.client_id,
                "redirect_uri": runtime.client.app.ru_name,
                "response_type": "code",
                "scope": " ".join(runtime.settings.scope_list),
                "state": state,
                "username": username,
                "decision": "agree",
            },
        )
    query = parse_qs(urlsplit(answer.headers.get("location", "")).query)
    if answer.status_code != 302 or query.get("state") != [state] or "code" not in query:
        raise ConnectFailed("the consent page did not redirect with a code", code="consent_failed")
    return str(query["code"][0])


async def seed(runtime: Runtime, emulator: Emulator) -> Demo:
    """Recreate the demo organization, its two users and its eight accounts."""
    store = runtime.store
    existing = await store.organization_id(DEMO_ORGANIZATION)
    if existing is not None:
        await store.delete_organization(existing)
    organization_id = await store.create_organization(DEMO_ORGANIZATION)
    people = runtime.users
    admin_password, viewer_password = secrets.token_urlsafe(12), secrets.token_urlsafe(12)
    await people.create(organization_id, DEMO_ADMIN, Role.ADMIN, admin_password)
    await people.create(organization_id, DEMO_VIEWER, Role.VIEWER, viewer_password)
    emulator.clear_faults()
    for demo in DEMO_ACCOUNTS:
        emulator.clear_faults(demo.username)
    seeded = []
    for demo in DEMO_ACCOUNTS:
        code = await consent_code(runtime, demo.username)
        connection = await runtime.connector.connect(
            organization_id=organization_id, code=code, label=demo.label, actor="demo"
        )
        seeded.append(SeededAccount(connection.account_id, demo))
    for account in seeded:
        await _apply(runtime, emulator, account)
    return Demo(organization_id, seeded, admin_password, viewer_password)


async def _apply(runtime: Runtime, emulator: Emulator, account: SeededAccount) -> None:
    now = runtime.clock()
    store = runtime.store
    scenario = account.demo.scenario
    if scenario is Scenario.HEALTHY:
        return
    if scenario is Scenario.EXPIRING:
        await store.set_access_expiry(account.account_id, now + timedelta(minutes=5), due=now)
    elif scenario is Scenario.EXPIRED:
        expired = now - timedelta(minutes=30)
        await store.set_access_expiry(account.account_id, expired, due=expired)
    elif scenario is Scenario.REVOKED:
        emulator.revoke_user(account.demo.username)
        await store.set_access_expiry(account.account_id, now + timedelta(minutes=3), due=now)
    elif scenario is Scenario.EBAY_500:
        emulator.set_faults(
            Faults(error_rate=1.0, error_status=500), username=account.demo.username
        )
        await store.set_access_expiry(account.account_id, now + timedelta(minutes=10), due=now)
    elif scenario is Scenario.UNDECRYPTABLE:
        # As after a deploy that lost a key: the token was sealed with a key the ring lacks.
        lost = KeyRing({"lost-key": generate_key()}, "lost-key", generate_key())
        row = await store.account_token(account.account_id)
        assert row is not None and row.refresh_token_ciphertext is not None
        ring, field = runtime.keys.ring, TokenField.REFRESH_TOKEN
        plaintext = ring.decrypt(
            row.refresh_token_ciphertext, account_id=account.account_id, field=field
        )
        ciphertext = lost.encrypt(plaintext, account_id=account.account_id, field=field)
        await store.set_refresh_ciphertext(account.account_id, ciphertext)
        await store.set_access_expiry(account.account_id, now - timedelta(minutes=1), due=now)
    elif scenario is Scenario.REFRESH_ENDING:
        ending = now + timedelta(days=20)
        emulator.set_refresh_expiry(account.demo.username, ending)
        await store.set_refresh_expiry(account.account_id, ending)

"""The eBay client against the real emulator (and, for broken HTTP, a real raw socket server).

Every answer and every transport failure must come back classified, with a masked exchange
record; nothing from aiohttp may escape the client.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import timedelta

import aiohttp
import pytest

from ebay_connector import settings as settings_module
from ebay_connector.core.exchange import Action
from ebay_connector.core.outcome import Outcome
from ebay_connector.ebay.client import (
    AppCredentials,
    CallResult,
    EbayClient,
    build_refresh_request,
)
from ebay_connector.emulator import Emulator, EmulatorServer, Faults
from ebay_connector.errors import DecryptFailed, InvalidStoredToken
from ebay_connector.keys.crypto import KeyRing, TokenField, generate_key
from ebay_connector.runtime import make_http_session

pytestmark = pytest.mark.integration

APP = AppCredentials("Client-Test-PRD-1", "client-test-secret", "Client_Test_RuName")
SCOPES = (
    "https://api.ebay.com/oauth/api_scope",
    "https://api.ebay.com/oauth/api_scope/commerce.identity.readonly",
)


@pytest.fixture
def served() -> Iterator[tuple[Emulator, str]]:
    emu = Emulator(seed=3)
    emu.register_app(APP.client_id, APP.client_secret, APP.ru_name, "http://127.0.0.1:9/cb")
    with EmulatorServer(emu) as server:
        yield emu, server.base_url


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing({"k1": generate_key()}, "k1", generate_key())


def make_client(
    http: aiohttp.ClientSession, base_url: str, ring: KeyRing, app: AppCredentials = APP
) -> EbayClient:
    return EbayClient(
        http,
        app=app,
        endpoints=settings_module.emulator_endpoints(base_url),
        fingerprinter=ring,
        deadline_s=2.0,
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    conf = settings_module.load(_env_file=None, http_timeout_seconds=2)
    async with make_http_session(conf) as client:
        yield client


def grant(emu: Emulator, username: str = "client_seller") -> dict[str, object]:
    return emu.issue_grant(APP.client_id, username, list(SCOPES))


async def refresh(client: EbayClient, refresh_token: str, ring: KeyRing) -> CallResult:
    request = build_refresh_request(
        ring.encrypt(refresh_token, account_id=1, field=TokenField.REFRESH_TOKEN),
        decrypt=lambda ct: ring.decrypt(ct, account_id=1, field=TokenField.REFRESH_TOKEN),
        scopes=SCOPES,
        app=client.app,
        endpoints=client.endpoints,
    )
    return await client.send_token_request(request)


async def test_refresh_ok_is_recorded_masked(
    served: tuple[Emulator, str], http: aiohttp.ClientSession, ring: KeyRing
) -> None:
    emu, base = served
    token = str(grant(emu)["refresh_token"])
    call = await refresh(make_client(http, base, ring), token, ring)
    assert call.classified.outcome is Outcome.OK
    assert call.classified.grant is not None
    assert call.classified.grant.expires_in == 7200
    record = call.exchange
    assert record.status == 200
    assert record.token_fingerprint == ring.fingerprint(token)
    assert token not in repr(record)
    assert call.classified.grant.access_token not in repr(record)
    assert record.request_headers["Authorization"].startswith("Basic ")
    assert APP.client_secret not in repr(record)


async def test_wrong_client_secret_is_invalid_client(
    served: tuple[Emulator, str], http: aiohttp.ClientSession, ring: KeyRing
) -> None:
    emu, base = served
    token = str(grant(emu)["refresh_token"])
    wrong = replace(APP, client_secret="not-the-secret")
    call = await refresh(make_client(http, base, ring, wrong), token, ring)
    assert call.classified.outcome is Outcome.INVALID_CLIENT
    assert call.exchange.status == 401
    assert call.exchange.error == "invalid_client: client authentication failed"


async def test_rate_limit_carries_retry_after(
    served: tuple[Emulator, str], http: aiohttp.ClientSession, ring: KeyRing
) -> None:
    emu, base = served
    token = str(grant(emu)["refresh_token"])
    emu.set_faults(Faults(rate_limited=True, retry_after_s=7))
    call = await refresh(make_client(http, base, ring), token, ring)
    assert call.classified.outcome is Outcome.RATE_LIMITED
    assert call.classified.retry_after == timedelta(seconds=7)
    assert call.exchange.response_headers["retry-after"] == "7"


@pytest.mark.parametrize(
    ("malformed", "expected"),
    [
        ("json", Outcome.MALFORMED_RESPONSE),
        ("missing_access_token", Outcome.MALFORMED_RESPONSE),
        ("html", Outcome.TRANSIENT),
    ],
)
async def test_broken_answers_are_classified(
    served: tuple[Emulator, str],
    http: aiohttp.ClientSession,
    ring: KeyRing,
    malformed: str,
    expected: Outcome,
) -> None:
    emu, base = served
    token = str(grant(emu)["refresh_token"])
    # The parameters are the Literal values of Faults.malformed, typed str by parametrize.
    emu.set_faults(Faults(malformed=malformed))  # type: ignore[arg-type]
    call = await refresh(make_client(http, base, ring), token, ring)
    assert call.classified.outcome is expected
    assert token not in repr(call.exchange)


async def test_hanging_server_times_out_as_transient(
    served: tuple[Emulator, str], http: aiohttp.ClientSession, ring: KeyRing
) -> None:
    emu, base = served
    token = str(grant(emu)["refresh_token"])
    emu.set_faults(Faults(hang=True, hang_s=10))
    call = await refresh(make_client(http, base, ring), token, ring)
    assert call.classified.outcome is Outcome.TRANSIENT
    assert call.exchange.status is None
    assert (call.exchange.error or "").startswith("timeout")


async def test_refused_connection_is_transient(http: aiohttp.ClientSession, ring: KeyRing) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        client = make_client(http, f"http://127.0.0.1:{port}", ring)
        request = client.application_token_request(SCOPES[:1])
        call = await client.send_token_request(request)
    assert call.classified.outcome is Outcome.TRANSIENT
    assert call.exchange.sent


async def test_undecodable_body_does_not_escape_the_client(
    http: aiohttp.ClientSession, ring: KeyRing
) -> None:
    """A body that is not what its Content-Encoding says (a payload error) is transient."""

    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Encoding: gzip\r\n"
            b"Content-Type: application/json\r\nContent-Length: 5\r\n\r\nhello"
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(broken, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = make_client(http, f"http://127.0.0.1:{port}", ring)
        call = await client.send_token_request(client.application_token_request(SCOPES[:1]))
    finally:
        server.close()
        await server.wait_closed()
    assert call.classified.outcome is Outcome.TRANSIENT


async def test_application_token(
    served: tuple[Emulator, str], http: aiohttp.ClientSession, ring: KeyRing
) -> None:
    _, base = served
    client = make_client(http, base, ring)
    call = await client.send_token_request(client.application_token_request(SCOPES[:1]))
    assert call.classified.outcome is Outcome.OK
    assert call.classified.grant is not None
    assert call.classified.grant.token_type == "Application Access Token"
    assert call.exchange.action is Action.CLIENT_CREDENTIALS


async def test_get_user_ok_and_refusals(
    served: tuple[Emulator, str], http: aiohttp.ClientSession, ring: KeyRing
) -> None:
    emu, base = served
    client = make_client(http, base, ring)
    body = grant(emu, "identity_seller")
    user, record = await client.get_user(str(body["access_token"]))
    assert user is not None
    assert user["username"] == "identity_seller"
    assert str(body["access_token"]) not in repr(record)
    nobody, refused = await client.get_user("v^1.1#i^1#p^3#r^1#I^3#f^0#t^not-a-token")
    assert nobody is None
    assert refused.outcome == Outcome.INVALID_GRANT.value
    assert refused.status == 401
    app_call = await client.send_token_request(client.application_token_request(SCOPES[:1]))
    assert app_call.classified.grant is not None
    no_user, wrong_kind = await client.get_user(app_call.classified.grant.access_token)
    assert no_user is None
    assert wrong_kind.status in (401, 403)


@pytest.mark.parametrize(
    ("plaintext", "error"),
    [
        ("", InvalidStoredToken),
        ("   ", InvalidStoredToken),
        ("not-an-ebay-token-at-all-xxxxxxxx", InvalidStoredToken),
        ("v^1.1#short", InvalidStoredToken),
        ("v^1.1#i^1#I^3#r^1#p^3#f^0#t^with space inside", InvalidStoredToken),
    ],
)
def test_builder_refuses_what_must_never_reach_ebay(
    ring: KeyRing, plaintext: str, error: type[Exception]
) -> None:
    stored = (
        ring.encrypt(plaintext, account_id=1, field=TokenField.REFRESH_TOKEN) if plaintext else ""
    )
    with pytest.raises(error):
        build_refresh_request(
            stored,
            decrypt=lambda ct: ring.decrypt(ct, account_id=1, field=TokenField.REFRESH_TOKEN),
            scopes=SCOPES,
            app=APP,
            endpoints=settings_module.emulator_endpoints("http://127.0.0.1:9"),
        )


def test_builder_refuses_a_decrypt_that_still_yields_ciphertext(ring: KeyRing) -> None:
    with pytest.raises(DecryptFailed):
        build_refresh_request(
            "ENC:v1:k1:whatever",
            decrypt=lambda ct: "ENC:v1:k1:inner",  # a decrypt that did not fully unwrap
            scopes=SCOPES,
            app=APP,
            endpoints=settings_module.emulator_endpoints("http://127.0.0.1:9"),
        )

"""`ebay-connector emulator` standalone: a plain client does consent, exchange and refresh."""

from __future__ import annotations

import signal
import subprocess
import time
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.acceptance.test_demo_cli import CLI, free_port

pytestmark = pytest.mark.acceptance

APP = ("Standalone-App-PRD-1", "standalone-secret", "Standalone_RuName")
ACCEPT = "https://seller-tool.example/ebay/callback"
SCOPE = "https://api.ebay.com/oauth/api_scope https://api.ebay.com/oauth/api_scope/sell.inventory"


def test_standalone_emulator_serves_the_whole_grant_cycle() -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            CLI,
            "emulator",
            "--port",
            str(port),
            "--client-id",
            APP[0],
            "--client-secret",
            APP[1],
            "--ru-name",
            APP[2],
            "--accept-url",
            ACCEPT,
            "--user",
            "standalone_seller",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=base, timeout=5) as http:
            while True:
                assert process.poll() is None
                try:
                    if http.get("/_emulator/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline
                time.sleep(0.1)
            consent = http.post(
                "/oauth2/authorize",
                data={
                    "client_id": APP[0],
                    "redirect_uri": APP[2],
                    "response_type": "code",
                    "scope": SCOPE,
                    "state": "st-1",
                    "username": "standalone_seller",
                    "decision": "agree",
                },
            )
            assert consent.status_code == 302
            location = consent.headers["location"]
            assert location.startswith(ACCEPT)
            query = parse_qs(urlsplit(location).query)
            assert query["state"] == ["st-1"]
            assert query["expires_in"] == ["299"]
            exchange = http.post(
                "/identity/v1/oauth2/token",
                data={
                    "grant_type": "authorization_code",
                    "code": query["code"][0],
                    "redirect_uri": APP[2],
                },
                auth=(APP[0], APP[1]),
            )
            assert exchange.status_code == 200
            grant = exchange.json()
            assert list(grant) == [
                "access_token",
                "expires_in",
                "refresh_token",
                "refresh_token_expires_in",
                "token_type",
            ]
            refreshed = http.post(
                "/identity/v1/oauth2/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": grant["refresh_token"],
                    "scope": SCOPE,
                },
                auth=(APP[0], APP[1]),
            )
            assert refreshed.status_code == 200
            assert set(refreshed.json()) == {"access_token", "expires_in", "token_type"}
            user = http.get(
                "/commerce/identity/v1/user/",
                headers={"Authorization": f"Bearer {refreshed.json()['access_token']}"},
            )
            assert user.status_code in (200, 403)  # 403: no identity scope was asked for
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)

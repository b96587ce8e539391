"""The trust boundary, tried as an attacker and as a careless operator would: sessions that end,
sign-in and connect that cannot be forged cross-site, limits on what one organization can spend,
an emulator that never faces a network, and answers that tell nothing of the server.

Each test here failed before its rule existed (see docs/security.md for the rules).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import stat
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import argon2
import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from ebay_connector import cli, serve
from ebay_connector import settings as settings_module
from ebay_connector.core.exchange import Trigger
from ebay_connector.core.outcome import Outcome
from ebay_connector.core.roles import Role
from ebay_connector.db import migrate, users
from ebay_connector.db import models as m
from ebay_connector.emulator import Emulator
from ebay_connector.errors import RateLimited, StoreError
from ebay_connector.runtime import Runtime
from ebay_connector.web import app as app_module
from ebay_connector.web.api import errors as api_errors
from ebay_connector.web.app import create_app
from tests.conftest import DatabaseTarget, FakeClock, in_thread, open_test_runtime
from tests.helpers import QuietServer, connect_seller, serve_asgi

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"


@dataclass
class Site:
    base: str
    runtime: Runtime
    org_a: int
    org_b: int

    def client(self, **kwargs: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base, timeout=30, **kwargs)  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def session(self, email: str) -> AsyncIterator[httpx.AsyncClient]:
        async with self.client() as client:
            answer = await client.post(
                "/api/auth/login", json={"email": email, "password": PASSWORD}
            )
            assert answer.status_code == 200, answer.text
            client.headers["X-CSRF-Token"] = answer.json()["csrf_token"]
            yield client


@pytest.fixture
async def site(runtime: Runtime) -> AsyncIterator[Site]:
    orgs = []
    for name in ("trusta", "trustb"):
        org = await runtime.store.create_organization(name)
        await runtime.users.create(org, f"admin@{name}.test", Role.ADMIN, PASSWORD)
        await runtime.users.create(org, f"viewer@{name}.test", Role.VIEWER, PASSWORD)
        orgs.append(org)
    async with serve_asgi(create_app(runtime)) as base:
        yield Site(base, runtime, orgs[0], orgs[1])


# Sessions end when they should --------------------------------------------------------------


async def test_a_copied_cookie_stops_working_at_sign_out(site: Site) -> None:
    async with site.session("admin@trusta.test") as admin:
        copied = dict(admin.cookies)
        async with site.client(cookies=copied) as thief:
            assert (await thief.get("/api/auth/me")).status_code == 200
            assert (await thief.get("/", follow_redirects=False)).status_code == 200
            assert (await admin.post("/api/auth/logout")).status_code == 204
            assert (await thief.get("/api/auth/me")).status_code == 401
            page = await thief.get("/", follow_redirects=False)
            assert (page.status_code, page.headers["location"]) == (303, "/login")


@pytest.mark.parametrize("change", ["password", "role", "remove"])
async def test_a_new_password_a_new_role_or_removal_ends_every_session(
    site: Site, change: str
) -> None:
    users = site.runtime.users
    async with site.session("viewer@trusta.test") as one, site.session("viewer@trusta.test") as two:
        user = await users.by_email("viewer@trusta.test")
        if change == "password":
            await users.set_password(user.id, "another long password")
        elif change == "role":
            await users.set_role(user.id, Role.ADMIN)
        else:
            await users.remove(user.id)
        for session in (one, two):
            ended = await session.get("/api/auth/me")
            assert ended.status_code == 401, change
            assert ended.json()["error"]["code"] == "unauthorized"


def test_cli_changes_a_password_and_ends_the_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    in_thread(migrate.upgrade, url)
    monkeypatch.setenv("EBAY_CONNECTOR_DATABASE_URL", url)
    monkeypatch.setenv("EBAY_CONNECTOR_KEY_FILE", str(tmp_path / "keyring.json"))
    email = "ops@cli.test"
    assert in_thread(cli.main, ["orgs", "create", "Cli"]) == 0
    create = ["users", "create", "--org", "Cli", "--email", email, "--role", "viewer"]
    assert in_thread(cli.main, [*create, "--password", PASSWORD]) == 0
    change = ["users", "set-password", "--email", email, "--password", "a new long password"]
    assert in_thread(cli.main, change) == 0
    assert in_thread(cli.main, ["users", "set-role", "--email", email, "--role", "admin"]) == 0
    assert in_thread(cli.main, ["users", "remove", "--email", email]) == 0
    assert in_thread(cli.main, ["users", "remove", "--email", email]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: not_found: no user '{email}'"]


# Sign-in and connect cannot be started from another site ------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://attacker.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site", "Origin": "https://attacker.example"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
async def test_sign_in_from_another_site_is_refused(site: Site, headers: dict[str, str]) -> None:
    form = {"email": "admin@trusta.test", "password": PASSWORD}
    async with site.client(headers=headers) as browser:
        page = await browser.post("/login", data=form, follow_redirects=False)
        assert page.status_code == 403 and "ebc_session" not in page.headers.get("set-cookie", "")
        api = await browser.post("/api/auth/login", json=form)
        assert api.status_code == 403 and api.json()["error"]["code"] == "csrf_failed"
    own = {"Origin": site.base, "Sec-Fetch-Site": "same-origin"}
    async with site.client(headers=own) as browser:
        page = await browser.post("/login", data=form, follow_redirects=False)
        assert page.status_code == 303 and "ebc_session" in page.headers["set-cookie"]


async def test_a_connect_starts_only_from_a_csrf_checked_post(site: Site) -> None:
    async with site.session("admin@trusta.test") as admin:
        link = await admin.get("/api/ebay/connect", follow_redirects=False)
        assert link.status_code == 405  # a link or an <img> on another site starts nothing
        csrf = admin.headers.pop("X-CSRF-Token")
        forged = await admin.post("/api/ebay/connect", follow_redirects=False)
        assert forged.status_code == 403 and forged.json()["error"]["code"] == "csrf_failed"
        async with site.runtime.db.read() as conn:
            states = (
                await conn.execute(sa.select(sa.func.count()).select_from(m.ConnectState))
            ).scalar()
        assert states == 0
        button = await admin.post(
            "/api/ebay/connect", data={"csrf_token": csrf}, follow_redirects=False
        )
        assert button.status_code == 303 and "/oauth2/authorize?" in button.headers["location"]


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10"])
def test_the_emulator_environment_refuses_a_non_loopback_host(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    host: str,
) -> None:
    monkeypatch.setenv("EBAY_CONNECTOR_DATABASE_URL", f"sqlite:///{tmp_path}/never.db")
    monkeypatch.setenv("EBAY_CONNECTOR_KEY_FILE", str(tmp_path / "keyring.json"))
    monkeypatch.setenv("EBAY_CONNECTOR_HOST", host)
    for command in (["serve", "--no-worker"], ["demo"]):
        assert in_thread(cli.main, command) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0].startswith("error: config_invalid: EBAY_CONNECTOR_HOST:")
        assert "bind 127.0.0.1" in lines[0] and "EBAY_CONNECTOR_EBAY_ENVIRONMENT" in lines[0]
    assert not (tmp_path / "never.db").exists()  # refused before anything was created


# One organization cannot spend the shared eBay quota --------------------------------------


async def test_manual_refreshes_are_limited_per_account_and_per_organization(
    site: Site, emulator: tuple[Emulator, str]
) -> None:
    emu = emulator[0]
    first = await connect_seller(site.runtime, site.org_a, "burst_one")
    others = [await connect_seller(site.runtime, site.org_a, f"burst_{n}") for n in range(12)]
    calls = emu.calls.count(grant_type="refresh_token")
    async with site.session("admin@trusta.test") as admin:
        answers = await asyncio.gather(
            *(
                admin.post("/api/admin/ebay/token/refresh", json={"ebay_account_id": first})
                for _ in range(40)
            )
        )
        statuses = sorted(a.status_code for a in answers)
        assert statuses == [200] * 4 + [429] * 36
        limited = next(a for a in answers if a.status_code == 429)
        assert limited.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        # Concurrent refreshes of one account share one eBay call; never more than allowed.
        burst = emu.calls.count(grant_type="refresh_token") - calls
        assert 1 <= burst <= 4
        codes = []
        for account in others:  # 4 spent above; the organization's allowance is 30 a minute
            for _ in range(3):
                body = {"ebay_account_id": account}
                codes.append(
                    (await admin.post("/api/admin/ebay/token/refresh", json=body)).status_code
                )
        assert codes == [200] * 26 + [429] * 10
        assert emu.calls.count(grant_type="refresh_token") == calls + burst + 26
    async with site.session("admin@trustb.test") as other:  # another organization is unaffected
        own = await connect_seller(site.runtime, site.org_b, "burst_b")
        answer = await other.post("/api/admin/ebay/token/refresh", json={"ebay_account_id": own})
        assert answer.status_code == 200, answer.text


async def test_replicas_share_one_manual_refresh_allowance(
    runtime: Runtime,
    database: DatabaseTarget,
    emulator: tuple[Emulator, str],
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    """Two processes of the product over one database: their admins' refreshes of one account
    count against one allowance (4 a minute), not 4 each."""
    emu = emulator[0]
    org = await runtime.store.create_organization("replicas")
    account_id = await connect_seller(runtime, org, "shared_allowance")
    calls = emu.calls.count(grant_type="refresh_token")
    async with open_test_runtime(database, emulator, tmp_path, clock) as replica:
        for process in (runtime, replica, runtime, replica):
            account = await process.store.account_token(account_id)
            assert account is not None
            result = await process.manual.refresh(account, Trigger.ADMIN, actor="test")
            assert result.outcome is Outcome.OK
            clock.advance(seconds=1)
        for process in (runtime, replica):
            account = await process.store.account_token(account_id)
            assert account is not None
            with pytest.raises(RateLimited) as refused:
                await process.manual.refresh(account, Trigger.ADMIN, actor="test")
            # The oldest of the four calls leaves the 60 s window 56 s from now.
            assert refused.value.retry_after_seconds == 56
        assert emu.calls.count(grant_type="refresh_token") == calls + 4
        clock.advance(seconds=57)
        account = await replica.store.account_token(account_id)
        assert account is not None
        again = await replica.manual.refresh(account, Trigger.ADMIN, actor="test")
        assert again.outcome is Outcome.OK


async def test_a_needs_reconnect_account_is_refreshed_only_when_forced(
    site: Site, emulator: tuple[Emulator, str]
) -> None:
    emu = emulator[0]
    account = await connect_seller(site.runtime, site.org_a, "gone_seller")
    emu.revoke_user("gone_seller")
    async with site.session("admin@trusta.test") as admin:
        body = {"ebay_account_id": account}
        failed = await admin.post("/api/admin/ebay/token/refresh", json=body)
        assert failed.json()["state"] == "needs_reconnect"
        calls = emu.calls.count(grant_type="refresh_token")
        said = await admin.post("/api/admin/ebay/token/refresh", json=body)
        assert said.status_code == 409 and said.json()["error"]["code"] == "needs_reconnect"
        assert emu.calls.count(grant_type="refresh_token") == calls  # eBay was not called
        forced = await admin.post("/api/admin/ebay/token/refresh", json={**body, "force": True})
        assert forced.status_code == 200 and forced.json()["outcome"] == "invalid_grant"
        assert emu.calls.count(grant_type="refresh_token") == calls + 1


# Sign-in hashing does not stall the server --------------------------------------------------


@pytest.fixture
def product_hashing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The product's own argon2 parameters (the suite's processes hash at the cheapest)."""
    monkeypatch.setattr(users, "_HASHER", argon2.PasswordHasher())
    users._dummy_hash.cache_clear()
    yield
    users._dummy_hash.cache_clear()


@pytest.mark.serial
@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
@pytest.mark.usefixtures("product_hashing")
async def test_healthz_stays_fast_during_40_concurrent_failed_sign_ins(site: Site) -> None:
    async with site.client() as client:
        await client.get("/healthz")  # warm the connection
        latencies: list[float] = []
        done = asyncio.Event()

        async def probe() -> None:
            while not done.is_set():
                started = time.perf_counter()
                assert (await client.get("/healthz")).status_code == 200
                latencies.append((time.perf_counter() - started) * 1000)
                await asyncio.sleep(0.005)

        async def sign_in(n: int) -> int:
            async with site.client() as other:
                body = {"email": f"nobody{n}-{uuid.uuid4().hex}@x.test", "password": "wrong" * 3}
                return (await other.post("/api/auth/login", json=body)).status_code

        prober = asyncio.create_task(probe())
        statuses = await asyncio.gather(*(sign_in(n) for n in range(40)))
        done.set()
        await prober
    assert statuses == [401] * 40
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    assert len(latencies) >= 10, latencies
    assert p99 < 50, f"/healthz p99 {p99:.1f} ms over {len(latencies)} probes"


# The server's own limits on headers and slow connections ------------------------------------


@contextlib.asynccontextmanager
async def product_server(runtime: Runtime) -> AsyncIterator[tuple[str, int]]:
    """The app behind the product's own server settings (serve.server_config) on loopback."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = QuietServer(serve.server_config(create_app(runtime), runtime.settings))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        await task
        sock.close()


async def _healthz_ms(host: str, port: int) -> float:
    async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as client:
        started = time.perf_counter()
        assert (await client.get("/healthz")).status_code == 200
        return (time.perf_counter() - started) * 1000


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_oversized_headers_are_refused_and_the_server_stays_responsive(
    runtime: Runtime,
) -> None:
    async with product_server(runtime) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        sent = 0
        answer = b""
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
            while sent < 64 * 1024 * 1024:  # the report's 64 MiB header
                writer.write(b"a" * 65536)
                await asyncio.wait_for(writer.drain(), 5)
                sent += 65536
        except ConnectionError:
            pass  # refused: the server closed the connection
        with contextlib.suppress(ConnectionError):
            answer = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        # Refused (431, or a reset when our bytes were still unread) long before 64 MiB: what
        # got through is the limit plus what the two sockets' buffers hold.
        assert sent < 16 * 1024 * 1024, sent
        assert answer in (b"",) or answer.startswith(b"HTTP/1.1 431 "), answer[:100]
        assert await _healthz_ms(host, port) < 1000


@pytest.mark.parametrize("database", ["sqlite"], indirect=True)
async def test_idle_and_partial_connections_are_closed_within_10_seconds(
    runtime: Runtime,
) -> None:
    async with product_server(runtime) as (host, port):
        held = []
        for n in range(200):
            reader, writer = await asyncio.open_connection(host, port)
            if n % 2:  # half send a request's beginning and then nothing more
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                await writer.drain()
            held.append((reader, writer))
        started = time.monotonic()
        assert await _healthz_ms(host, port) < 1000  # serving while they hang on
        for reader, _ in held:
            remaining = 10 - (time.monotonic() - started)
            assert await asyncio.wait_for(reader.read(), max(remaining, 0.1)) == b""
        assert time.monotonic() - started < 10
        for _, writer in held:
            writer.close()


# The smaller rules ----------------------------------------------------------------------------


async def _start_connect(session: httpx.AsyncClient) -> dict[str, str]:
    start = await session.post("/api/ebay/connect", follow_redirects=False)
    assert start.status_code == 303, start.text
    consent = urlsplit(start.headers["location"])
    query = {k: v[0] for k, v in parse_qs(consent.query).items()}
    async with httpx.AsyncClient() as browser:
        agreed = await browser.post(
            f"{consent.scheme}://{consent.netloc}{consent.path}",
            data={**query, "username": "state_seller", "decision": "agree"},
        )
    return {k: v[0] for k, v in parse_qs(urlsplit(agreed.headers["location"]).query).items()}


async def test_a_callback_from_another_session_leaves_the_state_to_its_owner(site: Site) -> None:
    async with site.session("admin@trusta.test") as victim:
        back = await _start_connect(victim)
        async with site.session("admin@trustb.test") as attacker:
            stolen = await attacker.get("/api/ebay/callback", params=back)
            assert stolen.status_code == 400
            assert stolen.json()["error"]["code"] == "invalid_state"
        done = await victim.get("/api/ebay/callback", params=back)
        assert done.status_code == 200, done.text
        assert done.json()["ebay_username"] == "state_seller"


def test_the_sqlite_directory_and_files_are_private(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/var/ebay-connector.db"
    in_thread(migrate.upgrade, url)
    var = tmp_path / "var"
    assert stat.S_IMODE(var.stat().st_mode) == 0o700
    files = list(var.iterdir())
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files), [
        (f.name, oct(f.stat().st_mode)) for f in files
    ]


async def test_every_answer_carries_the_browser_rules(site: Site) -> None:
    async with site.session("admin@trusta.test") as admin:
        for path in ("/", "/workers", "/webhooks", "/terminal", "/api/auth/me", "/login"):
            answer = await admin.get(path, follow_redirects=False)
            assert answer.status_code == 200, path
            headers = answer.headers
            assert headers["cache-control"] == "no-store", path
            assert headers["x-frame-options"] == "DENY", path
            assert "frame-ancestors 'none'" in headers["content-security-policy"], path
            assert "default-src 'self'" in headers["content-security-policy"], path
            assert headers["referrer-policy"] == "no-referrer", path
        for text in (
            (await admin.get("/")).text,
            (await admin.get("/workers")).text,
        ):  # nothing the policy would block: no inline script, handler or style attribute
            assert " onchange=" not in text and " style=" not in text
            assert "<script>" not in text


async def test_docs_work_offline_from_the_packages_own_files(site: Site) -> None:
    async with site.client() as browser:
        page = await browser.get("/docs")
        assert page.status_code == 200
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sources and all(s.startswith("/") for s in sources), sources
        for source in sources:
            asset = await browser.get(source)
            assert asset.status_code == 200 and len(asset.content) > 100, source


async def test_the_banner_shows_only_what_the_server_said_once(
    site: Site, emulator: tuple[Emulator, str]
) -> None:
    account = await connect_seller(site.runtime, site.org_a, "banner_seller")
    async with site.session("admin@trusta.test") as admin:
        forged = await admin.get("/", params={"notice": "Your session expired: call +1 555"})
        assert "555" not in forged.text and 'class="notice"' not in forged.text
        csrf = admin.headers["X-CSRF-Token"]
        done = await admin.post(
            f"/ui/accounts/{account}/refresh", data={"csrf_token": csrf}, follow_redirects=False
        )
        assert done.status_code == 303 and done.headers["location"] == f"/#account-{account}"
        shown = await admin.get("/")
        assert 'class="notice"' in shown.text and "banner_seller: ok" in shown.text
        again = await admin.get("/")
        assert 'class="notice"' not in again.text


@pytest.mark.parametrize(
    ("public_url", "host", "secure"),
    [
        ("http://127.0.0.1:8000", "127.0.0.1", False),
        ("https://connector.example", "127.0.0.1", True),
        ("http://connector.example", "127.0.0.1", True),
        ("http://127.0.0.1:8000", "0.0.0.0", True),
    ],
)
def test_cookies_are_secure_unless_everything_is_loopback(
    tmp_path: Path, public_url: str, host: str, secure: bool
) -> None:
    conf = settings_module.load(
        _env_file=None, public_url=public_url, host=host, key_file=tmp_path / "k.json"
    )
    assert app_module.secure_cookies(conf) is secure


# Operator and organization ------------------------------------------------------------------


async def test_instance_wide_figures_are_for_the_instance_operator(site: Site) -> None:
    await site.runtime.users.create(site.org_a, "ops@trusta.test", Role.OPERATOR, PASSWORD)
    await site.runtime.worker().run_once()  # a heartbeat: host, pid, version
    async with site.session("admin@trusta.test") as admin:
        for method, path in (
            ("GET", "/api/admin/workers"),
            ("POST", "/api/admin/workers/token-refresh/run-once"),
        ):
            refused = await admin.request(method, path)
            assert refused.status_code == 403, path
            assert "operator" in refused.json()["error"]["message"]
        page = await admin.get("/workers")
        assert page.status_code == 200
        beat = (await site.runtime.heartbeats.all())[0]
        assert f"pid {beat.pid}" not in page.text and "Run one cycle" not in page.text
        assert "refresh_token" not in page.text  # the shared quota table
    async with site.session("ops@trusta.test") as ops:
        figures = await ops.get("/api/admin/workers")
        assert figures.status_code == 200
        assert [w["pid"] for w in figures.json()["workers"]] == [beat.pid]
        assert "refresh_token" in figures.json()["quota"]
        page = await ops.get("/workers")
        assert f"pid {beat.pid}" in page.text and "Run one cycle" in page.text
        ran = await ops.post("/api/admin/workers/token-refresh/run-once")
        assert ran.status_code == 200, ran.text
        # An operator is also an admin of their own organization, and of no other.
        assert (await ops.get("/api/admin/ebay/accounts")).status_code == 200


def test_cli_creates_an_operator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    in_thread(migrate.upgrade, url)
    monkeypatch.setenv("EBAY_CONNECTOR_DATABASE_URL", url)
    monkeypatch.setenv("EBAY_CONNECTOR_KEY_FILE", str(tmp_path / "keyring.json"))
    assert in_thread(cli.main, ["orgs", "create", "Ops"]) == 0
    create = ["users", "create", "--org", "Ops", "--email", "o@ops.test", "--role", "operator"]
    assert in_thread(cli.main, [*create, "--password", PASSWORD]) == 0
    assert "(operator) created" in capsys.readouterr().out


async def test_a_database_error_answers_an_error_id_never_the_drivers_text(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    api_errors.install(app)

    @app.get("/boom")
    async def boom() -> None:
        raise StoreError('database error: invalid byte sequence for encoding "UTF8": 0x00')

    async with serve_asgi(app) as base, httpx.AsyncClient(base_url=base) as client:
        answer = await client.get("/boom")
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert "UTF8" not in answer.text and "0x00" not in answer.text
    assert error["code"] == "store_error" and error["error_id"] in error["message"]
    assert error["error_id"] in caplog.text and "UTF8" in caplog.text  # the log keeps it

"""Webhooks end to end: a receiver on loopback, the real emulator, real SQLite and PostgreSQL.

Each transition fires exactly one event, signed as docs/webhooks.md says (the test recomputes the
HMAC itself); deliveries are retried on 500 and stop on 2xx; an eBay outage of 500 failed
attempts is one ``account.refresh_failing``; delivery runs beside the worker, never inside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from starlette.types import Receive, Scope, Send

from ebay_connector import cli
from ebay_connector.core import destination, notices
from ebay_connector.core.exchange import Trigger
from ebay_connector.core.quota import QuotaConfig
from ebay_connector.core.roles import Role
from ebay_connector.db import migrate, outbox
from ebay_connector.db import models as m
from ebay_connector.db.api_keys import ApiKeys
from ebay_connector.db.heartbeats import HeartbeatRow
from ebay_connector.db.users import Users
from ebay_connector.emulator import Emulator, Faults
from ebay_connector.errors import ConnectorError
from ebay_connector.runtime import Runtime
from ebay_connector.service import outbound, webhooks
from ebay_connector.web.app import create_app
from tests.conftest import DatabaseTarget, FakeClock, in_thread, open_test_runtime
from tests.helpers import connect_seller, serve_asgi

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"


serve = serve_asgi  # the real app on a loopback port (tests/helpers.py)
LOCAL_RECEIVERS = "127.0.0.0/8"  # the receivers here listen on loopback: opted in, as docs say
LOCAL = outbound.DestinationPolicy(destination.parse_networks(LOCAL_RECEIVERS))


@pytest.fixture
async def runtime(
    database: DatabaseTarget,
    emulator: tuple[Emulator, str],
    tmp_path: Path,
    clock: FakeClock,
) -> AsyncIterator[Runtime]:
    async with open_test_runtime(
        database,
        emulator,
        tmp_path,
        clock,
        http_timeout_seconds=3,
        webhook_allowed_networks=LOCAL_RECEIVERS,
    ) as rt:
        yield rt


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed


@dataclass
class Receiver:
    """A webhook receiver: records every request, answers the scripted statuses (then 200)."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    hold: asyncio.Event | None = None  # when set, requests wait for it before answering
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.received.append(Received(headers, body))
        self.arrived.set()
        if self.hold is not None:
            await self.hold.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        return [r.event for r in self.received if type_ is None or r.event["type"] == type_]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    async with serve(rec) as base:
        rec.url = base + "/hook"
        yield rec
        if rec.hold is not None:
            rec.hold.set()


def verify_as_documented(secret: str, got: Received) -> None:
    """docs/webhooks.md: v1 = hex HMAC-SHA256(key=secret, msg=f"{t}.{raw body}")."""
    parts = dict(p.split("=", 1) for p in got.headers["x-ebay-connector-signature"].split(","))
    expected = hmac.new(
        secret.encode(), parts["t"].encode() + b"." + got.body, hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected)
    assert got.headers["x-ebay-connector-event-id"] == got.event["id"]
    assert got.headers["x-ebay-connector-event-type"] == got.event["type"]
    assert got.headers["content-type"] == "application/json"


@dataclass
class Setup:
    runtime: Runtime
    emulator: Emulator
    organization_id: int
    endpoint_id: int
    secret: str
    chore: webhooks.NoticeChore

    async def connect(self, username: str) -> int:
        return await connect_seller(self.runtime, self.organization_id, username)

    async def notice(self) -> None:
        """One run of the worker's notice chore, then wait for its delivery task."""
        await self.chore.run(self.runtime.clock())
        await self.chore.dispatcher.idle()

    async def expire(self, account_id: int) -> None:
        now = self.runtime.clock()
        await self.runtime.store.set_access_expiry(account_id, now - timedelta(minutes=1), now)


@pytest.fixture
async def setup(
    runtime: Runtime, emulator: tuple[Emulator, str], receiver: Receiver
) -> AsyncIterator[Setup]:
    organization_id = await runtime.store.create_organization("Hooked shop")
    row, secret = await runtime.webhooks.create(organization_id, receiver.url, "test receiver")
    chore = next(c for c in runtime.chores if c.name == "notices")
    assert isinstance(chore, webhooks.NoticeChore)
    chore.dispatcher.rng = random.Random(3)
    yield Setup(runtime, emulator[0], organization_id, row.id, secret, chore)
    await chore.dispatcher.close()


async def test_each_transition_fires_exactly_one_signed_event(
    setup: Setup, receiver: Receiver, clock: FakeClock
) -> None:
    rt = setup.runtime
    account_id = await setup.connect("hook_seller")
    await setup.notice()
    assert receiver.received == []  # a healthy new account is no news

    setup.emulator.revoke_user("hook_seller")
    await setup.expire(account_id)
    for _ in range(3):  # the worker and an admin keep trying: still one transition
        await rt.refresher.refresh(account_id, Trigger.ADMIN)
        clock.advance(minutes=5)
        await setup.notice()
    assert [e["type"] for e in receiver.events()] == ["account.needs_reconnect"]
    event = receiver.events()[0]
    assert event["data"]["reason"] == "invalid_grant"
    assert event["data"]["account"]["id"] == account_id
    assert event["organization_id"] == setup.organization_id
    verify_as_documented(setup.secret, receiver.received[0])

    await setup.connect("hook_seller")  # the seller reconnects
    for _ in range(2):
        clock.advance(minutes=5)
        await setup.notice()
    assert [e["type"] for e in receiver.events()] == [
        "account.needs_reconnect",
        "account.recovered",
    ]
    verify_as_documented(setup.secret, receiver.received[1])
    assert len({r.event["id"] for r in receiver.received}) == 2
    log = await outbox.Outbox(rt.db).deliveries(setup.organization_id, setup.endpoint_id)
    assert [(d.event_type, d.status, d.attempts, d.last_status_code) for d in log] == [
        ("account.recovered", "delivered", 1, 200),
        ("account.needs_reconnect", "delivered", 1, 200),
    ]


async def test_an_ebay_outage_of_500_failed_attempts_sends_one_refresh_failing(
    setup: Setup, receiver: Receiver, clock: FakeClock
) -> None:
    rt = setup.runtime
    account_id = await setup.connect("outage_seller")
    setup.emulator.set_faults(Faults(error_rate=1.0, error_status=500))
    await setup.expire(account_id)
    for attempt in range(500):
        result = await rt.refresher.refresh(account_id, Trigger.ADMIN)
        assert result.outcome.value == "transient"
        clock.advance(seconds=30)
        if attempt % 5 == 0:
            await setup.notice()
    await setup.notice()
    account = await rt.store.account_token(account_id)
    assert account is not None and account.failures_in_row == 500
    assert [e["type"] for e in receiver.events()] == ["account.refresh_failing"]
    failing = receiver.events()[0]["data"]
    assert failing["failures_in_row"] <= 500 and failing["account"]["id"] == account_id

    setup.emulator.clear_faults()
    assert (await rt.refresher.refresh(account_id, Trigger.ADMIN)).outcome.value == "ok"
    await setup.notice()
    await setup.notice()
    assert [e["type"] for e in receiver.events()] == [
        "account.refresh_failing",
        "account.recovered",
    ]


async def test_deliveries_are_retried_on_500_and_stop_on_2xx(
    setup: Setup, receiver: Receiver, clock: FakeClock
) -> None:
    box = outbox.Outbox(setup.runtime.db)
    receiver.statuses = [500, 500]
    [delivery_id] = await box.emit(setup.organization_id, "webhook.test", {"n": 1})
    dispatcher = setup.chore.dispatcher
    assert await dispatcher.drain() == 1
    first = await box.delivery(delivery_id)
    assert first is not None
    assert (first.status, first.attempts, first.last_status_code) == ("pending", 1, 500)
    assert first.next_attempt_at is not None and first.next_attempt_at > clock.now
    assert await dispatcher.drain() == 0  # not due yet: backoff
    for _ in range(4):
        clock.advance(hours=3)
        await dispatcher.drain()
    assert len(receiver.received) == 3  # 500, 500, 200, then nothing more
    done = await box.delivery(delivery_id)
    assert done is not None
    assert (done.status, done.attempts, done.last_status_code) == ("delivered", 3, 200)
    assert [r.headers["x-ebay-connector-delivery-attempt"] for r in receiver.received] == [
        "1",
        "2",
        "3",
    ]
    assert len({r.event["id"] for r in receiver.received}) == 1  # one idempotency id
    for got in receiver.received:
        verify_as_documented(setup.secret, got)
    # Each attempt is counted in the runtime's metrics by its outcome.
    counted = setup.runtime.metrics.webhook_deliveries
    assert counted.labels(outcome="retrying")._value.get() == 2
    assert counted.labels(outcome="delivered")._value.get() == 1


async def test_the_chore_prunes_old_events_but_never_one_still_being_delivered(
    setup: Setup, receiver: Receiver, clock: FakeClock
) -> None:
    box = outbox.Outbox(setup.runtime.db)
    dispatcher = setup.chore.dispatcher
    [delivered] = await box.emit(setup.organization_id, "webhook.test", {"n": "delivered"})
    await dispatcher.drain()
    receiver.statuses = [500] * 50
    [retrying] = await box.emit(setup.organization_id, "webhook.test", {"n": "retrying"})
    await dispatcher.drain()
    clock.advance(days=29)
    [recent] = await box.emit(setup.organization_id, "webhook.test", {"n": "recent"})
    clock.advance(days=2)  # the first two are now 31 days old; retention is 30
    assert setup.chore.keep == timedelta(days=30)

    done = await setup.chore.run(clock.now)
    await dispatcher.idle()

    assert done.get("pruned") == 1  # the delivered one; the retrying one is still pending
    assert await box.delivery(delivered) is None
    kept = [await box.delivery(i) for i in (retrying, recent)]
    assert all(row is not None for row in kept)
    async with setup.runtime.db.read() as conn:
        events = (
            await conn.execute(sa.select(sa.func.count()).select_from(m.NoticeEvent))
        ).scalar()
    assert events == 2


async def test_a_delivery_that_keeps_failing_gives_up_after_the_last_attempt(
    setup: Setup, receiver: Receiver, clock: FakeClock
) -> None:
    box = outbox.Outbox(setup.runtime.db)
    receiver.statuses = [500] * 10
    dispatcher = webhooks.Dispatcher(
        box,
        setup.runtime.keys.ring,
        config=webhooks.DispatchConfig(max_attempts=3, destinations=LOCAL),
        clock=clock,
        rng=random.Random(1),
    )
    [delivery_id] = await box.emit(setup.organization_id, "webhook.test", {})
    for _ in range(6):
        await dispatcher.drain()
        clock.advance(hours=3)
    row = await box.delivery(delivery_id)
    assert row is not None
    assert (row.status, row.attempts, row.last_error) == ("failed", 3, "HTTP 500")
    assert len(receiver.received) == 3


async def test_a_hanging_receiver_does_not_hold_up_the_worker_cycle(
    setup: Setup, receiver: Receiver, clock: FakeClock
) -> None:
    rt = setup.runtime
    account_id = await setup.connect("slow_hook_seller")
    setup.emulator.revoke_user("slow_hook_seller")
    await setup.expire(account_id)
    receiver.hold = asyncio.Event()
    report = await rt.worker().run_once()  # refreshes, then the notice chore kicks delivery
    assert report.counts.needs_reconnect == 1
    assert report.counts.chores["notices"] == {"events": 1}
    # The cycle is over while the receiver still holds the request open.
    await asyncio.wait_for(receiver.arrived.wait(), 10)
    pending = await outbox.Outbox(rt.db).deliveries(setup.organization_id)
    assert [d.status for d in pending] == ["pending"]
    receiver.hold.set()
    await setup.chore.dispatcher.idle()
    done = await outbox.Outbox(rt.db).deliveries(setup.organization_id)
    assert [d.status for d in done] == ["delivered"]


async def test_two_replicas_deciding_on_the_same_transition_emit_it_once(
    setup: Setup, receiver: Receiver
) -> None:
    rt = setup.runtime
    account_id = await setup.connect("twin_seller")
    setup.emulator.revoke_user("twin_seller")
    await setup.expire(account_id)
    await rt.refresher.refresh(account_id, Trigger.ADMIN)
    other = outbox.Outbox(rt.db)  # another replica's outbox on the same database
    seen = await setup.chore.outbox.candidates(rt.clock(), timedelta(days=30), 0, 10)
    # Both read the same mark, both decide; only the compare-and-set winner writes events.
    results = []
    for box in (setup.chore.outbox, other):
        for row in seen:
            found, mark = notices.decide(row.mark, row.facts, rt.clock())
            payloads: list[tuple[str, dict[str, Any]]] = [(n.type.value, {}) for n in found]
            results.append(await box.commit_mark(row, mark, payloads, rt.clock()))
    assert results == [True, False]
    await setup.notice()
    assert [e["type"] for e in receiver.events()] == ["account.needs_reconnect"]


async def test_the_endpoint_secret_is_sealed_to_its_row(setup: Setup) -> None:
    async with setup.runtime.db.read() as conn:
        stored = (
            await conn.execute(
                sa.select(m.WebhookEndpoint.secret_ciphertext).where(
                    m.WebhookEndpoint.id == setup.endpoint_id
                )
            )
        ).scalar_one()
    assert stored.startswith("ENC:v1:") and setup.secret not in stored
    ring = setup.runtime.keys.ring
    assert ring.open(stored, context=f"webhook/{setup.endpoint_id}") == setup.secret
    with pytest.raises(ConnectorError):
        ring.open(stored, context=f"webhook/{setup.endpoint_id + 1}")


# The API and the page ----------------------------------------------------------------------


@dataclass
class Site:
    base: str
    runtime: Runtime
    org_a: int
    org_b: int
    key_a: str

    @contextlib.asynccontextmanager
    async def session(self, email: str) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(base_url=self.base, timeout=10) as client:
            answer = await client.post(
                "/api/auth/login", json={"email": email, "password": PASSWORD}
            )
            assert answer.status_code == 200, answer.text
            client.headers["X-CSRF-Token"] = answer.json()["csrf_token"]
            yield client


@pytest.fixture
async def site(runtime: Runtime) -> AsyncIterator[Site]:
    people = Users(runtime.db)
    orgs = []
    for name in ("hooka", "hookb"):
        org = await runtime.store.create_organization(name)
        await people.create(org, f"admin@{name}.test", Role.ADMIN, PASSWORD)
        await people.create(org, f"viewer@{name}.test", Role.VIEWER, PASSWORD)
        orgs.append(org)
    _, key = await ApiKeys(runtime.db).create(orgs[0], "hooks", can_read_tokens=False)
    async with serve(create_app(runtime)) as base:
        yield Site(base, runtime, orgs[0], orgs[1], key)
    for chore in runtime.chores:
        if isinstance(chore, webhooks.NoticeChore):
            await chore.dispatcher.close()


async def test_api_adds_lists_tests_logs_and_removes_endpoints_per_organization(
    site: Site, receiver: Receiver
) -> None:
    async with site.session("admin@hooka.test") as admin, site.session("admin@hookb.test") as b:
        for bad in ("ftp://x.test/", "not a url", "https://u:p@x.test/"):
            refused = await admin.post("/api/admin/webhooks", json={"url": bad})
            assert refused.status_code == 422, bad
            assert refused.json()["error"]["code"] == "invalid_webhook_url"
        missing = await admin.post("/api/admin/webhooks", json={})
        assert missing.status_code == 422
        assert missing.json()["error"]["code"] == "validation_error"
        assert (await admin.get("/api/admin/webhooks")).json() == {"webhooks": []}

        created = await admin.post(
            "/api/admin/webhooks", json={"url": receiver.url, "description": "ops"}
        )
        assert created.status_code == 201, created.text
        secret, hook = created.json()["secret"], created.json()["id"]
        twice = await admin.post("/api/admin/webhooks", json={"url": receiver.url})
        assert twice.status_code == 409, twice.text
        assert twice.json()["error"]["code"] == "webhook_exists"
        # Another organization may use the same URL: uniqueness is per organization.
        elsewhere = await b.post("/api/admin/webhooks", json={"url": receiver.url})
        assert elsewhere.status_code == 201, elsewhere.text
        assert (await b.delete(f"/api/admin/webhooks/{elsewhere.json()['id']}")).status_code == 204
        assert secret.startswith("whsec_")
        listed = await admin.get("/api/admin/webhooks")
        assert [w["id"] for w in listed.json()["webhooks"]] == [hook]
        assert secret not in listed.text and "secret" not in listed.json()["webhooks"][0]

        for _ in range(2):
            tested = await admin.post(f"/api/admin/webhooks/{hook}/test")
            assert tested.status_code == 200, tested.text
            assert tested.json()["status"] == "delivered"
            assert tested.json()["last_status_code"] == 200
        assert [e["type"] for e in receiver.events()] == ["webhook.test", "webhook.test"]
        for got in receiver.received:
            verify_as_documented(secret, got)
        log = (await admin.get(f"/api/admin/webhooks/{hook}/deliveries")).json()["deliveries"]
        assert [d["event_id"] for d in log] == [r.event["id"] for r in receiver.received][::-1]
        assert log[0]["id"] > log[1]["id"]  # newest first

        # Another organization's endpoint does not exist for b.
        for method, path in (
            ("GET", f"/api/admin/webhooks/{hook}/deliveries"),
            ("POST", f"/api/admin/webhooks/{hook}/test"),
            ("DELETE", f"/api/admin/webhooks/{hook}"),
        ):
            answer = await b.request(method, path)
            assert answer.status_code == 404, (method, path)
            assert answer.json()["error"]["code"] == "webhook_not_found"
        assert (await b.get("/api/admin/webhooks")).json() == {"webhooks": []}
        assert len(receiver.received) == 2

        gone = await admin.delete(f"/api/admin/webhooks/{hook}")
        assert gone.status_code == 204
        assert (await admin.delete(f"/api/admin/webhooks/{hook}")).status_code == 404


async def test_api_keys_and_viewers_may_only_read_webhooks(site: Site, receiver: Receiver) -> None:
    async with site.session("admin@hooka.test") as admin:
        created = await admin.post("/api/admin/webhooks", json={"url": receiver.url})
        assert created.status_code == 201, created.text
        endpoint_id = created.json()["id"]
    async with httpx.AsyncClient(base_url=site.base, timeout=10) as program:
        program.headers["Authorization"] = f"Bearer {site.key_a}"
        assert len((await program.get("/api/admin/webhooks")).json()["webhooks"]) == 1
        for refused in (
            await program.post("/api/admin/webhooks", json={"url": receiver.url}),
            await program.post(f"/api/admin/webhooks/{endpoint_id}/test"),
            await program.delete(f"/api/admin/webhooks/{endpoint_id}"),
        ):
            assert refused.status_code == 403, refused.text
            assert refused.json()["error"]["code"] == "forbidden"
    async with site.session("viewer@hooka.test") as viewer:
        assert len((await viewer.get("/api/admin/webhooks")).json()["webhooks"]) == 1
        refused = await viewer.post("/api/admin/webhooks", json={"url": receiver.url})
        assert refused.status_code == 403
    async with httpx.AsyncClient(base_url=site.base, timeout=10) as anonymous:
        assert (await anonymous.get("/api/admin/webhooks")).status_code == 401
        no_csrf = await anonymous.post("/api/admin/webhooks", json={"url": receiver.url})
        assert no_csrf.status_code == 401


async def test_the_page_shows_the_secret_once_and_sends_a_test_event(
    site: Site, receiver: Receiver
) -> None:
    async with site.session("admin@hooka.test") as admin:
        csrf = admin.headers["X-CSRF-Token"]
        del admin.headers["X-CSRF-Token"]
        page = await admin.get("/webhooks")
        assert page.status_code == 200 and "No endpoint yet." in page.text
        assert 'href="/webhooks"' in page.text
        refused = await admin.post("/ui/webhooks", data={"url": receiver.url})
        assert refused.status_code == 403  # no CSRF token
        posted = await admin.post("/ui/webhooks", data={"url": receiver.url, "csrf_token": csrf})
        # Post/redirect/get: the secret crosses the redirect in a sealed one-time cookie.
        assert posted.status_code == 303 and posted.headers["location"] == "/webhooks"
        handed = posted.cookies.get("ebc_new_webhook") or ""
        assert handed
        added = await admin.get("/webhooks")
        assert added.status_code == 200
        assert added.headers["cache-control"] == "no-store"
        [endpoint] = await outbox.Outbox(site.runtime.db).endpoints(site.org_a)
        stored_secret = site.runtime.keys.ring.open(
            await _ciphertext(site.runtime, endpoint.id), context=f"webhook/{endpoint.id}"
        )
        assert stored_secret in added.text
        assert stored_secret not in handed and stored_secret not in str(posted.headers)
        again = await admin.get("/webhooks")  # a reload: the secret is not shown again
        assert receiver.url in again.text and stored_secret not in again.text
        assert "this once" not in again.text
        twice = await admin.post(
            "/ui/webhooks", data={"url": receiver.url, "description": "dup", "csrf_token": csrf}
        )
        assert twice.status_code == 409
        assert "already has an endpoint" in twice.text
        assert f'value="{receiver.url}"' in twice.text and 'value="dup"' in twice.text
        assert len(await outbox.Outbox(site.runtime.db).endpoints(site.org_a)) == 1
        sent = await admin.post(
            f"/ui/webhooks/{endpoint.id}/test", data={"csrf_token": csrf}, follow_redirects=True
        )
        assert "delivered (HTTP 200)" in sent.text
        assert "webhook.test" in sent.text  # the delivery log
        garbage = await admin.post("/ui/webhooks", data={"url": "nope", "csrf_token": csrf})
        assert garbage.status_code == 422 and "http://" in garbage.text
        removed = await admin.post(
            f"/ui/webhooks/{endpoint.id}/delete", data={"csrf_token": csrf}, follow_redirects=True
        )
        assert "No endpoint yet." in removed.text
    verify_as_documented(stored_secret, receiver.received[0])


async def _ciphertext(runtime: Runtime, endpoint_id: int) -> str:
    async with runtime.db.read() as conn:
        value = (
            await conn.execute(
                sa.select(m.WebhookEndpoint.secret_ciphertext).where(
                    m.WebhookEndpoint.id == endpoint_id
                )
            )
        ).scalar_one()
    return str(value)


async def test_a_stale_worker_and_a_low_quota_are_each_notified_once(
    setup: Setup, receiver: Receiver, clock: FakeClock
) -> None:
    rt = setup.runtime
    await setup.connect("quota_seller")  # one authorization_code call sent to eBay
    silent = clock.now - timedelta(minutes=5)
    await rt.heartbeats.save(
        HeartbeatRow(
            instance_id="gone-1",
            host="h",
            pid=1,
            version="1.0",
            started_at=silent,
            interval_seconds=60,
            last_cycle_started_at=silent,
            last_cycle_finished_at=silent,
            status="ok",
            counts={},
            last_error=None,
            app_credentials=None,
            cycles=3,
            updated_at=silent,
        )
    )
    setup.chore.quota_config = QuotaConfig(limits={"authorization_code": 1, "refresh_token": 100})
    for _ in range(3):
        await setup.notice()
        clock.advance(seconds=10)
    assert sorted(e["type"] for e in receiver.events()) == ["quota.low", "worker.stale"]
    stale = receiver.events("worker.stale")[0]["data"]
    assert stale["instance_id"] == "gone-1"
    assert receiver.events("quota.low")[0]["data"]["grant"] == "authorization_code"


def test_cli_adds_lists_and_removes_webhooks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"  # the CLI reads its database from the environment
    in_thread(migrate.upgrade, url)
    monkeypatch.setenv("EBAY_CONNECTOR_DATABASE_URL", url)
    monkeypatch.setenv("EBAY_CONNECTOR_KEY_FILE", str(tmp_path / "keyring.json"))
    assert in_thread(cli.main, ["orgs", "create", "Cli shop"]) == 0
    assert in_thread(cli.main, ["webhooks", "add", "--org", "Cli shop", "ftp://x"]) == 2
    assert "invalid_webhook_url" in capsys.readouterr().err
    assert in_thread(cli.main, ["webhooks", "add", "--org", "Cli shop", "https://x.test/h"]) == 0
    secret = capsys.readouterr().out.strip()
    assert secret.startswith("whsec_")
    for again in ("https://x.test/h", "https://X.TEST/h"):  # the same URL, normalized
        assert in_thread(cli.main, ["webhooks", "add", "--org", "Cli shop", again]) == 2
        refused = capsys.readouterr()
        assert refused.out == ""
        [line] = refused.err.strip().splitlines()
        assert line.startswith("error: webhook_exists: ") and "https://x.test/h" in line, line
    assert in_thread(cli.main, ["webhooks", "list", "--org", "Cli shop", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [w["url"] for w in listed["webhooks"]] == ["https://x.test/h"]
    assert secret not in json.dumps(listed)
    hook = str(listed["webhooks"][0]["id"])
    assert in_thread(cli.main, ["webhooks", "remove", "--org", "Cli shop", hook]) == 0
    capsys.readouterr()
    assert in_thread(cli.main, ["webhooks", "remove", "--org", "Cli shop", hook]) == 2
    assert "error: not_found: no webhook" in capsys.readouterr().err


async def test_a_projection_past_the_daily_limit_is_notified_once_per_crossing(
    setup: Setup, receiver: Receiver, clock: FakeClock
) -> None:
    rt = setup.runtime
    account = await setup.connect("pace_seller")
    setup.chore.quota_config = QuotaConfig(limits={"refresh_token": 10})
    for _ in range(3):  # three calls within the first hours: a pace of 12 a day
        assert (await rt.refresher.refresh(account, Trigger.ADMIN, actor="test")).ok
    for _ in range(3):
        await setup.notice()
        clock.advance(seconds=10)
    events = receiver.events("quota.projected_exceeded")
    assert len(events) == 1
    data = events[0]["data"]
    assert (data["grant"], data["projected_24h"], data["limit"]) == ("refresh_token", 12, 10)
    assert "Application Growth Check" in data["remedy"]
    assert "EBAY_CONNECTOR_DAILY_REFRESH_LIMIT" in data["remedy"]
    # A day later the pace is gone (re-armed); a new burst is a new crossing.
    clock.advance(hours=25)
    await setup.notice()
    for _ in range(3):
        assert (await rt.refresher.refresh(account, Trigger.ADMIN, actor="test")).ok
    await setup.notice()
    await setup.notice()
    assert len(receiver.events("quota.projected_exceeded")) == 2


# Trust boundary: one organization's endpoint cannot harm another's, nor reach our network -----


async def _poisoned_endpoint(runtime: Runtime, organization_id: int, url: str) -> int:
    """An endpoint row as an older version (or a direct write) could have stored it."""
    async with runtime.db.transaction() as conn:
        result = await conn.execute(
            sa.insert(m.WebhookEndpoint)
            .values(
                organization_id=organization_id,
                url=url,
                description="poison",
                secret_ciphertext="",
                created_at=runtime.clock(),
            )
            .returning(m.WebhookEndpoint.id)
        )
        endpoint_id = int(result.scalar_one())
        sealed = runtime.keys.ring.seal("whsec_x", context=f"webhook/{endpoint_id}")
        await conn.execute(
            sa.update(m.WebhookEndpoint)
            .where(m.WebhookEndpoint.id == endpoint_id)
            .values(secret_ciphertext=sealed)
        )
    return endpoint_id


async def test_a_poisoned_endpoint_in_one_organization_delays_no_other(
    setup: Setup, receiver: Receiver, clock: FakeClock
) -> None:
    rt = setup.runtime
    box = outbox.Outbox(rt.db)
    org_c = await rt.store.create_organization("Poisoned shop")
    for url in ("http://\u202e.com/", "http://[::1", "http://169.254.169.254/latest/"):
        await _poisoned_endpoint(rt, org_c, url)
    for n in range(40):  # a backlog older than anything else, all due
        await box.emit(org_c, "webhook.test", {"n": n})
    clock.advance(seconds=1)
    [delivery_b] = await box.emit(setup.organization_id, "account.needs_reconnect", {"b": 1})
    dispatcher = webhooks.Dispatcher(
        box,
        rt.keys.ring,
        config=webhooks.DispatchConfig(concurrency=1, max_attempts=5, destinations=LOCAL),
        clock=clock,
        rng=random.Random(1),
    )
    ids = await box.due(clock.now, 4)
    assert delivery_b in ids  # its endpoint's first turn comes before C's backlog
    await dispatcher.drain()  # never raises, whatever one delivery does
    row = await box.delivery(delivery_b)
    assert row is not None and (row.status, row.attempts) == ("delivered", 1)
    assert [e["type"] for e in receiver.events()] == ["account.needs_reconnect"]
    for _ in range(8):  # every poisoned delivery ends after webhook_max_attempts
        clock.advance(hours=3)
        await dispatcher.drain()
    log = await box.deliveries(org_c, limit=500)
    assert {(d.status, d.attempts) for d in log} == {("failed", 5)}
    assert {d.last_error for d in log} <= {
        "could not connect: the URL is not valid",
        "could not connect: destination not allowed",
    }


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/h",
        "http://localhost:9/h",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.5/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://[fd00::1]/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://2852039166/",
        "http://0/",
        "http://127.1/",
        "http://0x7f.0.0.1/",
        "http://224.0.0.1/",
        "http://240.0.0.1/",
        "http://\u202e.com/",
        "http://ex\u200bample.com/",
    ],
)
async def test_internal_and_unreadable_destinations_are_refused(
    database: DatabaseTarget,
    emulator: tuple[Emulator, str],
    tmp_path: Path,
    clock: FakeClock,
    url: str,
) -> None:
    async with open_test_runtime(database, emulator, tmp_path, clock) as rt:
        org = await rt.store.create_organization("Scanner")
        with pytest.raises(ConnectorError) as refused:
            await rt.webhooks.create(org, url, "")
        assert refused.value.code in ("invalid_webhook_url", "destination_refused")
        assert await rt.webhooks.endpoints(org) == []


async def test_the_address_connected_to_is_checked_not_the_name(
    database: DatabaseTarget,
    emulator: tuple[Emulator, str],
    tmp_path: Path,
    clock: FakeClock,
    receiver: Receiver,
) -> None:
    """A name that passed when added but resolves to loopback now (rebinding) is not reached."""
    async with open_test_runtime(database, emulator, tmp_path, clock) as rt:
        org = await rt.store.create_organization("Rebinder")
        port = receiver.url.split(":")[2].split("/")[0]
        endpoint = await _poisoned_endpoint(rt, org, f"http://localhost:{port}/hook")
        row = await rt.webhooks.send_test(await rt.webhooks.owned(org, endpoint), "user:1")
        assert row is not None and row.status == "pending" and row.last_status_code is None
        assert row.last_error == "could not connect: destination not allowed"
        assert receiver.received == []
        await rt.webhooks.dispatcher.close()


async def test_a_test_call_answers_in_plain_words_never_500(site: Site, receiver: Receiver) -> None:
    poisoned = await _poisoned_endpoint(site.runtime, site.org_a, "http://\u202e.com/")
    closed = await _poisoned_endpoint(site.runtime, site.org_a, "http://127.0.0.1:9/")
    async with site.session("admin@hooka.test") as admin:
        refused = await admin.post("/api/admin/webhooks", json={"url": "http://\u202e.com/"})
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] == "invalid_webhook_url"
        scan = await admin.post("/api/admin/webhooks", json={"url": "http://10.1.2.3:22/"})
        assert scan.status_code == 422 and scan.json()["error"]["code"] == "destination_refused"
        assert "a private address (10.1.2.3)" in scan.json()["error"]["message"]
        for endpoint, error in (
            (poisoned, "could not connect: the URL is not valid"),
            (closed, "could not connect"),
        ):
            tested = await admin.post(f"/api/admin/webhooks/{endpoint}/test")
            assert tested.status_code == 200, tested.text
            assert (tested.json()["status"], tested.json()["last_error"]) == ("pending", error)


def test_cli_refuses_an_internal_webhook_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    in_thread(migrate.upgrade, url)
    monkeypatch.setenv("EBAY_CONNECTOR_DATABASE_URL", url)
    monkeypatch.setenv("EBAY_CONNECTOR_KEY_FILE", str(tmp_path / "keyring.json"))
    assert in_thread(cli.main, ["orgs", "create", "Cli shop"]) == 0
    capsys.readouterr()
    assert in_thread(cli.main, ["webhooks", "add", "--org", "Cli shop", "http://2852039166/"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "link-local address (169.254.169.254)" in lines[0]

"""The deployment check-up behind ``ebay-connector doctor``: gathers the facts, asks
``core/checkup.py`` and ``core/ebay_setup.py`` what they mean.

Read-only by construction: the database is only read (no journal entry, no heartbeat, no
application token stored), and eBay is asked for one client-credentials grant whose token is
dropped, plus the consent page as a browser would open it. Every check runs at once under its own
deadline, so the whole run ends within :data:`CHECK_TIMEOUT_S` and a little.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from ebay_connector.core import checkup, deletion, ebay_setup
from ebay_connector.core.checkup import Check, Report
from ebay_connector.core.clock import Clock, utcnow
from ebay_connector.core.ebay_setup import PageAnswer
from ebay_connector.core.exchange import Action
from ebay_connector.core.quota import WINDOW, QuotaState
from ebay_connector.db import migrate
from ebay_connector.db.database import Database, describe
from ebay_connector.db.heartbeats import Heartbeats
from ebay_connector.db.journal import Journal
from ebay_connector.ebay.app_token import API_SCOPE
from ebay_connector.ebay.client import Answer, CallResult, EbayClient
from ebay_connector.errors import StoreError
from ebay_connector.keys import rotation
from ebay_connector.keys.source import KeySource, ring_setting
from ebay_connector.settings import EbayEnvironment, Settings

CHECK_TIMEOUT_S = 8.0  # each check; they run concurrently, so the run ends within this too
HTTP_TIMEOUT_S = 5.0  # each HTTP request of a check
MAX_PAGE_BYTES = 64_000  # of an answer kept to judge it
EMULATOR_APPS_PATH = "/_emulator/apps"  # the emulator's registry (eBay publishes none)


@dataclass
class Doctor:
    """Checks one configured deployment; :meth:`run` changes nothing."""

    settings: Settings
    keys: KeySource
    db: Database | None  # None: the configured SQLite file does not exist
    client: EbayClient
    web: httpx.AsyncClient  # for this deployment's own URLs and the emulator's registry
    version: str
    clock: Clock = utcnow

    def __post_init__(self) -> None:
        self._grant: asyncio.Task[CallResult] | None = None
        self._database: asyncio.Task[Check] | None = None
        self._db_answers = False

    async def run(self, *, full: bool = False) -> Report:
        checks: list[tuple[str, Callable[[], Awaitable[Check]]]] = [
            ("settings", self.check_settings),
            ("database", self.check_database),
            ("key_ring", lambda: self.check_key_ring(full=full)),
            ("credentials", self.check_credentials),
            ("consent", self.check_consent),
            ("ru_name", self.check_ru_name),
            ("callback", self.check_callback),
            ("account_deletion", self.check_deletion),
            ("workers", self.check_workers),
            ("clock", self.check_clock),
            ("quota", self.check_quota),
        ]
        try:
            done = await asyncio.gather(*(_bounded(name, check) for name, check in checks))
        finally:
            for task in (self._grant, self._database):
                if task is not None and not task.done():
                    task.cancel()
        return Report(tuple(done))

    # The deployment's own state ----------------------------------------------------------------

    async def check_settings(self) -> Check:
        conf = self.settings
        return checkup.settings_check(
            checkup.SettingsFacts(
                environment=conf.ebay_environment.value,
                client_id=conf.client_id,
                public_url=conf.public_url,
                key_ring=self.keys.description,
                emulator_url=conf.emulator_url,
            )
        )

    async def check_database(self) -> Check:
        if self._database is None:
            self._database = asyncio.ensure_future(self._check_database())
        return await asyncio.shield(self._database)

    async def _readable(self) -> Database | None:
        """The database once its check found it answering; None when it did not (the checks
        that read it then say so, instead of each waiting for a dead server in turn)."""
        await self.check_database()
        return self.db if self._db_answers else None

    async def _check_database(self) -> Check:
        described = describe(self.settings.database_url)
        if self.db is None:
            return checkup.database_missing(described)
        try:
            await self.db.ping()
            revision = await migrate.current(self.db)
            max_connections = await self.db.max_connections()
        except StoreError as exc:
            return checkup.database_unreachable(described, exc.message)
        self._db_answers = True
        return checkup.database_check(
            checkup.DatabaseFacts(
                description=described,
                revision=revision,
                head=migrate.head(),
                pool_size=self.settings.database_pool_size,
                max_connections=max_connections,
            )
        )

    async def check_key_ring(self, *, full: bool) -> Check:
        db = await self._readable()
        if db is None:
            return checkup.not_checked("key_ring", "the database does not answer")
        ring = self.keys.ring
        try:
            in_use = await rotation.key_ids_in_use(db, ring)
            tried = await (rotation.check(db, ring) if full else rotation.sample(db, ring))
        except StoreError as exc:
            return checkup.not_checked("key_ring", exc.message)
        unsealed = in_use.pop(rotation.NOT_ENCRYPTED, 0)
        return checkup.key_ring_check(
            checkup.KeyRingFacts(
                ring=ring.key_ids,
                primary=ring.primary_id,
                by_key=in_use,
                unsealed=unsealed,
                tried=tried.total,
                failures=[
                    f"{f.field} {_row(f.row)}: {f.reason}"
                    + (f" (key {f.key_id!r})" if f.key_id else "")
                    for f in tried.failures
                ],
                full=full,
            ),
            ring_setting(self.settings),
        )

    async def check_workers(self) -> Check:
        db = await self._readable()
        if db is None:
            return checkup.not_checked("workers", "the database does not answer")
        try:
            beats = await Heartbeats(db).all()
        except StoreError as exc:
            return checkup.not_checked("workers", exc.message)
        now = self.clock()
        seen = [
            checkup.WorkerSeen(b.instance_id, b.host, b.version, b.status_at(now), b.updated_at)
            for b in beats
        ]
        return checkup.workers_check(seen, self.version)

    async def check_quota(self) -> Check:
        db = await self._readable()
        if db is None:
            return checkup.not_checked("quota", "the database does not answer")
        try:
            used = await Journal(db).quota_usage(self.clock() - WINDOW)
        except StoreError as exc:
            return checkup.not_checked("quota", exc.message)
        return checkup.quota_check(
            QuotaState(used, self.settings.quota), self.settings.quota_low_share
        )

    # eBay ---------------------------------------------------------------------------------------

    def _application_grant(self) -> asyncio.Task[CallResult]:
        """The one client-credentials grant of the run, shared by the checks that need it. Its
        token is dropped unstored: doctor proves the keyset, it does not stock a token."""
        if self._grant is None:
            request = self.client.application_token_request([API_SCOPE])
            self._grant = asyncio.ensure_future(self.client.send_token_request(request))
        return self._grant

    async def check_credentials(self) -> Check:
        call = await asyncio.shield(self._application_grant())
        classified = call.classified
        return ebay_setup.credentials_check(
            classified.outcome, classified.message, self.settings.ebay_environment.value
        )

    async def check_clock(self) -> Check:
        call = await asyncio.shield(self._application_grant())
        now = self.clock()
        headers = call.exchange.response_headers
        if call.exchange.status is None:
            return checkup.not_checked("clock", "eBay did not answer")
        return checkup.clock_check(headers.get("date"), now)

    async def check_consent(self) -> Check:
        state = "doctor-" + secrets.token_urlsafe(8)  # never comes back: nobody consents
        answer = await self.client.open_consent_page(self.settings.scope_list, state)
        return ebay_setup.consent_check(_page(answer), self.settings.app_ru_name)

    async def check_ru_name(self) -> Check:
        conf = self.settings
        registered: ebay_setup.RegisteredApp | None = None
        connected_at: datetime | None = None
        if conf.ebay_environment is EbayEnvironment.EMULATOR:
            url = conf.emulator_url.rstrip("/") + EMULATOR_APPS_PATH
            try:
                answer = await self.web.get(url)
                apps = answer.json() if answer.status_code == 200 else None
            except (httpx.HTTPError, ValueError) as exc:
                return ebay_setup.registry_unreachable(url, exc.__class__.__name__)
            mine = [
                a
                for a in apps or []
                if isinstance(a, dict) and a.get("client_id") == conf.app_client_id
            ]
            if not mine:
                return ebay_setup.app_unknown(conf.app_client_id)
            registered = ebay_setup.RegisteredApp(
                str(mine[0].get("ru_name")), str(mine[0].get("accept_url"))
            )
        elif (db := await self._readable()) is not None:
            try:
                connected_at = await Journal(db).last_success(
                    Action.AUTHORIZATION_CODE.value, conf.ebay_environment.value
                )
            except StoreError:
                connected_at = None
        return ebay_setup.ru_name_check(
            registered,
            ru_name=conf.app_ru_name,
            callback_url=conf.callback_url,
            connected_at=connected_at,
        )

    # This deployment as eBay reaches it ---------------------------------------------------------

    async def check_callback(self) -> Check:
        conf = self.settings
        answer = await self._get(conf.callback_url)
        return ebay_setup.callback_check(answer, conf.callback_url, conf.ebay_environment.value)

    async def check_deletion(self) -> Check:
        conf = self.settings
        endpoint = deletion.endpoint_url(conf.deletion_endpoint_url, conf.public_url)
        token = conf.deletion_verification_token
        answer = expected = None
        if token is not None:
            code = secrets.token_hex(16)
            expected = deletion.challenge_response(code, token.get_secret_value(), endpoint)
            answer = await self._get(endpoint, params={"challenge_code": code})
        return ebay_setup.deletion_check(
            ebay_setup.DeletionFacts(
                environment=conf.ebay_environment.value,
                configured=token is not None,
                exempt=conf.deletion_exempt,
                endpoint=endpoint,
                answer=answer,
                expected=expected,
            )
        )

    async def _get(self, url: str, params: dict[str, str] | None = None) -> PageAnswer:
        try:
            response = await self.web.get(url, params=params)
        except httpx.HTTPError as exc:
            return PageAnswer(None, error=exc.__class__.__name__)
        return PageAnswer(
            response.status_code,
            location=response.headers.get("location"),
            content_type=response.headers.get("content-type", ""),
            body=response.content[:MAX_PAGE_BYTES],
            date=response.headers.get("date"),
        )


async def _bounded(name: str, check: Callable[[], Awaitable[Check]]) -> Check:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            return await check()
    except TimeoutError:
        return checkup.timed_out(name, CHECK_TIMEOUT_S)


def _page(answer: Answer | str) -> PageAnswer:
    if isinstance(answer, str):
        return PageAnswer(None, error=answer)
    return PageAnswer(
        answer.status_code,
        location=answer.headers.get("location"),
        content_type=answer.headers.get("content-type", ""),
        body=answer.content[:MAX_PAGE_BYTES],
        date=answer.headers.get("date"),
    )


def _row(row: Mapping[str, Any]) -> str:
    return " ".join(f"{k.removesuffix('_id')} {v}" for k, v in row.items())

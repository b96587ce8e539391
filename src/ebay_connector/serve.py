"""Running the product: the HTTP server, the in-process worker and (in emulator mode) the emulator.

``demo`` = this plus demo data. One event loop; SIGINT/SIGTERM stop the server, then the worker
finishes its cycle and unregisters.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator

import uvicorn
from starlette.types import ASGIApp

from ebay_connector import demo
from ebay_connector.core import deletion, destination
from ebay_connector.db import migrate
from ebay_connector.db.database import describe as describe_database
from ebay_connector.emulator import Emulator
from ebay_connector.emulator import create_app as create_emulator_app
from ebay_connector.errors import ConfigError
from ebay_connector.runtime import Runtime, open_runtime
from ebay_connector.settings import EbayEnvironment, Settings
from ebay_connector.version import code_version
from ebay_connector.web import protocol
from ebay_connector.web.app import create_app

STARTUP_TIMEOUT_S = 30.0
WORKER_STOP_TIMEOUT_S = 30.0


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: we stop the server and the worker together."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def build_emulator(settings: Settings) -> Emulator:
    emulator = Emulator()
    emulator.register_app(
        client_id=settings.app_client_id,
        client_secret=settings.app_client_secret,
        ru_name=settings.app_ru_name,
        accept_url=settings.callback_url,
    )
    # This server's own route, never the public URL registered at eBay: the emulator stays local.
    emulator.register_notification_endpoint(settings.public_url.rstrip("/") + deletion.PATH)
    return emulator


def check_bind(settings: Settings) -> None:
    """The emulator environment serves the emulator's control API (faults, revokes, a sender):
    it must never face a network."""
    if settings.ebay_environment is EbayEnvironment.EMULATOR and not destination.is_loopback_host(
        settings.host
    ):
        raise ConfigError(
            f"EBAY_CONNECTOR_HOST: {settings.host} is not loopback, and the emulator environment "
            "serves the emulator's control API to whoever can connect; bind 127.0.0.1, or set "
            "EBAY_CONNECTOR_EBAY_ENVIRONMENT=sandbox or production"
        )


def server_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    """The product's own HTTP server settings (tests serve through these too)."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        lifespan="off",
        # uvicorn's own lines go through our handler (text or json); no access log: the API's
        # events and /metrics cover requests without logging every URL.
        log_config=None,
        access_log=False,
        # Header size and header time limits (web/protocol.py); idle keep-alive closed after 5 s.
        http=protocol.GuardedHttpToolsProtocol,
        timeout_keep_alive=int(protocol.KEEP_ALIVE_TIMEOUT.total_seconds()),
        h11_max_incomplete_event_size=protocol.MAX_HEADER_BYTES,
    )


async def run(
    settings: Settings,
    *,
    with_demo: bool,
    with_worker: bool,
    say: Callable[[str], None],
) -> None:
    check_bind(settings)
    await migrate.upgrade_async(settings.database_url)
    emulator = None
    if settings.ebay_environment is EbayEnvironment.EMULATOR:
        emulator = build_emulator(settings)
    elif with_demo:
        raise ConfigError("EBAY_CONNECTOR_EBAY_ENVIRONMENT: the demo runs only on the emulator")
    async with open_runtime(settings) as runtime:
        say(f"ebay-connector {code_version()} · eBay environment: {runtime.environment}")
        say(f"database: {describe_database(settings.database_url)}")
        created = " (generated now, mode 0600)" if runtime.keys.created else ""
        say(f"token key ring: {runtime.keys.description}{created}")
        app = create_app(runtime, emulator_app=create_emulator_app(emulator) if emulator else None)
        server = _Server(server_config(app, settings))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def _stop() -> None:
            server.should_exit = True
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, _stop)
        server_task = asyncio.create_task(server.serve())
        await _wait_started(server, server_task)
        say(f"listening on http://{settings.host}:{settings.port} (GET /healthz)")
        if with_demo and emulator is not None:
            await _seed(runtime, emulator, say)
        worker_task = None
        if with_worker:
            worker = runtime.worker()
            worker_task = asyncio.create_task(worker.run(stop))
            say(f"worker {worker.instance_id} running every {settings.worker_interval_seconds}s")
        await server_task
        stop.set()
        if worker_task is not None:
            await asyncio.wait_for(worker_task, WORKER_STOP_TIMEOUT_S)
        say("stopped")


async def _wait_started(server: uvicorn.Server, task: asyncio.Task[None]) -> None:
    async with asyncio.timeout(STARTUP_TIMEOUT_S):
        while not server.started:
            if task.done():
                task.result()
                raise ConfigError("EBAY_CONNECTOR_PORT: the server could not start (port in use?)")
            await asyncio.sleep(0.05)


async def _seed(runtime: Runtime, emulator: Emulator, say: Callable[[str], None]) -> None:
    seeded = await demo.seed(runtime, emulator)
    say(f"demo: organization {demo.DEMO_ORGANIZATION!r} with {len(seeded.accounts)} accounts")
    say(f"sign in as {demo.DEMO_ADMIN} / {seeded.admin_password} (admin)")
    say(f"        or {demo.DEMO_VIEWER} / {seeded.viewer_password} (viewer)")
    for account in seeded.accounts:
        say(
            f"  #{account.account_id} {account.demo.label} ({account.demo.username}): "
            f"{account.demo.scenario.value}"
        )
    say("try: ebay-connector accounts · ebay-connector logs --follow")
    say("     ebay-connector refresh demo_main_store --debug")

"""Helpers several test modules share: the real API on a loopback port, seeded accounts."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timedelta
from typing import Any

import uvicorn

from ebay_connector.demo import consent_code
from ebay_connector.emulator import Emulator
from ebay_connector.keys.crypto import TokenField
from ebay_connector.runtime import Runtime
from ebay_connector.service.connect import connect_with_code


class QuietServer(uvicorn.Server):
    """uvicorn in the test's event loop, leaving the process's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def loopback_socket() -> socket.socket:
    """A TCP socket bound to a free 127.0.0.1 port (for a server whose URL must be known first)."""
    # IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY only on accepted sockets whose proto is TCP.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serve_asgi(app: Any, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """Serve an ASGI app on a fresh 127.0.0.1 port (or ``sock``) in this event loop; yields its
    base URL.

    The socket is bound before uvicorn starts, so no other process can take the port between
    choosing and listening.
    """
    sock = sock or loopback_socket()
    port = sock.getsockname()[1]
    server = QuietServer(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            assert not task.done(), "the server did not start"
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


async def seed_account(
    runtime: Runtime,
    emu: Emulator,
    organization_id: int,
    username: str,
    *,
    access_expires_at: datetime,
    next_attempt_at: datetime | None,
) -> tuple[int, dict[str, Any]]:
    """An account whose tokens eBay (the emulator) really issued, sealed with the runtime's
    primary key; returns its id and the grant the emulator answered."""
    ring = runtime.keys.ring
    grant = emu.issue_grant(
        runtime.settings.app_client_id, username, list(runtime.settings.scope_list)
    )
    account_id, _ = await runtime.store.save_connection(
        organization_id=organization_id,
        environment=runtime.environment,
        ebay_user_id=f"id-{username}",
        ebay_username=username,
        label=username,
        scopes=runtime.settings.scope_list,
        encrypt=lambda aid, field, text: ring.encrypt(
            text, account_id=aid, field=TokenField(field)
        ),
        access_token=str(grant["access_token"]),
        access_expires_at=access_expires_at,
        refresh_token=str(grant["refresh_token"]),
        refresh_expires_at=runtime.clock() + timedelta(days=500),
        next_attempt_at=next_attempt_at,
        exchanges=[],
    )
    return account_id, grant


async def seed_due_accounts(runtime: Runtime, emu: Emulator, count: int, prefix: str) -> list[int]:
    """``count`` accounts whose tokens eBay (the emulator) really issued, all expired and due
    now, most urgent first (in the order of the returned ids)."""
    organization = await runtime.store.create_organization(f"{prefix} org")
    now = runtime.clock()
    ids = []
    for i in range(count):
        account_id, _ = await seed_account(
            runtime,
            emu,
            organization,
            f"{prefix}_{i:04d}",
            access_expires_at=now - timedelta(minutes=1),
            next_attempt_at=now - timedelta(seconds=count - i),
        )
        ids.append(account_id)
    return ids


async def connect_seller(
    runtime: Runtime, organization_id: int, username: str, *, code: str | None = None
) -> int:
    """Connect ``username`` as a seller does: the emulator's consent page, then the product's
    one code exchange (``connect_with_code``); the new account's id."""
    connection = await connect_with_code(
        store=runtime.store,
        journal=runtime.journal,
        client=runtime.client,
        keyring=runtime.keys.ring,
        organization_id=organization_id,
        environment=runtime.environment,
        code=code or await consent_code(runtime, username),
        scopes=runtime.settings.scope_list,
        policy_config=runtime.settings.policy,
        clock=runtime.clock,
    )
    return connection.account_id

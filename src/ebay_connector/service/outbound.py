"""Requests to URLs an organization chose (webhook receivers), held to the destination rule.

The HTTP client built here resolves the host itself and connects only to an address that
``core.destination.refusal`` allows — the address actually connected to, so a name that passed
when the endpoint was added and resolves to 127.0.0.1 now (DNS rebinding) is still refused. The
URL is untouched: the ``Host`` header, TLS SNI and certificate checks keep the name. No proxy from
the environment is used (a proxy would connect on our behalf, past the rule).

httpx 0.29 takes no network backend of its own, so the transport is httpx's with the connection
pool of the same library built over a checking backend (see docs/decisions.md, "Webhook
destinations").
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

import httpcore
import httpx

from ebay_connector.core import destination
from ebay_connector.errors import DestinationRefused

RESOLVE_TIMEOUT = timedelta(seconds=3)
LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0)


@dataclass(frozen=True)
class DestinationPolicy:
    """The networks an operator opted in (``EBAY_CONNECTOR_WEBHOOK_ALLOWED_NETWORKS``)."""

    allowed: tuple[destination.Network, ...] = ()

    def check(self, address: destination.Address) -> None:
        reason = destination.refusal(address, self.allowed)
        if reason is not None:
            raise DestinationRefused(f"the URL's host is {reason}, which webhooks may not reach")


PUBLIC_ONLY = DestinationPolicy()


async def resolve(host: str, port: int) -> list[destination.Address]:
    """Every address ``host`` resolves to now (numeric forms included), in the resolver's order."""
    numeric = destination.numeric_host(host)
    if numeric is not None:
        return [numeric]
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(host, port, type=socket.SOCK_STREAM),
        RESOLVE_TIMEOUT.total_seconds(),
    )
    found: list[destination.Address] = []
    for *_, sockaddr in infos:
        address = destination.unmapped(destination.ip_of(str(sockaddr[0])))
        if address not in found:
            found.append(address)
    return found


async def check_host(host: str, port: int, policy: DestinationPolicy) -> None:
    """When an endpoint is added: refuse a host that is, or now resolves to, a refused address.

    A name that does not resolve yet is accepted; the check at connection time still applies.
    """
    numeric = destination.numeric_host(host)
    if numeric is not None:
        policy.check(numeric)
        return
    try:
        addresses = await resolve(host, port)
    except (OSError, TimeoutError):
        return
    for address in addresses:
        policy.check(address)


class _CheckingBackend(httpcore.AsyncNetworkBackend):
    """Connects to the first allowed address of the host; refuses when none is allowed."""

    def __init__(self, policy: DestinationPolicy) -> None:
        self.policy = policy
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await resolve(host, port)
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"cannot resolve {host}")
        for address in addresses:
            self.policy.check(address)  # every address: a mixed answer is a rebinding attempt
        return await self.inner.connect_tcp(
            str(addresses[0]),
            port,
            timeout=timeout,
            local_address=local_address,
            socket_options=socket_options,
        )

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused("webhooks are sent over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _CheckingTransport(httpx.AsyncHTTPTransport):
    def __init__(self, policy: DestinationPolicy) -> None:
        # httpx's own __init__ would only build a pool (and a TLS context) to be replaced here.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=LIMITS.max_connections,
            max_keepalive_connections=LIMITS.max_keepalive_connections,
            keepalive_expiry=LIMITS.keepalive_expiry,
            network_backend=_CheckingBackend(policy),
        )


def client(policy: DestinationPolicy, timeout: timedelta) -> httpx.AsyncClient:
    """An HTTP client for receivers' URLs: checked destinations, no redirects, no env proxy."""
    return httpx.AsyncClient(
        transport=_CheckingTransport(policy),
        timeout=timeout.total_seconds(),
        follow_redirects=False,
        trust_env=False,
    )

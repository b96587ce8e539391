"""``AsyncConnector``: the asyncio client (``httpx.AsyncClient``); every rule lives in
``_protocol``, exactly as for :class:`~ebay_connector_client.sync.Connector`."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from ebay_connector_client import _protocol as p


class AsyncConnector:
    """``async with AsyncConnector("https://connector.example", "ebc_…") as connector: …``"""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        margin_seconds: float = p.DEFAULT_MARGIN_SECONDS,
        timeout: float = p.DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        self._transport = transport
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=p.headers(api_key), timeout=timeout, transport=transport
        )
        self._cache = p.TokenCache(margin_seconds)
        self._locks: dict[int, asyncio.Lock] = {}

    async def __aenter__(self) -> AsyncConnector:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, request: tuple[str, str, dict[str, Any]]) -> httpx.Response:
        method, path, options = request
        return await self._http.request(method, path, **options)

    async def accounts(self, end_user_id: str | None = None) -> list[p.Account]:
        return p.parse_accounts(await self._send(p.accounts_request(end_user_id)))

    async def access_token(self, account_id: int) -> str:
        cached = self._cache.get(account_id)
        if cached is not None:
            return cached
        async with self._lock(account_id):
            cached = self._cache.get(account_id)
            if cached is not None:
                return cached
            token = p.parse_token(await self._send(p.token_request(account_id)))
            return self._cache.put(account_id, token)

    async def fresh_token(self, account_id: int, rejected: str) -> str:
        async with self._lock(account_id):
            cached = self._cache.get(account_id)
            if cached is not None and cached != rejected:
                return cached
            token = p.parse_token(await self._send(p.token_request(account_id, rejected)))
            return self._cache.put(account_id, token)

    async def create_connect_session(
        self,
        end_user_id: str,
        return_url: str,
        *,
        end_user_label: str | None = None,
        account_id: int | None = None,
    ) -> p.ConnectSession:
        request = p.session_request(end_user_id, return_url, end_user_label, account_id)
        return p.parse_session(await self._send(request))

    def proxy(self, account_id: int, **options: Any) -> httpx.AsyncClient:
        options.setdefault("timeout", self._timeout)
        if self._transport is not None:
            options.setdefault("transport", self._transport)
        return httpx.AsyncClient(
            base_url=p.proxy_base(self.base_url, account_id),
            headers={"Authorization": f"Bearer {self._api_key}"},
            event_hooks={"response": [_raise_connector_error]},
            **options,
        )

    def _lock(self, account_id: int) -> asyncio.Lock:
        return self._locks.setdefault(account_id, asyncio.Lock())


async def _raise_connector_error(response: httpx.Response) -> None:
    if response.status_code >= 400:
        await response.aread()
        error = p.connector_error(response)
        if error is not None:
            raise error

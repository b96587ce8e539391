"""``Connector``: the blocking client (``httpx.Client``); every rule lives in ``_protocol``."""

from __future__ import annotations

import threading
from typing import Any

import httpx

from ebay_connector_client import _protocol as p


class Connector:
    """ebay-connector for a program: ``Connector("https://connector.example", "ebc_…")``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        margin_seconds: float = p.DEFAULT_MARGIN_SECONDS,
        timeout: float = p.DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._timeout = timeout
        self._transport = transport
        self._http = httpx.Client(
            base_url=self.base_url, headers=p.headers(api_key), timeout=timeout, transport=transport
        )
        self._cache = p.TokenCache(margin_seconds)
        self._locks: dict[int, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def __enter__(self) -> Connector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, request: tuple[str, str, dict[str, Any]]) -> httpx.Response:
        method, path, options = request
        return self._http.request(method, path, **options)

    def accounts(self, end_user_id: str | None = None) -> list[p.Account]:
        """The organization's accounts (those of ``end_user_id`` when given)."""
        return p.parse_accounts(self._send(p.accounts_request(end_user_id)))

    def access_token(self, account_id: int) -> str:
        """A valid user access token, cached until within the margin of its expiry; concurrent
        callers for one account share one request."""
        cached = self._cache.get(account_id)
        if cached is not None:
            return cached
        with self._lock(account_id):
            cached = self._cache.get(account_id)
            if cached is not None:
                return cached
            token = p.parse_token(self._send(p.token_request(account_id)))
            return self._cache.put(account_id, token)

    def fresh_token(self, account_id: int, rejected: str) -> str:
        """A token instead of ``rejected`` (eBay answered it 401): the connector refreshes once
        however many callers report the same token."""
        with self._lock(account_id):
            cached = self._cache.get(account_id)
            if cached is not None and cached != rejected:
                return cached
            token = p.parse_token(self._send(p.token_request(account_id, rejected)))
            return self._cache.put(account_id, token)

    def create_connect_session(
        self,
        end_user_id: str,
        return_url: str,
        *,
        end_user_label: str | None = None,
        account_id: int | None = None,
    ) -> p.ConnectSession:
        """A single-use link for the seller (``account_id``: reconnect that account)."""
        request = p.session_request(end_user_id, return_url, end_user_label, account_id)
        return p.parse_session(self._send(request))

    def proxy(self, account_id: int, **options: Any) -> httpx.Client:
        """An ``httpx.Client`` whose base URL is the account's proxy: call eBay's API paths
        (``client.get("sell/inventory/v1/inventory_item")``) as that seller. The connector's own
        errors raise the typed errors; eBay's answers come back as they are."""
        options.setdefault("timeout", self._timeout)
        if self._transport is not None:
            options.setdefault("transport", self._transport)
        return httpx.Client(
            base_url=p.proxy_base(self.base_url, account_id),
            headers={"Authorization": f"Bearer {self._api_key}"},
            event_hooks={"response": [_raise_connector_error]},
            **options,
        )

    def _lock(self, account_id: int) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(account_id, threading.Lock())


def _raise_connector_error(response: httpx.Response) -> None:
    if response.status_code >= 400:
        response.read()
        error = p.connector_error(response)
        if error is not None:
            raise error

"""``EbayAuth``: an ``httpx.Auth`` for programs that call eBay directly with a seller's token."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator

import httpx

from ebay_connector_client.aio import AsyncConnector
from ebay_connector_client.sync import Connector


class EbayAuth(httpx.Auth):
    """``httpx.Client(auth=EbayAuth(connector, account_id))``: the seller's token as Bearer; on a
    401 from eBay one fresh token (the connector refreshes once) and one retry, nothing more.

    Use it with a :class:`Connector` in an ``httpx.Client`` and with an
    :class:`AsyncConnector` in an ``httpx.AsyncClient``."""

    requires_request_body = True  # the one retry sends the same body again

    def __init__(self, connector: Connector | AsyncConnector, account_id: int) -> None:
        self.connector = connector
        self.account_id = account_id

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
        if not isinstance(self.connector, Connector):
            raise TypeError("EbayAuth with an AsyncConnector needs an httpx.AsyncClient")
        token = self.connector.access_token(self.account_id)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            fresh = self.connector.fresh_token(self.account_id, token)
            request.headers["Authorization"] = f"Bearer {fresh}"
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        if not isinstance(self.connector, AsyncConnector):
            raise TypeError("EbayAuth with a Connector needs an httpx.Client")
        token = await self.connector.access_token(self.account_id)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            fresh = await self.connector.fresh_token(self.account_id, token)
            request.headers["Authorization"] = f"Bearer {fresh}"
            yield request

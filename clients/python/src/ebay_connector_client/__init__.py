"""ebay-connector's Python client: accounts, access tokens, connect sessions, the eBay API proxy.

from ebay_connector_client import Connector
connector = Connector("https://connector.example", "ebc_…")
"""

from ebay_connector_client._protocol import AccessToken, Account, ConnectSession
from ebay_connector_client.aio import AsyncConnector
from ebay_connector_client.auth import EbayAuth
from ebay_connector_client.errors import (
    ConnectorError,
    NeedsReconnect,
    NotFound,
    PermissionDenied,
    RetryLater,
)
from ebay_connector_client.sync import Connector

__all__ = [
    "AccessToken",
    "Account",
    "AsyncConnector",
    "ConnectSession",
    "Connector",
    "ConnectorError",
    "EbayAuth",
    "NeedsReconnect",
    "NotFound",
    "PermissionDenied",
    "RetryLater",
]

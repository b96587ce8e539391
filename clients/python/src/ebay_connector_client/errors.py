"""What can go wrong, typed. The client retries nothing by itself: these say what to do."""

from __future__ import annotations


class ConnectorError(Exception):
    """Any error answer of ebay-connector: ``status`` and the stable ``code`` it sent."""

    def __init__(self, message: str, *, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class NeedsReconnect(ConnectorError):
    """Only the seller can fix this account: send them a new connect session (a reconnect)."""

    def __init__(self, message: str, *, reason: str, status: int = 409) -> None:
        super().__init__(message, status=status, code="needs_reconnect")
        self.reason = reason


class RetryLater(ConnectorError):
    """eBay or the connector is unavailable just now; ``retry_after`` seconds, when known."""

    def __init__(self, message: str, *, retry_after: float | None, status: int, code: str) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after


class PermissionDenied(ConnectorError):
    """The API key is unknown, revoked, or lacks the permission (--tokens, --connect, --proxy)."""


class NotFound(ConnectorError):
    """No such account in the key's organization."""

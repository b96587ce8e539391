"""eBay's notification public keys: fetched with the application token, cached by key id.

A notification names the key that signed it (``kid``); the key comes from eBay's
``getPublicKey`` call, journalled like every other exchange, and is kept in memory for
:data:`PUBLIC_KEY_TTL`.

The ``kid`` is chosen by whoever posts to the public endpoint, so fetching is bounded: a kid eBay
does not know is remembered as unknown for the same time (one fetch per kid), at most
:data:`FETCHES_PER_WINDOW` fetches happen per :data:`FETCH_WINDOW` overall, and beyond that a new
kid is refused (``412``) without an outbound call or a journal row. A known key is never pushed
out of the cache by unknown ones.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography.hazmat.primitives.asymmetric import ec

from ebay_connector import log
from ebay_connector.core import deletion
from ebay_connector.core.allowance import Allowance
from ebay_connector.core.clock import Clock
from ebay_connector.core.exchange import ExchangeRecord
from ebay_connector.core.outcome import Outcome
from ebay_connector.ebay.app_token import AppTokens
from ebay_connector.ebay.client import EbayClient
from ebay_connector.errors import NotificationRejected, PublicKeyUnavailable

logger = logging.getLogger(__name__)

# eBay rotates notification keys rarely; an hour bounds how long a withdrawn key stays trusted.
PUBLIC_KEY_TTL = timedelta(hours=1)
MAX_CACHED_KEYS = 64  # key ids are chosen by the sender: the cache must not grow without bound
MAX_UNKNOWN_KIDS = 1024
FETCH_WINDOW = timedelta(hours=1)
FETCHES_PER_WINDOW = 10  # eBay rotates its keys rarely; a burst of new kids is someone else


@dataclass(frozen=True)
class _CachedKey:
    key: ec.EllipticCurvePublicKey
    fetched_at: datetime


class PublicKeys:
    """eBay's notification public keys by key id, cached in memory for :data:`PUBLIC_KEY_TTL`."""

    def __init__(
        self,
        client: EbayClient,
        tokens: AppTokens,
        clock: Clock,
        record: Callable[[ExchangeRecord], Awaitable[object]],
    ) -> None:
        self.client = client
        self.tokens = tokens
        self.clock = clock
        self.record = record  # every call to eBay goes into the journal
        self._keys: OrderedDict[str, _CachedKey] = OrderedDict()
        self._unknown: OrderedDict[str, datetime] = OrderedDict()
        self._fetches = Allowance(FETCHES_PER_WINDOW, FETCH_WINDOW)
        self._lock = asyncio.Lock()

    async def get(self, kid: str) -> ec.EllipticCurvePublicKey:
        """The key; ``NotificationRejected`` if eBay knows no such key, else
        ``PublicKeyUnavailable`` / ``AppTokenUnavailable`` when eBay cannot tell just now."""
        async with self._lock:  # concurrent deliveries signed by one new key: one fetch
            now = self.clock()
            cached = self._keys.get(kid)
            if cached is not None and now - cached.fetched_at < PUBLIC_KEY_TTL:
                return cached.key
            refused_at = self._unknown.get(kid)
            if refused_at is not None and now - refused_at < PUBLIC_KEY_TTL:
                raise NotificationRejected("eBay knows no public key with the signature's kid")
            if self._fetches.wait("getPublicKey", now) is not None:
                log.event(logger, "notification.key_fetches_exhausted", logging.WARNING)
                raise NotificationRejected("too many new signing key ids; not asking eBay now")
            self._fetches.take("getPublicKey", now)
            answer, exchange = await self.client.get_public_key(kid, await self.tokens.get())
            await self.record(exchange)
            if answer.outcome is Outcome.INVALID_REQUEST:
                self._unknown[kid] = now
                self._unknown.move_to_end(kid)
                while len(self._unknown) > MAX_UNKNOWN_KIDS:
                    self._unknown.popitem(last=False)
                raise NotificationRejected("eBay knows no public key with the signature's kid")
            if answer.outcome is not Outcome.OK or answer.key is None:
                log.event(
                    logger, "notification.key_unavailable", logging.WARNING, message=answer.message
                )
                raise PublicKeyUnavailable(f"cannot fetch eBay's public key: {answer.message}")
            key = deletion.load_public_key(answer.key["key"])
            self._keys[kid] = _CachedKey(key, now)
            self._keys.move_to_end(kid)
            while len(self._keys) > MAX_CACHED_KEYS:
                self._keys.popitem(last=False)  # the oldest fetched, never all of them
            return key

"""The eBay API proxy: a program calls eBay as seller X without ever holding X's token.

One call: the account's valid user token (the canonical ``get_access_token``), the program's
request sent on to eBay's host for the environment with that token as ``Authorization: Bearer``,
eBay's answer streamed back. A 401 errorId 1001 (eBay no longer accepts the token) gets exactly
one forced refresh through the canonical path — only if the rejected token is still the stored
one, so many calls rejected together cause one refresh — and one retry of the same request.

Bodies stream both ways under a size cap; the request body is kept (up to the cap) while it
streams, so the one retry can send it again. Nothing of a body is logged or counted: eBay's
answers carry buyers' personal data.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import aiohttp

from ebay_connector import log
from ebay_connector.core.clock import Clock, utcnow
from ebay_connector.core.exchange import Trigger
from ebay_connector.db.store import Store
from ebay_connector.ebay import rest
from ebay_connector.errors import AccountNotFound, ProxyFailed
from ebay_connector.keys.crypto import TokenField
from ebay_connector.service.refresh import AccessToken, Refresher
from ebay_connector.settings import Endpoints

logger = logging.getLogger(__name__)

CHUNK = 64 * 1024
# An answer of announced length up to this is read whole and sent in one piece: most of eBay's
# JSON answers are this small, and streaming them costs more ASGI messages than it saves memory.
SMALL_BODY = 64 * 1024
MAX_ERROR_BODY = 64 * 1024  # a 401 is read whole to look for errorId 1001; eBay's are tiny

ProxyObserver = Callable[[int, str, int, datetime], None]  # account id, API, status, when


async def _read_up_to(response: aiohttp.ClientResponse, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    try:
        while size < limit and (chunk := await response.content.read(limit - size)):
            parts.append(chunk)
            size += len(chunk)
    except (TimeoutError, aiohttp.ClientError) as exc:
        response.release()
        raise ProxyFailed("eBay's answer broke off") from exc
    return b"".join(parts)


def token_digest(access_token: str) -> str:
    """How a program names a token eBay rejected without sending the token itself."""
    return hashlib.sha256(access_token.encode()).hexdigest()


class _Body:
    """The caller's body as it streams to eBay, kept (up to the cap) for the one retry."""

    def __init__(self, source: AsyncIterator[bytes], cap: int) -> None:
        self._source = source
        self._cap = cap
        self._kept: list[bytes] = []
        self._size = 0
        self._done = False
        self.too_large = False

    async def chunks(self) -> AsyncIterator[bytes]:
        for chunk in list(self._kept):
            yield chunk
        while not self._done:
            try:
                chunk = await anext(self._source)
            except StopAsyncIteration:
                self._done = True
                return
            if not chunk:
                continue
            self._size += len(chunk)
            if self._size > self._cap:
                self.too_large = True
                raise ProxyFailed(f"the request body is over {self._cap} bytes", code="too_large")
            self._kept.append(chunk)
            yield chunk


@dataclass(frozen=True)
class ProxyAnswer:
    """eBay's answer: status, the headers that cross, and the body — read whole when small
    (``content``), else to stream (``body``, which closes eBay's answer when done)."""

    status: int
    headers: Mapping[str, str]
    content: bytes | None = None
    body: AsyncIterator[bytes] | None = None


@dataclass
class Proxy:
    refresher: Refresher
    store: Store
    http: aiohttp.ClientSession
    endpoints: Endpoints
    max_body_bytes: int
    timeout_seconds: float
    clock: Clock = utcnow
    observers: list[ProxyObserver] = field(default_factory=list)

    async def call(
        self,
        account_id: int,
        *,
        organization_id: int,
        actor: str,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: Sequence[tuple[str, str]],
        body: AsyncIterator[bytes] | None,
    ) -> ProxyAnswer:
        url = rest.upstream_url(self.endpoints, raw_path, raw_query)
        api = rest.api_of(raw_path)
        sent_headers = rest.forwarded(headers, rest.REQUEST_HEADERS)
        length = next((v for k, v in sent_headers.items() if k.lower() == "content-length"), None)
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            raise ProxyFailed(
                f"the request body is over {self.max_body_bytes} bytes", code="too_large"
            )
        kept = None if body is None else _Body(body, self.max_body_bytes)
        token = await self.refresher.get_access_token(
            account_id, actor=actor, organization_id=organization_id
        )
        response = await self._send(method, url, sent_headers, token.access_token, kept)
        if response.status == 401:
            rejected = await _read_up_to(response, MAX_ERROR_BODY)
            if rest.invalid_access_token(rejected):
                response.release()
                log.event(logger, "proxy.token_rejected", account=account_id, api=api)
                fresh = await self.replace_rejected(
                    account_id,
                    token_digest(token.access_token),
                    actor=actor,
                    organization_id=organization_id,
                )
                response = await self._send(method, url, sent_headers, fresh.access_token, kept)
            else:
                return await self._answer(account_id, api, response, prefix=rejected)
        return await self._answer(account_id, api, response)

    async def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        access_token: str,
        body: _Body | None,
    ) -> aiohttp.ClientResponse:
        try:
            return await self.http.request(
                method,
                url,
                headers={**headers, "Authorization": f"Bearer {access_token}"},
                data=None if body is None else body.chunks(),
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds),
            )
        except ProxyFailed:
            raise
        except TimeoutError as exc:
            raise ProxyFailed("eBay did not answer in time", code="ebay_timeout") from exc
        except aiohttp.ClientError as exc:
            if body is not None and body.too_large:
                raise ProxyFailed(
                    f"the request body is over {self.max_body_bytes} bytes", code="too_large"
                ) from exc
            raise ProxyFailed(f"eBay could not be reached ({type(exc).__name__})") from exc

    async def replace_rejected(
        self, account_id: int, rejected_digest: str, *, actor: str, organization_id: int
    ) -> AccessToken:
        """A token to use instead of one eBay rejected (``rejected_digest``: its SHA-256, hex):
        one forced refresh through the canonical path if it is still the stored token; if another
        caller already replaced it, theirs. Used by the proxy and by programs calling eBay
        directly (``GET …/access-token?rejected=<sha256>``)."""
        seen = await self.store.account_token(account_id)
        if seen is None or seen.organization_id != organization_id:
            raise AccountNotFound(f"account {account_id} does not exist")
        current = None
        if seen.access_token_ciphertext is not None:
            current = self.refresher.keyring.decrypt(
                seen.access_token_ciphertext, account_id=account_id, field=TokenField.ACCESS_TOKEN
            )
        if current is not None and hmac.compare_digest(token_digest(current), rejected_digest):
            await self.refresher.refresh(account_id, Trigger.ON_DEMAND, actor=actor, seen=seen)
        return await self.refresher.get_access_token(
            account_id, actor=actor, organization_id=organization_id
        )

    async def _answer(
        self,
        account_id: int,
        api: str,
        response: aiohttp.ClientResponse,
        *,
        prefix: bytes | None = None,
    ) -> ProxyAnswer:
        now = self.clock()
        for observer in self.observers:
            try:
                observer(account_id, api, response.status, now)
            except Exception:  # an observer's bug must never fail a call
                logger.exception("proxy.observer_failed")
        headers = rest.forwarded(response.headers.items(), rest.RESPONSE_HEADERS)
        length = response.headers.get("content-length")
        encoded = response.headers.get("content-encoding")
        if prefix is None and length is not None and length.isdigit() and encoded is None:
            if int(length) > self.max_body_bytes:
                response.release()
                raise ProxyFailed(
                    f"eBay's answer is over {self.max_body_bytes} bytes", code="too_large"
                )
            if int(length) <= SMALL_BODY:
                try:
                    content = await response.read()
                except (TimeoutError, aiohttp.ClientError) as exc:
                    raise ProxyFailed("eBay's answer broke off") from exc
                finally:
                    response.release()
                return ProxyAnswer(response.status, headers, content=content)
            headers["Content-Length"] = length
        return ProxyAnswer(response.status, headers, body=self._stream(response, prefix))

    async def _stream(
        self, response: aiohttp.ClientResponse, prefix: bytes | None
    ) -> AsyncIterator[bytes]:
        size = 0
        try:
            if prefix is not None:
                size = len(prefix)
                yield prefix
            async for chunk in response.content.iter_chunked(CHUNK):
                size += len(chunk)
                if size > self.max_body_bytes:
                    # Headers are gone already: cutting the stream is all that is left.
                    raise ProxyFailed(f"eBay's answer is over {self.max_body_bytes} bytes")
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ProxyFailed("eBay's answer broke off") from exc
        finally:
            response.release()

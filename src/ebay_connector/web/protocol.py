"""The HTTP/1.1 connection handling the product's server runs with: uvicorn's httptools protocol
with the two limits it lacks.

* **Header size.** Request line and headers over :data:`MAX_HEADER_BYTES` are answered ``431``
  and the connection closed; llhttp would otherwise buffer a header of any size.
* **Header time.** A connection must deliver a request's headers within
  :data:`HEADER_TIMEOUT` of opening (or of its previous response); a connection that sends
  nothing, or a few bytes now and then, is closed. uvicorn only times out idle keep-alive
  connections after a response, so without this one a client could hold thousands open.

A front proxy should add its own limits as well (docs/deploy.md).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 64 * 1024
HEADER_TIMEOUT = timedelta(seconds=8)
KEEP_ALIVE_TIMEOUT = timedelta(seconds=5)

_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 31\r\n"
    b"connection: close\r\n\r\n"
    b"request header fields too large"
)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    _awaiting_headers = True
    _header_bytes = 0
    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._awaiting_headers:
            self._header_bytes += len(data)
        super().data_received(data)
        if self._awaiting_headers and self._header_bytes > MAX_HEADER_BYTES:
            self._cancel_deadline()
            if not self.transport.is_closing():
                self.transport.write(_TOO_LARGE)
                self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._expect_headers()

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._cancel_deadline()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request's headers start now; the keep-alive timer covers the silence before.
        self._awaiting_headers = True
        self._header_bytes = 0

    def _expect_headers(self) -> None:
        if not self._awaiting_headers:
            self._awaiting_headers = True
            self._header_bytes = 0
        if self._header_deadline is None:
            self._header_deadline = self.loop.call_later(
                HEADER_TIMEOUT.total_seconds(), self._headers_too_slow
            )

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self._awaiting_headers and not self.transport.is_closing():
            self.transport.close()

    def _cancel_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

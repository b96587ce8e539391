"""The outermost layer of the API: a body-size limit and ``Cache-Control: no-store`` on /api/.

A plain ASGI middleware rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware
runs every request in an extra task with memory streams (see docs/decisions.md, "A plain ASGI
guard and an async runtime dependency").
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

NO_STORE = (b"cache-control", b"no-store")


def _too_large() -> tuple[Message, Message]:
    body = json.dumps({"error": {"code": "too_large", "message": "request body too large"}})
    start: Message = {
        "type": "http.response.start",
        "status": 413,
        "headers": [(b"content-type", b"application/json"), NO_STORE],
    }
    return start, {"type": "http.response.body", "body": body.encode()}


class Guard:
    def __init__(
        self, app: ASGIApp, *, max_body_bytes: int, streamed: re.Pattern[str] | None = None
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.streamed = streamed  # routes that stream bodies under a cap of their own

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        api = scope["path"].startswith("/api/")
        if self.streamed is not None and self.streamed.fullmatch(scope["path"]):
            await self.app(scope, receive, _no_store(send))
            return
        length: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await self._refuse(send)
            return
        if length is None and chunked:
            # No announced size: read (at most the limit) before the app sees a byte of it.
            messages: list[Message] = []
            size = 0
            while True:
                message = await receive()
                messages.append(message)
                size += len(message.get("body", b""))
                if size > self.max_body_bytes:
                    await self._refuse(send)
                    return
                if message["type"] != "http.request" or not message.get("more_body"):
                    break
            receive = _replay(messages, receive)

        await self.app(scope, receive, _no_store(send) if api else send)

    @staticmethod
    async def _refuse(send: Send) -> None:
        start, body = _too_large()
        await send(start)
        await send(body)


def _no_store(send: Send) -> Send:
    async def send_no_store(message: Message) -> None:
        if message["type"] == "http.response.start":
            # Tokens and account data must never sit in a cache.
            headers = [h for h in message.get("headers", []) if h[0] != b"cache-control"]
            message = {**message, "headers": [*headers, NO_STORE]}
        await send(message)

    return send_no_store


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay

"""The outermost layer of the app: a body-size limit and the headers every answer carries.

``Cache-Control: no-store`` on everything but the static files (tokens, account data and signed-in
pages never sit in a cache), and the browser-side rules: no framing (``X-Frame-Options: DENY``,
``frame-ancestors 'none'``), a content security policy allowing this site's own scripts and
styles only, no ``Referer`` leaving the site, no MIME sniffing.

A plain ASGI middleware rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware
runs every request in an extra task with memory streams (see docs/decisions.md, "A plain ASGI
guard and an async runtime dependency").
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

NO_STORE = (b"cache-control", b"no-store")
STATIC_PREFIXES = ("/ui/static/", "/docs/assets/")  # the package's own files: cacheable


def security_headers(form_targets: tuple[str, ...] = ()) -> list[tuple[bytes, bytes]]:
    """The headers of every answer; ``form_targets`` are origins a form may lead to (eBay's
    consent page: a connect is a form post that redirects there)."""
    targets = " ".join(("'self'", *form_targets))
    policy = (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
        f"frame-ancestors 'none'; form-action {targets}"
    )
    return [
        (b"content-security-policy", policy.encode()),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-content-type-options", b"nosniff"),
    ]


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
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        streamed: re.Pattern[str] | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        relaxed_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.streamed = streamed  # routes that stream bodies under a cap of their own
        self.headers = headers if headers is not None else security_headers()
        # Paths whose pages bring their own policy (the emulator's consent page, /docs).
        self.relaxed_prefixes = relaxed_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        cacheable = path.startswith(STATIC_PREFIXES)
        extra = [] if path.startswith(self.relaxed_prefixes) else self.headers

        async def send_guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name for name, _ in extra}
                if not cacheable:
                    names.add(b"cache-control")
                headers = [h for h in message.get("headers", []) if h[0] not in names]
                headers += extra
                if not cacheable:
                    headers.append(NO_STORE)
                message = {**message, "headers": headers}
            await send(message)

        if self.streamed is not None and self.streamed.fullmatch(path):
            await self.app(scope, receive, send_guarded)
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

        await self.app(scope, receive, send_guarded)

    @staticmethod
    async def _refuse(send: Send) -> None:
        start, body = _too_large()
        await send(start)
        await send(body)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay

"""The emulator's HTTP face: eBay's paths on one host, plus a JSON control API under /_emulator/.

Handlers only parse, wait (latency and hang faults are ``await``-ed, never blocking the loop)
and render; every decision is made by :class:`~ebay_connector.emulator.state.Emulator`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import secrets
import socket
import struct
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from ebay_connector.emulator import consent, notifications, sell, wire
from ebay_connector.emulator.state import Emulator
from ebay_connector.emulator.store import App, User
from ebay_connector.emulator.wire import Answer, Endpoint, Faults

TOKEN_PATH = "/identity/v1/oauth2/token"
REVOKE_PATH = "/identity/v1/oauth2/token/revoke"
USER_PATH = "/commerce/identity/v1/user/"
CONTROL = "/_emulator"
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_FIELDS = 64

Handler = Callable[[Request], Awaitable[Response]]


class HangRelease:
    """Wakes requests held by a ``hang`` fault when the server stops (called from any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._released = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def _event_here(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._event is None or self._loop is not loop:
                self._loop, self._event = loop, asyncio.Event()
                if self._released:
                    self._event.set()
            return self._event

    def release(self) -> None:
        with self._lock:
            self._released = True
            loop, event = self._loop, self._event
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    async def hold(self, request: Request, seconds: float) -> None:
        """Return when the client disconnects, ``seconds`` pass, or the server stops."""
        waits = [
            asyncio.ensure_future(self._event_here().wait()),
            asyncio.ensure_future(_disconnected(request)),
            asyncio.ensure_future(asyncio.sleep(seconds)),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()
            await asyncio.gather(*waits, return_exceptions=True)


async def _disconnected(request: Request) -> None:
    # The body has been read (or is empty), so the next ASGI message that matters is the
    # disconnect; uvicorn delivers it as soon as the client closes the socket.
    while (await request.receive())["type"] != "http.disconnect":
        pass


class EmulatorApp(Starlette):
    """The ASGI app; ``emulator`` is its state, ``hangs`` lets a server stop cleanly."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self.hangs = HangRelease()
        super().__init__(routes=_routes(emulator, self.hangs))
        # eBay's getUser path ends in "/": a client that drops it should see a 404 here,
        # not be silently redirected to the right path.
        self.router.redirect_slashes = False


def create_app(emulator: Emulator) -> EmulatorApp:
    return EmulatorApp(emulator)


async def read_form(request: Request) -> dict[str, str] | None:
    """The url-encoded body, or None when it is not one (wrong type, bad encoding, repeats)."""
    content_type = request.headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() != FORM_TYPE:
        return None
    try:
        text = (await request.body()).decode("utf-8")
        pairs = parse_qsl(
            text, keep_blank_values=True, errors="strict", max_num_fields=MAX_FORM_FIELDS
        )
    except ClientDisconnect:
        return None  # nobody is left to answer; whatever the handler sends is dropped
    except ValueError:  # not UTF-8, a bad %-escape, or too many fields
        return None
    form = dict(pairs)
    # RFC 6749 §3.2: parameters must not be repeated; treated as a malformed request.
    return form if len(form) == len(pairs) else None


def render(answer: Answer) -> Response:
    headers = dict(answer.headers)
    if answer.body is None:
        return Response(b"", answer.status, headers=headers)
    if isinstance(answer.body, str):
        return Response(answer.body, answer.status, headers=headers, media_type=answer.media_type)
    body = json.dumps(answer.body, separators=(",", ":"))
    return Response(body, answer.status, headers=headers, media_type="application/json")


_HUNG = Answer(504, "upstream request timed out", media_type="text/plain; charset=utf-8")


async def _wait_faults(
    request: Request, faults: Faults, hangs: HangRelease, unanswered: Callable[[], None]
) -> bool:
    """Apply latency, then hang, then reset; True when no real answer is due (hung or reset).

    ``unanswered`` logs the call: after a hang ends, and before a reset (the server may cancel
    the handler as soon as the connection is gone).
    """
    if faults.latency_ms:
        await asyncio.sleep(faults.latency_ms / 1000)
    if faults.hang:
        await hangs.hold(request, faults.hang_s)
        unanswered()
        return True
    if faults.reset:
        unanswered()
        await _reset_connection(request)
        return True
    return False


async def _reset_connection(request: Request) -> None:
    """Drop the client's TCP connection with a RST (SO_LINGER 0), as a failing proxy does.

    ASGI has no "abort" message, so this reaches uvicorn's transport through the bound
    ``receive`` of its request cycle. Without one (e.g. in-process over ``ASGITransport``) the
    closest thing is an exception that reaches the client.
    """
    cycle = getattr(request.receive, "__self__", None)
    transport: Any = getattr(cycle, "transport", None)
    # Duck-typed: uvloop's transports (uvicorn picks uvloop when installed) are not
    # asyncio.Transport subclasses.
    if not (hasattr(transport, "abort") and hasattr(transport, "get_extra_info")):
        raise ConnectionResetError("emulator reset fault")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Let the loop deliver connection_lost, so the answer the handler returns is dropped.
    for _ in range(3):
        await asyncio.sleep(0)


def _routes(emulator: Emulator, hangs: HangRelease) -> list[Route]:
    async def token(request: Request) -> Response:
        form = await read_form(request)
        faults, owner = emulator.faults_for(form)
        grant = (form or {}).get("grant_type")
        if await _wait_faults(
            request,
            faults,
            hangs,
            lambda: emulator.note_unanswered(Endpoint.TOKEN, grant, owner),
        ):
            return render(_HUNG)
        auth = request.headers.get("authorization")
        return render(emulator.token(form, auth, faults))

    async def revoke(request: Request) -> Response:
        form = await read_form(request)
        faults, owner = emulator.faults_for(form)
        if await _wait_faults(
            request, faults, hangs, lambda: emulator.note_unanswered(Endpoint.REVOKE, None, owner)
        ):
            return render(_HUNG)
        return render(emulator.revoke(form, request.headers.get("authorization"), faults))

    async def get_user(request: Request) -> Response:
        auth = request.headers.get("authorization")
        faults, owner = emulator.faults_for(None, auth)
        if await _wait_faults(
            request, faults, hangs, lambda: emulator.note_unanswered(Endpoint.USER, None, owner)
        ):
            return render(_HUNG)
        return render(emulator.get_user(auth, faults))

    async def consent_page(request: Request) -> Response:
        found = emulator.consent_request(dict(request.query_params))
        if found is None:
            return render(Answer(400, wire.AUTHORIZE_ERROR))
        # Post back to where this page is served: the emulator may be mounted under a prefix.
        page = consent.render_page(found, emulator.known_usernames(), action=request.url.path)
        return HTMLResponse(page)

    async def consent_decision(request: Request) -> Response:
        form = await read_form(request) or {}
        found = emulator.consent_request(form)
        decision = form.get("decision")
        if found is None or decision not in ("agree", "decline"):
            return render(Answer(400, wire.AUTHORIZE_ERROR))
        username = (form.get("new_username") or "").strip() or form.get("username")
        return render(emulator.consent(found, username, decision == "agree"))

    def sell_route(operation: str) -> Handler:
        async def handler(request: Request) -> Response:
            auth = request.headers.get("authorization")
            faults, owner = emulator.faults_for(None, auth)
            if await _wait_faults(
                request, faults, hangs, lambda: emulator.note_unanswered(Endpoint.SELL, None, owner)
            ):
                return render(_HUNG)
            body = await request.body() if request.method == "PUT" else b""
            answer = emulator.sell(
                operation,
                auth,
                faults,
                query=dict(request.query_params),
                sku=request.path_params.get("sku", ""),
                body=body,
                content_language=request.headers.get("content-language"),
            )
            response = render(answer)
            response.headers["X-EBAY-C-REQUEST-ID"] = secrets.token_hex(8)
            return response

        return handler

    return [
        Route(sell.INVENTORY_PATH, sell_route("inventory_items"), methods=["GET"]),
        Route(sell.INVENTORY_PATH + "/{sku}", sell_route("inventory_item"), methods=["GET"]),
        Route(sell.INVENTORY_PATH + "/{sku}", sell_route("put_inventory_item"), methods=["PUT"]),
        Route(sell.ORDER_PATH, sell_route("orders"), methods=["GET"]),
        Route(sell.PRIVILEGE_PATH, sell_route("privileges"), methods=["GET"]),
        Route(TOKEN_PATH, token, methods=["POST"]),
        Route(REVOKE_PATH, revoke, methods=["POST"]),
        Route(USER_PATH, get_user, methods=["GET"]),
        Route(consent.AUTHORIZE_PATH, consent_page, methods=["GET"]),
        Route(consent.AUTHORIZE_PATH, consent_decision, methods=["POST"]),
        *_control_routes(emulator),
        *notifications.routes(emulator),  # account-deletion notifications
    ]


# -- control API ------------------------------------------------------------------------------


def _control(handler: Handler) -> Handler:
    """Map the emulator's ValueError/TypeError (bad input) and LookupError (unknown) to JSON."""

    @functools.wraps(handler)
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except LookupError as exc:
            return JSONResponse({"error": "not_found", "detail": str(exc)}, 404)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": "bad_request", "detail": str(exc)}, 400)

    return wrapped


async def _object(request: Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError as exc:
        raise ValueError("body must be a JSON object") from exc
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data


def _app_json(app: App) -> dict[str, object]:
    scopes = None if app.scopes is None else sorted(app.scopes)
    fields = {"client_id": app.client_id, "ru_name": app.ru_name, "accept_url": app.accept_url}
    return {**fields, "decline_url": app.decline_url, "scopes": scopes}


def _user_json(user: User) -> dict[str, object]:
    return dataclasses.asdict(user)


def _faults_json(faults: Faults) -> dict[str, object]:
    return dataclasses.asdict(faults)


def _scopes(value: object) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return list(wire.parse_scopes(value))
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return value
    raise ValueError("scopes must be a list of strings or a space-separated string")


def _control_routes(emulator: Emulator) -> list[Route]:
    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "now": emulator.now().isoformat()})

    async def add_app(request: Request) -> Response:
        data = await _object(request)
        data["scopes"] = _scopes(data.get("scopes"))
        return JSONResponse(_app_json(emulator.register_app(**data)), 201)

    async def list_apps(request: Request) -> Response:
        return JSONResponse([_app_json(a) for a in emulator.apps()])

    async def add_user(request: Request) -> Response:
        return JSONResponse(_user_json(emulator.add_user(**await _object(request))), 201)

    async def list_users(request: Request) -> Response:
        return JSONResponse([_user_json(u) for u in emulator.users()])

    async def revoke_user(request: Request) -> Response:
        return JSONResponse({"revoked": emulator.revoke_user(request.path_params["username"])})

    async def reject_tokens(request: Request) -> Response:
        emulator.reject_access_tokens(request.path_params["username"])
        return JSONResponse({"rejected": True})

    async def add_order(request: Request) -> Response:
        emulator.add_order(request.path_params["username"], await _object(request))
        return JSONResponse({"added": True}, 201)

    async def refresh_expiry(request: Request) -> Response:
        value = (await _object(request)).get("expires_at")
        if not isinstance(value, str):
            raise ValueError("expires_at must be an ISO 8601 string with a UTC offset")
        when = datetime.fromisoformat(value)
        updated = emulator.set_refresh_expiry(request.path_params["username"], when)
        return JSONResponse({"updated": updated})

    async def issue_grant(request: Request) -> Response:
        data = await _object(request)
        scopes = _scopes(data.get("scopes")) or []
        body = emulator.issue_grant(str(data.get("client_id")), str(data.get("username")), scopes)
        return JSONResponse(body, 201)

    async def get_faults(request: Request) -> Response:
        base, users = emulator.fault_settings()
        per_user = {name: _faults_json(f) for name, f in users.items()}
        return JSONResponse({"global": _faults_json(base), "users": per_user})

    async def set_faults(request: Request) -> Response:
        faults = Faults(**await _object(request))
        emulator.set_faults(faults, request.path_params.get("username"))
        return JSONResponse(_faults_json(faults))

    async def clear_faults(request: Request) -> Response:
        emulator.clear_faults(request.path_params.get("username"))
        return JSONResponse(_faults_json(Faults()))

    async def calls(request: Request) -> Response:
        query = request.query_params
        status = int(query["status"]) if "status" in query else None
        filters = {
            "endpoint": query.get("endpoint"),
            "grant_type": query.get("grant_type"),
            "username": query.get("username"),
        }
        count = emulator.calls.count(**filters, status=status)
        matching = [
            c.as_json()
            for c in emulator.calls
            if all(v is None or getattr(c, k) == v for k, v in filters.items())
            and (status is None or c.status == status)
        ]
        if "limit" in query:
            limit = int(query["limit"])
            matching = matching[-limit:] if limit > 0 else []
        return JSONResponse({"count": count, "calls": matching})

    async def clock(request: Request) -> Response:
        return JSONResponse({"now": emulator.now().isoformat()})

    async def advance_clock(request: Request) -> Response:
        seconds = (await _object(request)).get("seconds")
        if not isinstance(seconds, int | float) or isinstance(seconds, bool):
            raise ValueError("seconds must be a number")
        return JSONResponse({"now": emulator.advance_clock(seconds).isoformat()})

    async def reset(request: Request) -> Response:
        emulator.reset()
        return JSONResponse({"ok": True})

    user = CONTROL + "/users/{username}"
    table: list[tuple[str, Handler, str]] = [
        ("/health", health, "GET"),
        ("/apps", add_app, "POST"),
        ("/apps", list_apps, "GET"),
        ("/users", add_user, "POST"),
        ("/users", list_users, "GET"),
        ("/grants", issue_grant, "POST"),
        ("/faults", get_faults, "GET"),
        ("/faults", set_faults, "PUT"),
        ("/faults", clear_faults, "DELETE"),
        ("/calls", calls, "GET"),
        ("/clock", clock, "GET"),
        ("/clock/advance", advance_clock, "POST"),
        ("/reset", reset, "POST"),
    ]
    routes = [Route(CONTROL + path, _control(h), methods=[m]) for path, h, m in table]
    return [
        *routes,
        Route(user + "/revoke", _control(revoke_user), methods=["POST"]),
        Route(user + "/reject-access-tokens", _control(reject_tokens), methods=["POST"]),
        Route(user + "/orders", _control(add_order), methods=["POST"]),
        Route(user + "/refresh-expiry", _control(refresh_expiry), methods=["PUT"]),
        Route(user + "/faults", _control(set_faults), methods=["PUT"]),
        Route(user + "/faults", _control(clear_faults), methods=["DELETE"]),
    ]

"""eBay's consent step (``/oauth2/authorize``): validating the request, the decision, the page.

The page is a plain HTML form so a person can click through it and a script can answer it with
ONE ``POST /oauth2/authorize`` (no cookies, no CSRF token): the hidden fields carry the request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from html import escape

from ebay_connector.emulator import wire
from ebay_connector.emulator.store import Store
from ebay_connector.emulator.wire import Answer

AUTHORIZE_PATH = "/oauth2/authorize"


@dataclass(frozen=True, slots=True)
class ConsentRequest:
    """A validated authorize request (the GET's query, or the POST's hidden fields)."""

    client_id: str
    ru_name: str
    scopes: tuple[str, ...]
    state: str | None
    prompt: str | None = None
    locale: str | None = None


def validate(store: Store, params: Mapping[str, str]) -> ConsentRequest | None:
    """None when eBay would show ``invalid_request``: unknown client_id, RuName not the app's,
    response_type not ``code``, no scope, or a scope the keyset does not have."""
    app = store.apps.get(params.get("client_id") or "")
    scopes = wire.parse_scopes(params.get("scope") or "")
    if (
        app is None
        or params.get("redirect_uri") != app.ru_name
        or params.get("response_type") != "code"
        or not scopes
        or not all(app.allows(s) for s in scopes)
    ):
        return None
    return ConsentRequest(
        app.client_id,
        app.ru_name,
        scopes,
        params.get("state"),
        params.get("prompt"),
        params.get("locale"),
    )


def decide(
    store: Store, request: ConsentRequest, username: str | None, agree: bool, now: datetime
) -> Answer:
    """302 to the accept URL with ``state``, ``code`` and ``expires_in``; or, on decline, to the
    decline URL (default: the accept URL) with ``state`` and ``error=access_denied``.

    Agreeing as an unknown username creates that user (the page's "new username" field).
    """
    app = store.apps.get(request.client_id)
    if app is None:
        return Answer(400, wire.AUTHORIZE_ERROR)
    state = [] if request.state is None else [("state", request.state)]
    if not agree:
        target = app.decline_url or app.accept_url
        return _redirect(wire.with_query(target, [*state, ("error", "access_denied")]))
    if not username:
        return Answer(400, wire.AUTHORIZE_ERROR)
    if username not in store.users:
        store.add_user(username)
    code = store.new_code(app.client_id, app.ru_name, username, request.scopes, now)
    pairs = [*state, ("code", code), ("expires_in", str(store.config.code_ttl_s))]
    return _redirect(wire.with_query(app.accept_url, pairs))


def _redirect(location: str) -> Answer:
    return Answer(302, None, headers={"Location": location})


def _hidden(name: str, value: str) -> str:
    return f'<input type="hidden" name="{name}" value="{escape(value)}">'


def render_page(request: ConsentRequest, usernames: list[str], action: str = AUTHORIZE_PATH) -> str:
    """The consent form: pick a known user or type a new username, then Agree or Decline."""
    hidden = [
        _hidden("client_id", request.client_id),
        _hidden("redirect_uri", request.ru_name),
        _hidden("response_type", "code"),
        _hidden("scope", " ".join(request.scopes)),
    ]
    # state is echoed only if it was sent, so it is carried only if it was sent.
    for name, value in (
        ("state", request.state),
        ("prompt", request.prompt),
        ("locale", request.locale),
    ):
        if value is not None:
            hidden.append(_hidden(name, value))
    users = "\n".join(
        f'<div><input type="radio" name="username" id="user-{i}" value="{escape(name)}"'
        f'{" checked" if i == 0 else ""}> <label for="user-{i}">{escape(name)}</label></div>'
        for i, name in enumerate(usernames)
    )
    scopes = "\n".join(f"<li><code>{escape(s)}</code></li>" for s in request.scopes)
    lang = escape(request.locale or "en-US")
    return f"""<!DOCTYPE html>
<html lang="{lang}">
<head><meta charset="utf-8"><title>Grant application access (eBay emulator)</title></head>
<body>
<h1>Grant application access</h1>
<p>The application <strong>{escape(request.client_id)}</strong> would like to access your eBay
account with these permissions:</p>
<ul>
{scopes}
</ul>
<form method="post" action="{escape(action)}">
{chr(10).join(hidden)}
<fieldset>
<legend>Sign in as</legend>
{users}
<div><label for="new_username">Or a new eBay username</label>
<input type="text" id="new_username" name="new_username" autocomplete="off"></div>
</fieldset>
<button type="submit" name="decision" value="agree">Agree</button>
<button type="submit" name="decision" value="decline">Decline</button>
</form>
</body>
</html>
"""

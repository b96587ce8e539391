"""eBay's REST APIs as the proxy reaches them: which host, which path, which headers cross.

The upstream host is always the configured environment's (``settings.Endpoints``): the REST
APIs' host, or the identity API's own host for ``commerce/identity/…`` as eBay has it. The caller
names only a path, checked here in its raw (still percent-encoded) form so that nothing a
decoder might turn into ``..`` or another host ever reaches the URL (no SSRF).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from ebay_connector.errors import InvalidProxyPath
from ebay_connector.settings import Endpoints

IDENTITY_PREFIX = "commerce/identity/"
MAX_PATH_LENGTH = 2048
# RFC 3986 pchar: unreserved, percent-encoded, sub-delims, ':' and '@'.
_SEGMENT = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@]|%[0-9A-Fa-f]{2})+")
_DOTS = re.compile(r"(?:\.|%2e){1,2}", re.IGNORECASE)
_API = re.compile(r"[a-z][a-z0-9_.-]{0,40}/[a-z][a-z0-9_.-]{0,40}")

# Request headers a program may send on to eBay; everything else (its Authorization above all,
# cookies, hop-by-hop headers) stays here.
REQUEST_HEADERS = frozenset(
    {
        "accept",
        "accept-language",
        "content-type",
        "content-language",
        "content-length",
        "if-match",
        "if-none-match",
        "x-ebay-c-marketplace-id",
        "x-ebay-c-enduserctx",
        "x-ebay-c-tracking",
    }
)
# Response headers eBay's answer keeps (length only when the body is passed on as sent).
RESPONSE_HEADERS = frozenset(
    {
        "content-type",
        "content-language",
        "retry-after",
        "location",
        "etag",
        "last-modified",
        "warning",
        "x-ebay-c-request-id",
        "rlogid",
        "x-ebay-c-marketplace-id",
    }
)


def check_path(raw_path: str) -> str:
    """The proxied path as sent (percent-encoding kept), or ``InvalidProxyPath``."""
    if not raw_path or len(raw_path) > MAX_PATH_LENGTH:
        raise InvalidProxyPath(f"the path must be 1 to {MAX_PATH_LENGTH} characters")
    segments = raw_path.split("/")
    # A trailing "/" is part of some eBay paths (getUser's): only the last segment may be empty.
    for segment in segments[:-1] if len(segments) > 1 and not segments[-1] else segments:
        if not _SEGMENT.fullmatch(segment) or _DOTS.fullmatch(segment):
            raise InvalidProxyPath(
                "the path must be plain segments of an eBay API path (no empty, '.' or '..' "
                "segments, no characters outside RFC 3986)"
            )
    if segments[0] == "identity":
        raise InvalidProxyPath("the OAuth endpoints are not proxied")
    return raw_path


def upstream_url(endpoints: Endpoints, raw_path: str, raw_query: str) -> str:
    """Where eBay serves ``raw_path``: the environment's REST host, or the identity host."""
    path = check_path(raw_path)
    if path.startswith(IDENTITY_PREFIX):
        base = endpoints.identity_url.split("/" + IDENTITY_PREFIX, 1)[0]
    else:
        base = endpoints.api_url.rstrip("/")
    return f"{base}/{path}" + (f"?{raw_query}" if raw_query else "")


def api_of(raw_path: str) -> str:
    """The API a path belongs to (``sell/inventory``), for metrics: a bounded set of labels."""
    two = "/".join(raw_path.split("/", 2)[:2]).lower()
    return two if _API.fullmatch(two) else "other"


def forwarded(headers: Iterable[tuple[str, str]], allowed: frozenset[str]) -> dict[str, str]:
    return {name: value for name, value in headers if name.lower() in allowed}


def invalid_access_token(body: bytes) -> bool:
    """eBay's answer for an access token it no longer accepts: 401 with errorId 1001."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    errors = data.get("errors") if isinstance(data, Mapping) else None
    return isinstance(errors, list) and any(
        isinstance(e, Mapping) and e.get("errorId") == 1001 for e in errors
    )

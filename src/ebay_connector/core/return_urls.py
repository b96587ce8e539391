"""Where a connect session may send the seller back: an organization's allow-list, matched by
exact origin (scheme, host, port) and path prefix on whole segments.

A seller's browser follows the redirect with the outcome in the query, so an open redirect here
would hand an attacker's page a fresh ``account_id`` and a convincing link. Anything a browser
might read differently from :func:`urllib.parse.urlsplit` (backslashes, control characters,
user info, dot segments) is refused rather than interpreted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

MAX_URL_LENGTH = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}
_REFUSED_CHARACTERS = re.compile(r"[\\\s\x00-\x1f\x7f]")
_DOT_SEGMENT = re.compile(r"(^|/)(\.|%2e){1,2}(/|$)", re.IGNORECASE)


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    path: str


def parse(url: str) -> Target:
    """The URL's origin and path; ``ValueError`` with a readable reason when it is refused."""
    if not url or len(url) > MAX_URL_LENGTH:
        raise ValueError(f"must be 1 to {MAX_URL_LENGTH} characters")
    if _REFUSED_CHARACTERS.search(url):
        raise ValueError("must not contain spaces, backslashes or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("must be an http:// or https:// URL")
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise ValueError("must not carry a user name or password")
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError("must name a host")
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError as exc:
        raise ValueError("has an invalid port") from exc
    path = parts.path or "/"
    if _DOT_SEGMENT.search(path):
        raise ValueError("must not contain '.' or '..' path segments")
    return Target(scheme, host, port, path)


def normalize_entry(url: str) -> str:
    """An allow-list entry as stored: origin and path prefix, no query or fragment."""
    target = parse(url)
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise ValueError("an allowed return URL is an origin and a path prefix, without ? or #")
    netloc = target.host if ":" not in target.host else f"[{target.host}]"
    if target.port != _DEFAULT_PORTS[target.scheme]:
        netloc = f"{netloc}:{target.port}"
    return urlunsplit((target.scheme, netloc, target.path, "", ""))


def _under(path: str, prefix: str) -> bool:
    if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
        return True
    return path.startswith(prefix + "/")


def allowed(url: str, entries: Iterable[str]) -> bool:
    """True when ``url`` has the exact origin of an entry and a path under its prefix."""
    try:
        target = parse(url)
    except ValueError:
        return False
    for entry in entries:
        allowed_target = parse(entry)
        same_origin = (target.scheme, target.host, target.port) == (
            allowed_target.scheme,
            allowed_target.host,
            allowed_target.port,
        )
        if same_origin and _under(target.path, allowed_target.path):
            return True
    return False


def with_outcome(url: str, params: Mapping[str, str]) -> str:
    """``url`` with the outcome's parameters added to its query (its own are kept)."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))

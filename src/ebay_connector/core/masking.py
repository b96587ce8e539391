"""The one way a secret is shown anywhere (logs, exchange records, CLI, API, UI).

A masked secret keeps a short prefix, its length and a keyed fingerprint: never the secret, but
enough to tell an ``ENC:v1:`` ciphertext from a ``v^1.1#`` eBay token at a glance, and to prove
which token was sent by comparing fingerprints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol, TypedDict
from urllib.parse import quote, quote_plus, unquote_plus

PREFIX_MAX_CHARS = 10
"""Longest prefix shown, in characters: all of ``v^1.1#i^1#``, which every eBay token shares."""
PREFIX_FRACTION = 4
"""At most 1/PREFIX_FRACTION of a secret is shown, so short secrets keep most of their entropy."""

SECRET_FIELDS = frozenset(
    {"access_token", "refresh_token", "code", "client_secret", "token", "password", "id_token"}
)
"""Form fields, JSON keys and query parameters whose values are secrets (matched ignoring case)."""

_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization"})
_COOKIE_HEADERS = frozenset({"cookie", "set-cookie"})
_AUTH_SCHEMES = frozenset({"basic", "bearer"})


class Fingerprinter(Protocol):
    """Makes the keyed fingerprint of a secret (``crypto.KeyRing`` is one)."""

    def fingerprint(self, secret: str) -> str: ...


class MaskedDict(TypedDict):
    """JSON form of a masked secret."""

    prefix: str
    length: int
    fingerprint: str


class MaskedField(MaskedDict):
    """A masked secret in place of a form, JSON or query value; ``masked`` flags it as such."""

    masked: Literal[True]


@dataclass(frozen=True)
class Masked:
    """What may be shown of a secret: a short prefix, its length and its fingerprint."""

    prefix: str
    length: int
    fingerprint: str

    def __str__(self) -> str:
        return f"{self.prefix}…(len {self.length}, fp {self.fingerprint})"

    def to_dict(self) -> MaskedDict:
        """JSON-ready form."""
        return {"prefix": self.prefix, "length": self.length, "fingerprint": self.fingerprint}


def mask(secret: str, fp: Fingerprinter) -> Masked:
    """Mask one secret."""
    shown = min(PREFIX_MAX_CHARS, len(secret) // PREFIX_FRACTION)
    return Masked(prefix=secret[:shown], length=len(secret), fingerprint=fp.fingerprint(secret))


def mask_field(secret: str, fp: Fingerprinter) -> MaskedField:
    """The value that stands in for a secret in masked forms and JSON bodies."""
    m = mask(secret, fp)
    return {"masked": True, "prefix": m.prefix, "length": m.length, "fingerprint": m.fingerprint}


def is_secret_field(name: str) -> bool:
    """Whether a form field, JSON key or query parameter named ``name`` holds a secret."""
    return name.lower() in SECRET_FIELDS


def mask_form(fields: Mapping[str, str], fp: Fingerprinter) -> dict[str, object]:
    """A copy of form fields with secret values replaced by ``mask_field``."""
    return {
        name: mask_field(value, fp) if is_secret_field(name) else value
        for name, value in fields.items()
    }


def mask_headers(
    headers: Mapping[str, str] | Iterable[tuple[str, str]], fp: Fingerprinter
) -> dict[str, str]:
    """A copy of HTTP headers with credentials and cookies masked.

    ``Basic``/``Bearer`` keep their scheme so the record still says how the call authenticated.
    Repeated headers (several ``Set-Cookie``) are joined with ``", "`` after masking each.
    """
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    seen: dict[str, str] = {}  # lower-case name -> name as first written
    for name, value in pairs:
        shown = _mask_header(name.lower(), value, fp)
        first = seen.setdefault(name.lower(), name)
        out[first] = f"{out[first]}, {shown}" if first in out else shown
    return out


def _mask_header(lower_name: str, value: str, fp: Fingerprinter) -> str:
    if lower_name in _CREDENTIAL_HEADERS:
        scheme, _, credentials = value.strip().partition(" ")
        if scheme.lower() in _AUTH_SCHEMES and credentials.strip():
            return f"{scheme} {mask(credentials.strip(), fp)}"
        return str(mask(value, fp))
    if lower_name in _COOKIE_HEADERS:
        return str(mask(value, fp))
    return value


def mask_json(value: object, fp: Fingerprinter) -> object:
    """A deep copy of a decoded JSON value with string values under secret keys masked."""
    if isinstance(value, Mapping):
        return {
            key: mask_field(item, fp)
            if isinstance(key, str) and is_secret_field(key) and isinstance(item, str)
            else mask_json(item, fp)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [mask_json(item, fp) for item in value]
    return value


def mask_url(url: str, fp: Fingerprinter) -> str:
    """The URL with secret query (and fragment) parameters masked, e.g. an OAuth ``code``.

    Everything else is kept byte for byte; the masked value is not percent-encoded, because the
    result is for reading, not for requesting.
    """
    base, hash_sign, fragment = url.partition("#")
    base, question, query = base.partition("?")
    # Implicit-grant callbacks carry ``access_token`` in the fragment, so mask it there too.
    return base + question + _mask_query(query, fp) + hash_sign + _mask_query(fragment, fp)


def _mask_query(query: str, fp: Fingerprinter) -> str:
    parts = []
    for part in query.split("&"):
        name, equals, value = part.partition("=")
        if equals and is_secret_field(unquote_plus(name)):
            # Fingerprint the decoded value, so it matches the fingerprint of the sent secret.
            part = f"{name}={mask(unquote_plus(value), fp)}"
        parts.append(part)
    return "&".join(parts)


def mask_text(text: str, secrets: Iterable[str], fp: Fingerprinter) -> str:
    """Free text (an exception message, a non-JSON body) with every known secret masked.

    Percent-encoded forms are masked too: eBay tokens contain ``^`` and ``#``, which a form
    body or URL carries as ``%5E`` and ``%23``.
    """
    replacements: dict[str, str] = {}
    for secret in secrets:
        if secret:
            shown = str(mask(secret, fp))
            for form in (secret, quote(secret, safe=""), quote_plus(secret)):
                replacements.setdefault(form, shown)
    if not replacements:
        return text
    # One pass, longest first: a secret containing another is replaced whole, and text already
    # replaced is never scanned again.
    pattern = "|".join(re.escape(form) for form in sorted(replacements, key=len, reverse=True))
    return re.sub(pattern, lambda match: replacements[match.group(0)], text)

"""eBay-shaped opaque strings: access tokens, refresh tokens, authorization codes, user ids.

Every string is fresh randomness from :mod:`secrets`; only the ``v^1.1#…`` headers mimic eBay.
The headers matter because they contain ``^`` and ``#`` and the base64 tails contain ``+``, ``/``
and ``=``: a client that forgets to form-encode (or encodes twice) fails against the emulator
exactly as it would against eBay.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import string


def _header(*fields: str) -> str:
    # Built from the observed fields rather than written as one literal, so the header reads as
    # a list of facts and no token-like literal sits in the source.
    return "#".join(fields)


USER_ACCESS_HEADER = _header("v^1.1", "i^1", "p^3", "r^1", "I^3", "f^0", "t^H4sI")
APPLICATION_ACCESS_HEADER = _header("v^1.1", "i^1", "p^1", "r^0", "I^3", "f^0", "t^H4sI")
REFRESH_HEADER = _header("v^1.1", "i^1", "I^3", "r^1", "p^3", "f^0", "t^Ul4x")
CODE_HEADER = _header("v^1.1", "i^1", "r^1", "p^3", "I^3", "f^0", "t^Ul4xX")

# Payload sizes in random bytes. 640 → 856 base64 chars, so access tokens are ~890 chars long
# (eBay's are long; clients that store them in VARCHAR(255) should break here, not in prod).
# 640 % 3 == 1 and 71 % 3 == 2, so access tokens end in "==" and codes in a single "=".
ACCESS_PAYLOAD_BYTES = 640
REFRESH_PAYLOAD_BYTES = 50
CODE_PAYLOAD_BYTES = 71

USER_ID_LENGTH = 11
_USER_ID_ALPHABET = string.ascii_letters + string.digits


def _payload(nbytes: int) -> str:
    """Random standard base64 that is guaranteed to contain both ``+`` and ``/``."""
    text = list(base64.b64encode(secrets.token_bytes(nbytes)).decode("ascii"))
    # Replacing characters keeps the text valid base64; the last 4-char group is left alone so
    # the padding stays canonical. Forcing both specials means every token exercises encoding.
    body = len(text) - 4
    plus_at = secrets.randbelow(body)
    slash_at = (plus_at + 1 + secrets.randbelow(body - 1)) % body
    text[plus_at] = "+"
    text[slash_at] = "/"
    return "".join(text)


def new_user_access_token() -> str:
    return USER_ACCESS_HEADER + _payload(ACCESS_PAYLOAD_BYTES)


def new_application_access_token() -> str:
    return APPLICATION_ACCESS_HEADER + _payload(ACCESS_PAYLOAD_BYTES)


def new_refresh_token() -> str:
    return REFRESH_HEADER + _payload(REFRESH_PAYLOAD_BYTES)


def new_code() -> str:
    return CODE_HEADER + _payload(CODE_PAYLOAD_BYTES)


def new_user_id() -> str:
    """An immutable-user-id look-alike (eBay's are short alphanumerics such as ``ma8vp1jySJC``)."""
    return "".join(secrets.choice(_USER_ID_ALPHABET) for _ in range(USER_ID_LENGTH))


def token_key(token: str) -> bytes:
    """A 16-byte digest used as the dictionary key for access tokens.

    Access tokens are ~900 characters and benchmarks mint tens of thousands; keying by digest
    keeps memory per live token small without ever accepting a token that differs by a byte.
    """
    return hashlib.blake2b(token.encode("utf-8", "surrogatepass"), digest_size=16).digest()

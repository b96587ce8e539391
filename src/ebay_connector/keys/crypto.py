"""Encryption of eBay tokens at rest: AES-256-GCM under a key ring, bound to account and field.

A stored token reads ``ENC:v1:<key-id>:<base64url-no-padding(nonce || ciphertext+tag)>``. The
associated data names the account and the field, so a ciphertext copied to another row or column
does not decrypt. Double encryption is refused on the way in and detected on the way out: a real
system once sent eBay ``ENC:v1:...`` as a token because it had been encrypted twice.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import os
import re
import secrets
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ebay_connector import log
from ebay_connector.errors import CryptoError, DecryptFailed, DecryptReason, KeyRingError

logger = logging.getLogger(__name__)

PREFIX = "ENC:v1:"  # Marks a value as a version-1 ciphertext of this module.
ENCRYPTED_MARK = "ENC:"  # Any value starting with this counts as encrypted, whatever the version.
KEY_BYTES = 32  # AES-256 key length, in bytes.
NONCE_BYTES = 12  # GCM nonce, in bytes; random per write (safe far below 2**32 writes per key).
TAG_BYTES = 16  # GCM authentication tag length, in bytes.
MIN_FINGERPRINT_KEY_BYTES = 16  # Shortest accepted HMAC key for fingerprints, in bytes.
FINGERPRINT_HEX_CHARS = 16  # Fingerprint length, in hex characters (64 bits: enough to compare).
FINGERPRINT_INFO = b"ebay-connector fingerprint v1"  # HKDF info for the default fingerprint key.
KEY_FILE_VERSION = 1
KEY_FILE_MODE = 0o600
KEY_DIR_MODE = 0o700
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class TokenField(StrEnum):
    """The encrypted column a ciphertext belongs to; part of the associated data."""

    ACCESS_TOKEN = "access_token"
    REFRESH_TOKEN = "refresh_token"


def generate_key() -> bytes:
    """A fresh random AES-256 key."""
    return secrets.token_bytes(KEY_BYTES)


def format_key(key_id: str, key: bytes) -> str:
    """The ``id:<base64url>`` entry of a key spec (see ``KeyRing.from_spec``)."""
    return f"{key_id}:{_b64encode(key)}"


def token_context(account_id: int, field: TokenField) -> str:
    """The seal context of one account's token field (what ``encrypt``/``decrypt`` bind to)."""
    return f"{account_id}/{field.value}"


def associated_data(account_id: int, field: TokenField) -> bytes:
    """The GCM associated data binding a ciphertext to one account's field."""
    return _aad(token_context(account_id, field))


def _aad(context: str) -> bytes:
    return f"ebay-connector/v1/{context}".encode()


class KeyRing:
    """Token keys by id, one primary for new writes, and the key that makes fingerprints."""

    # Deliberately not a dataclass: its repr must never show key material.

    __slots__ = ("_aead", "_fingerprint_key", "_keys", "_primary_id", "_source", "_stamp")

    def __init__(self, keys: Mapping[str, bytes], primary_id: str, fingerprint_key: bytes) -> None:
        for key_id, key in keys.items():
            if not _KEY_ID.fullmatch(key_id):
                raise KeyRingError("a key id is invalid: must match [A-Za-z0-9_-]{1,32}")
            if len(key) != KEY_BYTES:  # Lengths are safe to name; key material never is.
                raise KeyRingError(f"key {key_id!r} is {len(key)} bytes, need {KEY_BYTES}")
        if primary_id not in keys:
            raise KeyRingError(f"primary key {primary_id!r} is not in the key ring")
        if len(fingerprint_key) < MIN_FINGERPRINT_KEY_BYTES:
            need = MIN_FINGERPRINT_KEY_BYTES
            raise KeyRingError(f"fingerprint key is {len(fingerprint_key)} bytes, need {need}+")
        self._keys = dict(keys)
        self._primary_id = primary_id
        self._fingerprint_key = bytes(fingerprint_key)
        self._aead = {key_id: AESGCM(key) for key_id, key in self._keys.items()}
        # Set for a ring read from the local key file: it follows later edits of that file
        # (``keys rotate`` / ``keys remove``), so running processes need no restart.
        self._source: Path | None = None
        self._stamp: tuple[int, int, int] | None = None

    def __repr__(self) -> str:
        return f"KeyRing(primary_id={self._primary_id!r}, key_ids={self.key_ids!r})"

    @classmethod
    def from_spec(
        cls, keys: str, primary_id: str | None = None, fingerprint_key: str | None = None
    ) -> KeyRing:
        """Parse ``id1:<base64url 32 bytes>,id2:<...>`` (the environment-variable format).

        The primary defaults to the first listed key. Without an explicit ``fingerprint_key``
        (base64url) it is derived from the primary key by HKDF-SHA256, so fingerprints then
        change when the primary changes; set one explicitly to keep them comparable across
        rotations.
        """
        parsed: dict[str, bytes] = {}
        # Errors name entries by position, never by content: a malformed entry may be a key.
        for position, entry in enumerate(keys.split(","), start=1):
            key_id, sep, encoded = entry.strip().partition(":")
            if not sep:
                raise KeyRingError(f"key entry {position} is not 'id:<base64url key>'")
            if not _KEY_ID.fullmatch(key_id):
                raise KeyRingError(f"key entry {position} has an invalid id")
            if key_id in parsed:
                raise KeyRingError(f"key id {key_id!r} is listed twice")
            parsed[key_id] = _require_b64(encoded, f"key {key_id!r}")
        primary = primary_id if primary_id is not None else next(iter(parsed))
        if primary not in parsed:
            raise KeyRingError(f"primary key {primary!r} is not among the listed keys")
        if fingerprint_key is not None:
            return cls(parsed, primary, _require_b64(fingerprint_key, "fingerprint key"))
        hkdf = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=FINGERPRINT_INFO)
        return cls(parsed, primary, hkdf.derive(parsed[primary]))

    @classmethod
    def load_or_create_file(cls, path: Path) -> tuple[KeyRing, bool]:
        """Read the local key file, creating it with a fresh key on first use; (ring, created).

        Created exclusively with mode 0600 in a 0700 directory. An existing file that group or
        others may access is refused rather than trusted.
        """
        if not path.parent.exists():
            path.parent.mkdir(mode=KEY_DIR_MODE, parents=True)
        try:
            # O_EXCL: two processes starting at once must not each write their own key. The
            # loser may read the file before the winner has written it and fail; a retry works.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
        except FileExistsError:
            return cls._read_followed(path), False
        key_id = f"local-{datetime.now(UTC):%Y%m%d}"
        content = {
            "version": KEY_FILE_VERSION,
            "primary": key_id,
            "keys": {key_id: _b64encode(generate_key())},
            # Random rather than derived, so fingerprints survive a later key rotation.
            "fingerprint_key": _b64encode(secrets.token_bytes(KEY_BYTES)),
        }
        try:
            os.write(fd, json.dumps(content).encode())
            os.fsync(fd)
        except BaseException:
            # A half-written file would be refused forever; nothing is encrypted with it yet.
            path.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)
        return cls._read_followed(path), True

    @classmethod
    def _read_followed(cls, path: Path) -> KeyRing:
        ring = cls._read_file(path)
        ring._source, ring._stamp = path, _stamp(path)
        return ring

    @classmethod
    def _read_file(cls, path: Path) -> KeyRing:
        return cls._from_file_data(_read_key_file(path), path)

    @classmethod
    def _from_file_data(cls, data: dict[str, object], path: Path) -> KeyRing:
        primary, stored, fp_key = data.get("primary"), data.get("keys"), data.get("fingerprint_key")
        if not (isinstance(primary, str) and isinstance(stored, dict) and isinstance(fp_key, str)):
            raise KeyRingError(f"key file {path} lacks 'primary', 'keys' or 'fingerprint_key'")
        keys = {k: _require_b64(v, f"key file {path}: key {k!r}") for k, v in stored.items()}
        return cls(keys, primary, _require_b64(fp_key, f"key file {path}: fingerprint key"))

    def _follow_file(self) -> bool:
        """Re-read the local key file if it changed since it was read; True if keys changed.

        A file that cannot be read, or whose fingerprint key differs, is not taken: the ring
        keeps working with what it has (and says so once per change), because every refresh
        failing over an editing mistake is worse than writing with the previous primary.
        """
        if self._source is None:
            return False
        try:
            stamp = _stamp(self._source)
        except OSError:
            return False
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            fresh = KeyRing._read_file(self._source)
            if not hmac.compare_digest(fresh._fingerprint_key, self._fingerprint_key):
                raise KeyRingError("its fingerprint key changed")
        except KeyRingError as exc:
            log.event(logger, "keys.file_not_reloaded", logging.WARNING, reason=exc.message)
            return False
        self._keys, self._primary_id, self._aead = fresh._keys, fresh._primary_id, fresh._aead
        log.event(logger, "keys.file_reloaded", primary=self._primary_id, keys=len(self._keys))
        return True

    @property
    def primary_id(self) -> str:
        """Id of the key new ciphertexts are written with."""
        return self._primary_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of every key that can decrypt, in ring order."""
        return tuple(self._keys)

    def with_new_primary(self, key_id: str, key: bytes) -> KeyRing:
        """A ring that writes with ``key`` and still reads every older key.

        The fingerprint key is kept, so fingerprints stay comparable across the rotation.
        """
        existing = self._keys.get(key_id)
        if existing is not None and not hmac.compare_digest(existing, key):
            raise KeyRingError(f"key id {key_id!r} is already used for a different key")
        return KeyRing({**self._keys, key_id: key}, key_id, self._fingerprint_key)

    def with_primary(self, key_id: str) -> KeyRing:
        """The same keys, writing with ``key_id`` (which must already be in the ring)."""
        if key_id not in self._keys:
            raise KeyRingError(f"key {key_id!r} is not in the key ring {self.key_ids!r}")
        return KeyRing(self._keys, key_id, self._fingerprint_key)

    def encrypt(self, plaintext: str, *, account_id: int, field: TokenField) -> str:
        """Encrypt a token for one account's field with the primary key."""
        return self.seal(plaintext, context=token_context(account_id, field))

    def decrypt(self, text: str, *, account_id: int, field: TokenField) -> str:
        """Decrypt a stored token; raise ``DecryptFailed`` with a ``reason`` if it is unusable."""
        where = f"{field.value} of account {account_id}"
        return self.open(text, context=token_context(account_id, field), where=where)

    def seal(self, plaintext: str, *, context: str) -> str:
        """Encrypt any secret with the primary key, bound to ``context`` (e.g. ``webhook/7``).

        The context is the associated data: a ciphertext copied to another row or column does
        not decrypt there.
        """
        if plaintext.startswith(ENCRYPTED_MARK):
            why = f"refusing to encrypt {context}: it is already ENC:"
            raise CryptoError(why, code="already_encrypted")
        self._follow_file()  # a rotated key file changes the primary without a restart
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = self._aead[self._primary_id].encrypt(nonce, plaintext.encode(), _aad(context))
        return f"{PREFIX}{self._primary_id}:{_b64encode(nonce + sealed)}"

    def open(self, text: str, *, context: str, where: str | None = None) -> str:
        """Decrypt what :meth:`seal` made for ``context``; ``DecryptFailed`` with a ``reason``.

        ``where`` names the secret in error messages (default: the context).
        """
        where = where or context
        if not text.startswith(PREFIX):
            # An ENC: of another version is ours but unreadable, not a plaintext token.
            bad = text.startswith(ENCRYPTED_MARK)
            reason = DecryptReason.MALFORMED if bad else DecryptReason.NOT_ENCRYPTED
            raise _failed(reason, where, f"not an {PREFIX} ciphertext")
        key_id, sep, payload = text[len(PREFIX) :].partition(":")
        if not sep or not _KEY_ID.fullmatch(key_id):
            raise _failed(DecryptReason.MALFORMED, where, "no valid key id")
        where = f"{where} (key {key_id!r})"
        blob = _b64decode(payload)
        if blob is None or len(blob) < NONCE_BYTES + TAG_BYTES:
            raise _failed(DecryptReason.MALFORMED, where, "payload is not nonce+ciphertext+tag")
        aead = self._aead.get(key_id)
        if aead is None and self._follow_file():
            aead = self._aead.get(key_id)  # written by a process that saw a newer key file
        if aead is None:
            raise _failed(DecryptReason.UNKNOWN_KEY, where, f"key not in ring {self.key_ids!r}")
        nonce, sealed = blob[:NONCE_BYTES], blob[NONCE_BYTES:]
        try:
            plaintext = aead.decrypt(nonce, sealed, _aad(context)).decode()
        except (InvalidTag, UnicodeDecodeError) as exc:
            why = "authentication failed (wrong key, tampered, or from another account or field)"
            raise _failed(DecryptReason.AUTHENTICATION_FAILED, where, why) from exc
        if plaintext.startswith(ENCRYPTED_MARK):
            # Refused here so an ENC: value can never reach eBay as a token (a real system of this
            # kind decrypted a doubly encrypted token once and sent the inner ciphertext).
            inner = self.key_id_of(plaintext)
            why = f"encrypted twice: it decrypts to a ciphertext (inner key {inner!r})"
            raise _failed(DecryptReason.DOUBLY_ENCRYPTED, where, why)
        return plaintext

    def key_id_of(self, text: str) -> str | None:
        """The key id named by an ``ENC:v1:`` ciphertext, or None if ``text`` is not one."""
        if not text.startswith(PREFIX):
            return None
        key_id, sep, _ = text[len(PREFIX) :].partition(":")
        return key_id if sep and _KEY_ID.fullmatch(key_id) else None

    def fingerprint(self, secret: str) -> str:
        """A short keyed hash of ``secret``: equal secrets compare equal, nothing is revealed."""
        # hmac.digest, OpenSSL's one-shot HMAC: every refresh fingerprints its refresh token, the
        # credentials and the new token (see docs/decisions.md, "OpenSSL one-shot HMAC for
        # fingerprints").
        digest = hmac.digest(self._fingerprint_key, secret.encode("utf-8"), "sha256")
        return digest.hex()[:FINGERPRINT_HEX_CHARS]

    def derive_secret(self, purpose: str) -> bytes:
        """A 32-byte secret for ``purpose`` (e.g. signing session cookies), stable for this ring.

        Derived from the fingerprint key, which survives key rotation, so sessions and signed
        states stay valid across a rotation.
        """
        return HKDF(
            algorithm=hashes.SHA256(),
            length=KEY_BYTES,
            salt=None,
            info=b"ebay-connector derived v1 " + purpose.encode(),
        ).derive(self._fingerprint_key)


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _read_key_file(path: Path) -> dict[str, object]:
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise KeyRingError(f"key file {path} has mode {mode:04o}; group/others must have none")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeyRingError(f"key file {path} cannot be read as JSON") from exc
    if not isinstance(data, dict) or data.get("version") != KEY_FILE_VERSION:
        raise KeyRingError(f"key file {path} is not a version {KEY_FILE_VERSION} key file")
    return data


def _edit_key_file(path: Path, edit: Callable[[dict[str, object]], None]) -> KeyRing:
    """Apply ``edit`` to the local key file and replace it atomically (mode 0600); the new ring.

    The result is validated as a ring before it replaces the file, so a bad edit leaves the
    old file in place. Readers see the old file or the new one, never half of either.
    """
    data = _read_key_file(path)
    edit(data)
    ring = KeyRing._from_file_data(data, path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    try:
        os.write(fd, json.dumps(data).encode())
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    os.replace(tmp, path)
    return ring


def add_file_key(path: Path, key_id: str | None = None) -> str:
    """Add a fresh key to the local key file as its primary; its id (default ``local-<date>[-n]``).

    The older keys stay, so everything sealed with them still decrypts.
    """

    def edit(data: dict[str, object]) -> None:
        keys = data.get("keys")
        if not isinstance(keys, dict):
            raise KeyRingError(f"key file {path} lacks 'keys'")
        nonlocal key_id
        if key_id is None:
            base = f"local-{datetime.now(UTC):%Y%m%d}"
            key_id = base
            n = 1
            while key_id in keys:
                n += 1
                key_id = f"{base}-{n}"
        elif key_id in keys:
            raise KeyRingError(f"key id {key_id!r} is already in the key file")
        keys[key_id] = _b64encode(generate_key())
        data["primary"] = key_id

    _edit_key_file(path, edit)
    assert key_id is not None
    return key_id


def promote_file_key(path: Path, key_id: str) -> None:
    """Make a key already in the local key file its primary."""

    def edit(data: dict[str, object]) -> None:
        keys = data.get("keys")
        if not isinstance(keys, dict) or key_id not in keys:
            raise KeyRingError(f"key {key_id!r} is not in the key file {path}")
        data["primary"] = key_id

    _edit_key_file(path, edit)


def remove_file_key(path: Path, key_id: str) -> None:
    """Remove a non-primary key from the local key file (check first that nothing uses it)."""

    def edit(data: dict[str, object]) -> None:
        keys = data.get("keys")
        if not isinstance(keys, dict) or key_id not in keys:
            raise KeyRingError(f"key {key_id!r} is not in the key file {path}")
        if data.get("primary") == key_id:
            raise KeyRingError(f"key {key_id!r} is the primary; rotate to another key first")
        del keys[key_id]

    _edit_key_file(path, edit)


def _failed(reason: DecryptReason, where: str, why: str) -> DecryptFailed:
    return DecryptFailed(f"cannot decrypt {where}: {why}", reason=reason)


def _require_b64(text: object, what: str) -> bytes:
    decoded = _b64decode(text) if isinstance(text, str) else None
    if decoded is None:
        raise KeyRingError(f"{what} is not valid base64url")
    return decoded


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes | None:
    """Strict base64url (padding optional); None if ``text`` is not that."""
    stripped = text.strip().rstrip("=")
    # urlsafe_b64decode silently drops foreign characters; check the alphabet first.
    if not stripped or not _B64URL.fullmatch(stripped) or len(stripped) % 4 == 1:
        return None
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError):
        return None

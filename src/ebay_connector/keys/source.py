"""Where the key ring comes from: ``EBAY_CONNECTOR_TOKEN_KEYS``, or the embedded default's file.

Outside the emulator the ring must be given explicitly; the generated local key file is only for
the embedded default (one machine, the demo).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ebay_connector.errors import ConfigError, KeyRingError
from ebay_connector.keys.crypto import KeyRing
from ebay_connector.settings import EbayEnvironment, Settings


@dataclass(frozen=True)
class KeySource:
    ring: KeyRing
    description: str  # where the ring came from, for the start-up line
    created: bool


def load_keyring(settings: Settings) -> KeySource:
    """The key ring from the environment, or the embedded default's local key file."""
    if settings.token_keys is not None:
        try:
            ring = KeyRing.from_spec(
                settings.token_keys.get_secret_value(),
                settings.token_primary_key_id,
                settings.fingerprint_key.get_secret_value() if settings.fingerprint_key else None,
            )
        except KeyRingError as exc:
            raise ConfigError(f"{_key_setting(exc.message)}: {exc.message}") from exc
        return KeySource(ring, "EBAY_CONNECTOR_TOKEN_KEYS", created=False)
    if settings.ebay_environment is not EbayEnvironment.EMULATOR:
        raise ConfigError(
            "EBAY_CONNECTOR_TOKEN_KEYS: required outside the emulator; "
            "the generated local key file is only for the embedded default"
        )
    path = Path(settings.key_file)
    try:
        ring, created = KeyRing.load_or_create_file(path)
    except KeyRingError as exc:
        raise ConfigError(f"EBAY_CONNECTOR_KEY_FILE: {exc.message}") from exc
    except OSError as exc:
        raise ConfigError(
            f"EBAY_CONNECTOR_KEY_FILE: cannot use {path}: {exc.strerror or exc}"
        ) from exc
    return KeySource(ring, str(path.resolve()), created=created)


def ring_setting(settings: Settings) -> str:
    """The setting an operator fixes when the key ring is wrong."""
    return "EBAY_CONNECTOR_TOKEN_KEYS" if settings.token_keys else "EBAY_CONNECTOR_KEY_FILE"


def _key_setting(message: str) -> str:
    """Which key setting a key-ring error is about (the message never holds key material)."""
    if "fingerprint" in message:
        return "EBAY_CONNECTOR_FINGERPRINT_KEY"
    if "primary" in message:
        return "EBAY_CONNECTOR_TOKEN_PRIMARY_KEY_ID"
    return "EBAY_CONNECTOR_TOKEN_KEYS"

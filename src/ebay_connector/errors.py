"""The one exception tree of ebay-connector.

Every error carries a stable, machine-readable ``code``; the CLI prints ``code: message`` and
exits 2 (usage/configuration) or 1 (a failed outcome), the web layer maps codes to HTTP statuses
in one place. Messages never contain a secret: pass masked values only.

    ConnectorError                      code
    ├── ConfigError                     config_invalid
    ├── KeyRingError                    keyring_invalid
    ├── CryptoError
    │   └── DecryptFailed               decrypt_failed
    ├── InvalidStoredToken              invalid_stored_token
    ├── NotFound
    │   └── AccountNotFound             account_not_found
    ├── StoreError                      store_error          (wraps sqlalchemy.exc at the database)
    │   ├── StoreUnavailable            store_unavailable
    │   └── SchemaMissing               schema_missing
    ├── NeedsReconnect                  needs_reconnect      (on-demand refused; carries reason)
    ├── RefreshFailed                   code = the failed outcome (e.g. transient)
    ├── ConnectFailed                   code = the failed outcome of a code exchange / getUser
    ├── AccessError
    │   ├── Unauthorized                unauthorized         (no or bad credentials)
    │   ├── Forbidden                   forbidden / csrf_failed
    │   └── InvalidState                invalid_state        (OAuth state forged, replayed, expired)
    └── UsageError                      usage_error
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Root of every error raised by ebay-connector."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class ConfigError(ConnectorError):
    """A setting is missing or malformed; the message names the setting."""

    code = "config_invalid"


class KeyRingError(ConnectorError):
    """The token key ring cannot be loaded or is not usable."""

    code = "keyring_invalid"


class CryptoError(ConnectorError):
    """Encryption-layer failure."""

    code = "crypto_error"


class DecryptFailed(CryptoError):
    """A ciphertext does not decrypt: wrong key, tampered, another row's, or doubly encrypted."""

    code = "decrypt_failed"


class InvalidStoredToken(ConnectorError):
    """A decrypted token is empty or does not look like an eBay token; never sent to eBay."""

    code = "invalid_stored_token"


class NotFound(ConnectorError):
    code = "not_found"


class AccountNotFound(NotFound):
    code = "account_not_found"


class StoreError(ConnectorError):
    """The database refused or failed a statement."""

    code = "store_error"


class StoreUnavailable(StoreError):
    """The database cannot be reached."""

    code = "store_unavailable"


class SchemaMissing(StoreError):
    """The database has no (or an older) schema: ``ebay-connector db upgrade`` was not run."""

    code = "schema_missing"


class NeedsReconnect(ConnectorError):
    """The account cannot be refreshed until the seller connects it again."""

    code = "needs_reconnect"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class RefreshFailed(ConnectorError):
    """An on-demand token request could not be served; ``code`` is the outcome's code."""


class UsageError(ConnectorError):
    code = "usage_error"


class ConnectFailed(ConnectorError):
    """Connecting an account (code exchange or getUser) failed; ``code`` is the outcome."""


class AccessError(ConnectorError):
    code = "access_denied"


class Unauthorized(AccessError):
    code = "unauthorized"


class Forbidden(AccessError):
    code = "forbidden"


class InvalidState(AccessError):
    code = "invalid_state"


# -- application token and account deletions --


class AppTokenUnavailable(ConnectorError):
    """eBay did not grant an application (client-credentials) token just now."""

    code = "app_token_unavailable"


class NotificationRejected(ConnectorError):
    """An eBay notification whose X-EBAY-SIGNATURE is missing, malformed or does not verify."""

    code = "signature_invalid"


class NotificationInvalid(ConnectorError):
    """A correctly signed notification whose payload is not one we can act on."""

    code = "invalid_notification"


class PublicKeyUnavailable(ConnectorError):
    """eBay's notification public key could not be fetched just now (eBay should retry)."""

    code = "public_key_unavailable"


class DeletionNotConfigured(ConnectorError):
    """Account-deletion notifications need EBAY_CONNECTOR_DELETION_VERIFICATION_TOKEN."""

    code = "deletion_not_configured"

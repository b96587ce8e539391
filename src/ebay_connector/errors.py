"""The one exception tree of ebay-connector.

Every error carries a stable, machine-readable ``code``; the CLI prints ``code: message`` and
exits 2 (usage/configuration) or 1 (a failed outcome), the web layer maps codes to HTTP statuses
in one place (``web/api/errors.py``). Messages never contain a secret: pass masked values only.

    ConnectorError                      code
    ├── ConfigError                     config_invalid
    ├── KeyRingError                    keyring_invalid
    ├── CryptoError                     crypto_error / already_encrypted (refused to encrypt)
    │   └── DecryptFailed               decrypt_failed       (carries reason: DecryptReason)
    ├── InvalidStoredToken              invalid_stored_token
    ├── NotFound                        not_found
    │   ├── AccountNotFound             account_not_found
    │   ├── WebhookNotFound             webhook_not_found
    │   └── ExchangeNotFound            exchange_not_found
    ├── StoreError                      store_error          (wraps sqlalchemy.exc at the database)
    │   ├── StoreUnavailable            store_unavailable
    │   └── SchemaMissing               schema_missing
    ├── NeedsReconnect                  needs_reconnect      (on-demand refused; carries reason)
    ├── RefreshFailed                   refresh_failed       (raised with the failed outcome's code)
    │   └── QuotaExhausted              quota_exhausted      (24 h limit used up; retry_after)
    ├── ConnectFailed                   connect_failed       (raised with the failed outcome's code,
    │   │                                                     get_user_failed or consent_failed)
    │   └── WrongEbayUser               wrong_ebay_user      (a reconnect consented as another user)
    ├── AccessError                     access_denied
    │   ├── Unauthorized                unauthorized         (no or bad credentials)
    │   ├── Forbidden                   forbidden / csrf_failed
    │   ├── InvalidState                invalid_state        (OAuth state forged, replayed, expired)
    │   ├── TooManyAttempts             too_many_attempts    (sign-in throttled; retry_after)
    │   └── RateLimited                 rate_limited         (manual refreshes; retry_after)
    ├── UsageError                      usage_error
    │   ├── InvalidLabel                invalid_label        (an account label to rename to)
    │   ├── MemberChangeRefused         member_change_refused (a role change or removal that
    │   │                                                     would lock out; core.roles)
    │   ├── InvalidWebhookUrl           invalid_webhook_url
    │   │   └── DestinationRefused      destination_refused  (an address webhooks may not reach)
    │   ├── ReturnUrlNotAllowed         return_url_not_allowed
    │   ├── EndUserMismatch             end_user_mismatch    (a reconnect for another end user)
    │   ├── InvalidProxyPath            invalid_proxy_path
    │   └── WebhookExists               webhook_exists       (the organization has that URL)
    ├── ProxyFailed                     ebay_unreachable / too_large (the eBay API proxy)
    ├── AppTokenUnavailable             app_token_unavailable
    ├── NotificationRejected            signature_invalid
    ├── NotificationInvalid             invalid_notification
    ├── PublicKeyUnavailable            public_key_unavailable
    └── DeletionNotConfigured           deletion_not_configured

Outside the tree, on purpose: ``db.login_throttle._Conflict`` (a lost compare-and-set, caught and
retried inside that module; it never leaves it).
"""

from __future__ import annotations

import enum
import math
from datetime import timedelta


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


class DecryptReason(enum.StrEnum):
    """Why a ciphertext does not decrypt (key rotation tells a wrong key from a damaged value)."""

    NOT_ENCRYPTED = "not_encrypted"
    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown_key"
    AUTHENTICATION_FAILED = "authentication_failed"
    DOUBLY_ENCRYPTED = "doubly_encrypted"


class DecryptFailed(CryptoError):
    """A ciphertext does not decrypt: wrong key, tampered, another row's, or doubly encrypted."""

    code = "decrypt_failed"

    def __init__(self, message: str, *, reason: DecryptReason) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidStoredToken(ConnectorError):
    """A decrypted token is empty or does not look like an eBay token; never sent to eBay."""

    code = "invalid_stored_token"


class NotFound(ConnectorError):
    code = "not_found"


class AccountNotFound(NotFound):
    code = "account_not_found"


class WebhookNotFound(NotFound):
    code = "webhook_not_found"


class ExchangeNotFound(NotFound):
    code = "exchange_not_found"


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

    code = "refresh_failed"

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code)


class QuotaExhausted(RefreshFailed):
    """eBay's daily refresh limit is used up for the rolling 24 h window: no call was made."""

    code = "quota_exhausted"

    def __init__(self, message: str, *, retry_after: timedelta) -> None:
        super().__init__(message, code=self.code)
        self.retry_after = retry_after

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.retry_after.total_seconds()))


class ConnectFailed(ConnectorError):
    """Connecting an account (code exchange or getUser) failed; ``code`` is the outcome."""

    code = "connect_failed"

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message, code=code)


class WrongEbayUser(ConnectFailed):
    """A reconnect where the seller consented as another eBay user than the account's own:
    nothing was stored and the grant just made was revoked. ``signed_in`` names who consented
    (an eBay username is not a secret), so a person can be told what to do instead."""

    code = "wrong_ebay_user"

    def __init__(self, message: str, *, signed_in: str) -> None:
        super().__init__(message, code=self.code)
        self.signed_in = signed_in


class UsageError(ConnectorError):
    code = "usage_error"


class InvalidLabel(UsageError):
    """A label an account cannot be renamed to: empty, too long, or with control characters."""

    code = "invalid_label"


class MemberChangeRefused(UsageError):
    """A role change or removal refused: oneself, the last admin, or the operator role."""

    code = "member_change_refused"


class InvalidWebhookUrl(UsageError):
    code = "invalid_webhook_url"


class ReturnUrlNotAllowed(UsageError):
    """A connect session's return URL is not on the organization's allow-list."""

    code = "return_url_not_allowed"


class EndUserMismatch(UsageError):
    """A reconnect session names an account that belongs to another end user."""

    code = "end_user_mismatch"


class InvalidProxyPath(UsageError):
    """A proxied path that could leave the eBay API host or is not a plain path."""

    code = "invalid_proxy_path"


class WebhookExists(UsageError):
    """The organization already has an endpoint at that URL: a second would get every event
    twice."""

    code = "webhook_exists"


class ProxyFailed(ConnectorError):
    """The proxy could not get eBay's answer (unreachable, timed out) or a body was too large."""

    code = "ebay_unreachable"


class DestinationRefused(InvalidWebhookUrl):
    """The URL's host is (or resolves to) an address of the server's own networks."""

    code = "destination_refused"


class AccessError(ConnectorError):
    code = "access_denied"


class Unauthorized(AccessError):
    code = "unauthorized"


class Forbidden(AccessError):
    code = "forbidden"


class InvalidState(AccessError):
    code = "invalid_state"


class TooManyAttempts(AccessError):
    """Sign-in refused without checking the password: too many attempts for this e-mail/client."""

    code = "too_many_attempts"

    def __init__(self, message: str, *, retry_after: timedelta) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.retry_after.total_seconds()))


class RateLimited(AccessError):
    """Refused before any eBay call: this organization or account used its allowance."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: timedelta) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.retry_after.total_seconds()))


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

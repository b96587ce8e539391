"""Settings: read once from the environment (and an optional ``.env``) into one typed object.

Every setting is ``EBAY_CONNECTOR_<NAME>``. Nothing here is read at import time; the CLI and the
server call :func:`load` once and pass the result down.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from ebay_connector.core import destination
from ebay_connector.core.policy import PolicyConfig, RefreshPolicy
from ebay_connector.core.quota import QuotaConfig
from ebay_connector.errors import ConfigError

ENV_PREFIX = "EBAY_CONNECTOR_"

DEFAULT_DATABASE_URL = "sqlite:///var/ebay-connector.db"
DEFAULT_KEY_FILE = Path("var/keyring.json")
DEFAULT_SCOPES = " ".join(
    [
        "https://api.ebay.com/oauth/api_scope",
        "https://api.ebay.com/oauth/api_scope/sell.inventory",
        "https://api.ebay.com/oauth/api_scope/sell.account",
        "https://api.ebay.com/oauth/api_scope/sell.fulfillment",
        "https://api.ebay.com/oauth/api_scope/commerce.identity.readonly",
    ]
)

# The application the built-in emulator registers for itself in `emulator` mode. These are not
# secrets: they only ever authenticate against the local emulator.
EMULATOR_CLIENT_ID = "EbayConn-Demo-EMU-0000000000-00000000"
EMULATOR_CLIENT_SECRET = "EMU-demo-client-secret-not-a-real-one"
EMULATOR_RU_NAME = "ebay_connector-EbayConn-Demo-EMU-local"


class EbayEnvironment(enum.StrEnum):
    EMULATOR = "emulator"
    SANDBOX = "sandbox"
    PRODUCTION = "production"


@dataclass(frozen=True)
class Endpoints:
    """Where eBay's identity service and REST APIs live for one environment."""

    token_url: str
    authorize_url: str
    identity_url: str
    revoke_url: str
    # The REST APIs' host (the proxy's upstream); the identity API has a host of its own, as
    # eBay has it (``identity_url``'s).
    api_url: str


EBAY_ENDPOINTS = {
    EbayEnvironment.PRODUCTION: Endpoints(
        token_url="https://api.ebay.com/identity/v1/oauth2/token",
        authorize_url="https://auth.ebay.com/oauth2/authorize",
        identity_url="https://apiz.ebay.com/commerce/identity/v1/user/",
        revoke_url="https://api.ebay.com/identity/v1/oauth2/token/revoke",
        api_url="https://api.ebay.com",
    ),
    EbayEnvironment.SANDBOX: Endpoints(
        token_url="https://api.sandbox.ebay.com/identity/v1/oauth2/token",
        authorize_url="https://auth.sandbox.ebay.com/oauth2/authorize",
        identity_url="https://apiz.sandbox.ebay.com/commerce/identity/v1/user/",
        revoke_url="https://api.sandbox.ebay.com/identity/v1/oauth2/token/revoke",
        api_url="https://api.sandbox.ebay.com",
    ),
}


def emulator_endpoints(base_url: str) -> Endpoints:
    base = base_url.rstrip("/")
    return Endpoints(
        token_url=f"{base}/identity/v1/oauth2/token",
        authorize_url=f"{base}/oauth2/authorize",
        identity_url=f"{base}/commerce/identity/v1/user/",
        revoke_url=f"{base}/identity/v1/oauth2/token/revoke",
        api_url=base,
    )


# Query options of the database URL that the async drivers understand.
_DATABASE_QUERY_OPTIONS = frozenset({"ssl", "prepared_statement_cache_size", "timeout"})


class Settings(BaseSettings):
    """Every knob of the product, with its default."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    database_url: str = DEFAULT_DATABASE_URL
    ebay_environment: EbayEnvironment = EbayEnvironment.EMULATOR
    client_id: str | None = None
    client_secret: SecretStr | None = None
    ru_name: str | None = None
    scopes: str = DEFAULT_SCOPES

    token_keys: SecretStr | None = None
    token_primary_key_id: str | None = None
    fingerprint_key: SecretStr | None = None
    key_file: Path = DEFAULT_KEY_FILE

    refresh_ahead_seconds: int = Field(default=15 * 60, ge=60, le=24 * 3600)
    access_token_margin_seconds: int = Field(default=5 * 60, ge=0, le=3600)
    on_demand_cooldown_seconds: int = Field(default=30, ge=0, le=3600)
    # Accounts whose last served access token this process keeps in memory, to serve through a
    # database outage (0: none; docs/security.md, "Held in memory").
    outage_token_memory: int = Field(default=10_000, ge=0, le=1_000_000)
    lease_seconds: int = Field(default=120, ge=5, le=3600)
    http_timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    worker_interval_seconds: int = Field(default=60, ge=1, le=3600)
    worker_concurrency: int = Field(default=32, ge=1, le=1024)
    worker_drain_seconds: int = Field(default=30, ge=0, le=3600)
    max_calls_per_second: float = Field(default=100.0, ge=0, le=100_000)

    refresh_policy: RefreshPolicy = RefreshPolicy.AUTO
    recent_use_seconds: int = Field(default=6 * 3600, ge=60, le=30 * 86400)
    probe_interval_seconds: int = Field(default=3 * 86400, ge=600, le=30 * 86400)
    spare_quota_share: float = Field(default=0.1, ge=0, le=1)
    daily_refresh_limit: int = Field(default=50_000, ge=1)
    daily_code_limit: int = Field(default=10_000, ge=1)
    daily_client_credentials_limit: int = Field(default=1_000, ge=1)
    quota_reserve_share: float = Field(default=0.2, ge=0, le=1)

    # Manual refreshes (admin and debug) per window, per organization and per account: each is
    # an eBay call from the application's shared daily quota. 0: no limit.
    manual_refresh_window_seconds: int = Field(default=60, ge=1, le=86400)
    manual_refreshes_per_organization: int = Field(default=30, ge=0, le=100_000)
    manual_refreshes_per_account: int = Field(default=4, ge=0, le=10_000)

    database_pool_size: int = Field(default=20, ge=1, le=500)

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    public_url: str = "http://127.0.0.1:8000"
    emulator_url: str = "http://127.0.0.1:8000/emulator"

    # -- webhooks and notices --
    refresh_failing_after_seconds: int = Field(default=3600, ge=60, le=30 * 86400)
    quota_low_share: float = Field(default=0.25, ge=0, le=1)  # remaining share that is "low"
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    webhook_max_attempts: int = Field(default=8, ge=1, le=50)
    webhook_concurrency: int = Field(default=8, ge=1, le=128)
    # Networks webhooks may reach although they are loopback, private or link-local (CIDRs,
    # comma-separated), e.g. 127.0.0.0/8 for a receiver on this host. Empty: public only.
    webhook_allowed_networks: str = ""

    # -- application token and account deletions --
    # eBay Marketplace Account Deletion: the verification token and the exact endpoint URL
    # registered in eBay's developer portal (both go into the challenge response).
    deletion_verification_token: SecretStr | None = None
    deletion_endpoint_url: str | None = None
    # eBay exempted this application from the notifications (developer portal): no endpoint.
    deletion_exempt: bool = False

    @field_validator("deletion_verification_token")
    @classmethod
    def _deletion_token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        # eBay's rule for verification tokens: 32-80 characters of [A-Za-z0-9_-].
        token = None if value is None else value.get_secret_value()
        if token is not None and not re.fullmatch(r"[A-Za-z0-9_-]{32,80}", token):
            raise ValueError("must be 32 to 80 characters of letters, digits, '_' and '-'")
        return value

    @field_validator("deletion_endpoint_url")
    @classmethod
    def _deletion_endpoint_shape(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be the endpoint's full public URL (https://...)")
        return value

    # -- programs: connect sessions and the eBay API proxy --
    connect_session_ttl_seconds: int = Field(default=30 * 60, ge=60, le=7 * 86400)
    proxy_max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024)

    # -- metrics and logs --
    # `text` (readable) or `json` (one object per line); `--log-format` overrides it.
    log_format: str = "text"
    # When set, GET /metrics needs `Authorization: Bearer <token>`; unset, it is open (the
    # server binds to loopback by default; set it before exposing the port).
    metrics_token: SecretStr | None = None

    @field_validator("log_format")
    @classmethod
    def _known_log_format(cls, value: str) -> str:
        if value not in ("text", "json"):
            raise ValueError("must be text (readable) or json (one object per line)")
        return value

    # -- retention --
    retention_days: int = Field(default=30, ge=1, le=3650)
    retention_per_account: int = Field(default=1000, ge=10, le=10_000_000)

    # -- security: keys, login throttling --
    # Sign-in attempts per e-mail / per client address per window, then a doubling lockout.
    login_max_failures: int = Field(default=5, ge=1, le=1000)
    login_max_failures_per_client: int = Field(default=50, ge=0, le=1_000_000)  # 0: off
    login_failure_window_seconds: int = Field(default=15 * 60, ge=1, le=86400)
    login_lockout_seconds: int = Field(default=60, ge=1, le=86400)
    login_lockout_max_seconds: int = Field(default=3600, ge=1, le=7 * 86400)
    # Proxies (addresses or networks, comma-separated) whose X-Forwarded-For is believed.
    trusted_proxies: str = ""

    @field_validator("trusted_proxies", "webhook_allowed_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        destination.parse_networks(value)  # raises ValueError naming the bad part
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must be a sqlite:///path or postgresql://user@host:port/db URL")
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError("is not a valid database URL") from exc
        unknown = set(url.query) - _DATABASE_QUERY_OPTIONS
        if unknown:
            raise ValueError(
                f"unsupported URL option(s) {sorted(unknown)}; "
                f"supported: {sorted(_DATABASE_QUERY_OPTIONS)}"
            )
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes_are_uris(cls, value: str) -> str:
        scopes = value.split()
        if not scopes or any(not s.startswith("https://api.ebay.com/oauth/") for s in scopes):
            raise ValueError("must be space-separated https://api.ebay.com/oauth/... scope URIs")
        return " ".join(scopes)

    # Derived values -------------------------------------------------------------------------

    @property
    def refresh_ahead(self) -> timedelta:
        return timedelta(seconds=self.refresh_ahead_seconds)

    @property
    def access_token_margin(self) -> timedelta:
        return timedelta(seconds=self.access_token_margin_seconds)

    @property
    def on_demand_cooldown(self) -> timedelta:
        return timedelta(seconds=self.on_demand_cooldown_seconds)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.lease_seconds)

    @property
    def policy(self) -> PolicyConfig:
        return PolicyConfig(
            default=self.refresh_policy,
            refresh_ahead=self.refresh_ahead,
            recent_use=timedelta(seconds=self.recent_use_seconds),
            probe_interval=timedelta(seconds=self.probe_interval_seconds),
            spare_share=self.spare_quota_share,
            access_token_margin=timedelta(seconds=self.access_token_margin_seconds),
        )

    @property
    def quota(self) -> QuotaConfig:
        return QuotaConfig(
            limits={
                "refresh_token": self.daily_refresh_limit,
                "authorization_code": self.daily_code_limit,
                "client_credentials": self.daily_client_credentials_limit,
            },
            reserve_share=self.quota_reserve_share,
        )

    @property
    def scope_list(self) -> tuple[str, ...]:
        return tuple(self.scopes.split())

    @property
    def endpoints(self) -> Endpoints:
        if self.ebay_environment is EbayEnvironment.EMULATOR:
            return emulator_endpoints(self.emulator_url)
        return EBAY_ENDPOINTS[self.ebay_environment]

    @property
    def app_client_id(self) -> str:
        return self.client_id or EMULATOR_CLIENT_ID

    @property
    def app_client_secret(self) -> str:
        if self.client_secret is not None:
            return self.client_secret.get_secret_value()
        return EMULATOR_CLIENT_SECRET

    @property
    def app_ru_name(self) -> str:
        return self.ru_name or EMULATOR_RU_NAME

    @property
    def callback_url(self) -> str:
        return self.public_url.rstrip("/") + "/api/ebay/callback"


_REQUIRED_OUTSIDE_EMULATOR = ("client_id", "client_secret", "ru_name", "token_keys")
LEASE_MARGIN_SECONDS = 10


def _given(value: object) -> bool:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value is not None and str(value).strip() != ""


def load(**overrides: Any) -> Settings:
    """Read the settings once; any problem becomes one ``ConfigError`` line naming the setting."""
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ENV_PREFIX + str(first["loc"][0]).upper() if first["loc"] else ENV_PREFIX
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{name}: {message}") from exc
    if settings.lease_seconds < settings.http_timeout_seconds + LEASE_MARGIN_SECONDS:
        # A lease that can expire while its eBay call is still running lets a second worker
        # refresh the same account.
        raise ConfigError(
            f"{ENV_PREFIX}LEASE_SECONDS: must be at least {ENV_PREFIX}HTTP_TIMEOUT_SECONDS + "
            f"{LEASE_MARGIN_SECONDS} ({settings.http_timeout_seconds + LEASE_MARGIN_SECONDS:g})"
        )
    for name in ("token_primary_key_id", "fingerprint_key"):
        if getattr(settings, name) is not None and settings.token_keys is None:
            raise ConfigError(
                f"{ENV_PREFIX}{name.upper()}: only meaningful with {ENV_PREFIX}TOKEN_KEYS"
            )
    if settings.ebay_environment is not EbayEnvironment.EMULATOR:
        for name in _REQUIRED_OUTSIDE_EMULATOR:
            if not _given(getattr(settings, name)):
                raise ConfigError(
                    f"{ENV_PREFIX}{name.upper()}: required when "
                    f"{ENV_PREFIX}EBAY_ENVIRONMENT={settings.ebay_environment.value}"
                )
    return settings

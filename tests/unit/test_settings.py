"""Settings are read once; a bad one stops start-up with one line naming it."""

from __future__ import annotations

import pytest

from ebay_connector import settings
from ebay_connector.errors import ConfigError

pytestmark = pytest.mark.unit


def test_embedded_defaults() -> None:
    s = settings.load(_env_file=None)
    assert s.ebay_environment is settings.EbayEnvironment.EMULATOR
    assert s.database_url.startswith("sqlite:///var/")
    assert s.refresh_ahead.total_seconds() == 900
    assert s.endpoints.token_url == "http://127.0.0.1:8000/emulator/identity/v1/oauth2/token"


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EBAY_CONNECTOR_REFRESH_AHEAD_SECONDS", "600")
    monkeypatch.setenv("EBAY_CONNECTOR_EBAY_ENVIRONMENT", "emulator")
    assert settings.load(_env_file=None).refresh_ahead_seconds == 600


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EBAY_CONNECTOR_EBAY_ENVIRONMENT", "staging"),
        ("EBAY_CONNECTOR_REFRESH_AHEAD_SECONDS", "soon"),
        ("EBAY_CONNECTOR_DATABASE_URL", "mysql://x"),
        ("EBAY_CONNECTOR_DATABASE_URL", "postgresql://u@h/db?options=-csearch_path%3Dx"),
        ("EBAY_CONNECTOR_DATABASE_URL", "postgresql://u@h:notaport/db"),
        ("EBAY_CONNECTOR_SCOPES", "sell.inventory"),
        ("EBAY_CONNECTOR_PORT", "70000"),
    ],
)
def test_malformed_setting_names_itself_in_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        settings.load(_env_file=None)
    assert str(info.value).startswith(name + ":")
    assert "\n" not in str(info.value)


def test_production_requires_credentials_and_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EBAY_CONNECTOR_EBAY_ENVIRONMENT", "production")
    with pytest.raises(ConfigError, match="EBAY_CONNECTOR_CLIENT_ID"):
        settings.load(_env_file=None)
    monkeypatch.setenv("EBAY_CONNECTOR_CLIENT_ID", "App")
    monkeypatch.setenv("EBAY_CONNECTOR_CLIENT_SECRET", "secret")
    monkeypatch.setenv("EBAY_CONNECTOR_RU_NAME", "Ru")
    with pytest.raises(ConfigError, match="EBAY_CONNECTOR_TOKEN_KEYS"):
        settings.load(_env_file=None)


def test_production_endpoints_are_ebays(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "EBAY_ENVIRONMENT": "production",
        "CLIENT_ID": "App",
        "CLIENT_SECRET": "secret",
        "RU_NAME": "Ru",
        "TOKEN_KEYS": "k1:" + "A" * 43,
    }.items():
        monkeypatch.setenv("EBAY_CONNECTOR_" + name, value)
    s = settings.load(_env_file=None)
    assert s.endpoints.token_url == "https://api.ebay.com/identity/v1/oauth2/token"
    assert s.endpoints.identity_url == "https://apiz.ebay.com/commerce/identity/v1/user/"

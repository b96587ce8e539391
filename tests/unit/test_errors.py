"""The exception tree: one module, one documented tree, a stable code per leaf, and the HTTP
status each error answers with."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from datetime import timedelta

import pytest

import ebay_connector
from ebay_connector import errors
from ebay_connector.errors import ConnectorError, DecryptFailed, DecryptReason
from ebay_connector.web.api.errors import status_for

pytestmark = pytest.mark.unit

# Raised and caught inside one module, never seen outside it (documented in errors.py).
PRIVATE = {"ebay_connector.db.login_throttle._Conflict"}
# Alembic's scripts run under alembic only; __main__ runs the CLI when imported.
SKIPPED = ("ebay_connector.db.migrations", "ebay_connector.__main__")


def product_modules() -> list[str]:
    return [
        info.name
        for info in pkgutil.walk_packages(ebay_connector.__path__, "ebay_connector.")
        if not info.name.startswith(SKIPPED)
    ]


def tree_classes() -> list[type[ConnectorError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, ConnectorError) and cls.__module__ == errors.__name__
    ]


def test_every_exception_of_the_product_is_defined_in_errors() -> None:
    elsewhere = set()
    for name in product_modules():
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseException) and cls.__module__ == name != errors.__name__:
                elsewhere.add(f"{name}.{cls.__qualname__}")
    assert elsewhere == PRIVATE


def drawn_tree() -> dict[str, tuple[str | None, str]]:
    """The tree in errors.py's docstring: class name -> (the class it is drawn under, its line)."""
    tree: dict[str, tuple[str | None, str]] = {}
    path: list[tuple[int, str]] = []  # (column of the name, name) from the root down
    lines = (errors.__doc__ or "").splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["ConnectorError"])
    for line in lines[start:]:
        if not line.strip():
            break  # the end of the drawing
        words = line.replace("├──", " ").replace("└──", " ").replace("│", " ").split()
        if not words or not words[0].isidentifier() or not words[0][0].isupper():
            continue  # a continued comment
        name = words[0]
        column = line.index(name)
        while path and path[-1][0] >= column:
            path.pop()
        tree[name] = (path[-1][1] if path else None, line)
        path.append((column, name))
    return tree


def test_the_documented_tree_draws_every_class_under_its_parent_with_its_code() -> None:
    tree = drawn_tree()
    for cls in tree_classes():
        assert cls.__name__ in tree, f"{cls.__name__} is missing from the tree in errors.py"
        parent, line = tree[cls.__name__]
        if cls is ConnectorError:
            assert parent is None
            continue
        assert parent == cls.__mro__[1].__name__, f"{cls.__name__} is drawn under {parent}"
        assert cls.code in line, f"the tree does not give {cls.__name__}'s code {cls.code!r}"
    assert set(tree) - {c.__name__ for c in tree_classes()} == set(), "the tree names a ghost"


def test_every_class_has_its_own_stable_code() -> None:
    codes: dict[str, str] = {}
    for cls in tree_classes():
        assert "code" in vars(cls), f"{cls.__name__} declares no code of its own"
        assert cls.code not in codes, f"{cls.__name__} reuses {codes.get(cls.code)}'s code"
        codes[cls.code] = cls.__name__


def test_decrypt_failed_declares_its_reason() -> None:
    exc = DecryptFailed("cannot decrypt", reason=DecryptReason.UNKNOWN_KEY)
    assert (exc.code, exc.reason) == ("decrypt_failed", DecryptReason.UNKNOWN_KEY)


@pytest.mark.parametrize("cls", [errors.RefreshFailed, errors.ConnectFailed])
def test_outcome_errors_carry_the_code_they_are_given(cls: type[ConnectorError]) -> None:
    assert cls("eBay failed", code="transient").code == "transient"


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (errors.TooManyAttempts("slow down", retry_after=timedelta(seconds=1)), 429),
        (errors.Unauthorized("who?"), 401),
        (errors.Forbidden("no"), 403),
        (errors.Forbidden("no", code="csrf_failed"), 403),
        (errors.InvalidState("replayed"), 400),
        (errors.AccessError("no"), 403),
        (errors.NotFound("none"), 404),
        (errors.AccountNotFound("none"), 404),
        (errors.WebhookNotFound("none"), 404),
        (errors.ExchangeNotFound("none"), 404),
        (errors.WebhookExists("twice"), 409),
        (errors.NeedsReconnect("reconnect", reason="invalid_grant"), 409),
        (errors.RefreshFailed("later", code="transient"), 503),
        (errors.QuotaExhausted("limit", retry_after=timedelta(seconds=1)), 503),
        (errors.ConnectFailed("eBay said no", code="invalid_scope"), 502),
        (errors.ConnectFailed("code reused", code="invalid_grant"), 400),
        (errors.WrongEbayUser("another seller", signed_in="demo_outlet"), 409),
        (errors.StoreError("failed"), 503),
        (errors.StoreUnavailable("down"), 503),
        (errors.SchemaMissing("no schema"), 503),
        (errors.UsageError("wrong"), 400),
        (errors.InvalidWebhookUrl("not a URL"), 422),
        (errors.InvalidLabel("empty"), 422),
        (errors.MemberChangeRefused("the last admin"), 409),
        (DecryptFailed("cannot decrypt", reason=DecryptReason.MALFORMED), 409),
        (errors.InvalidStoredToken("empty"), 409),
        (errors.NotificationRejected("bad signature"), 412),
        (errors.NotificationInvalid("bad payload"), 400),
        (errors.PublicKeyUnavailable("later"), 503),
        (errors.AppTokenUnavailable("later"), 503),
        (errors.DeletionNotConfigured("no token"), 503),
        (errors.ConfigError("missing"), 500),
        (errors.KeyRingError("broken"), 500),
        (errors.CryptoError("refused", code="already_encrypted"), 500),
    ],
)
def test_http_status_of_each_error(exc: ConnectorError, status: int) -> None:
    assert status_for(exc) == status

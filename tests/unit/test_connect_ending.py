"""What a person is told when an admin's connect ends without an account."""

from __future__ import annotations

import pytest

from ebay_connector.core.connect_ending import Reconnecting, ending_of

pytestmark = pytest.mark.unit

MIGRATED = Reconnecting(7, "Migrated shop", "demo_undecryptable")


def test_the_wrong_seller_is_named_with_the_expected_one_and_the_next_step() -> None:
    ending = ending_of("wrong_ebay_user", signed_in="demo_outlet", target=MIGRATED)
    assert ending.title == "Signed in on eBay as another seller"
    assert "You signed in on eBay as demo_outlet" in ending.happened
    assert "Migrated shop is the eBay account demo_undecryptable" in ending.happened
    assert "Nothing was changed" in ending.happened
    assert ending.next_step == (
        "Sign out of eBay as demo_outlet, then press Reconnect again and sign in as "
        "demo_undecryptable."
    )
    assert ending.retry


@pytest.mark.parametrize(
    ("code", "title", "retry"),
    [
        ("consent_declined", "Access was declined on eBay", True),
        ("invalid_state", "This connect has expired", True),
        ("unauthorized", "Your session has ended", False),
        ("account_not_found", "The account to reconnect is gone", False),
        ("missing_code", "eBay did not complete the connect", True),
        ("invalid_grant", "eBay did not complete the connect", True),
        ("transient", "eBay did not complete the connect", True),
    ],
)
def test_every_other_ending_has_a_title_and_a_next_step(code: str, title: str, retry: bool) -> None:
    for target in (None, MIGRATED):
        ending = ending_of(code, signed_in=None, target=target)
        assert (ending.code, ending.title, ending.retry) == (code, title, retry)
        assert ending.next_step.endswith(".")
        if target is not None and code in {"consent_declined", "invalid_state", "transient"}:
            assert "Migrated shop is as it was" in ending.happened


def test_a_failed_exchange_names_eBays_code_and_a_used_code_says_why() -> None:
    assert (
        "(temporarily_unavailable)"
        in ending_of("temporarily_unavailable", signed_in=None, target=None).happened
    )
    assert (
        "expired (codes live 5 minutes)"
        in ending_of("invalid_grant", signed_in=None, target=None).happened
    )

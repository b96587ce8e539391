"""What a person is told when an admin's connect or reconnect ends without an account: in plain
words, what happened, that nothing changed, and the one thing to do next.

The callback only knows an error code and, for a reconnect, whose account it was; this decides
the words, so the API's JSON and the UI's page can never disagree about what happened.
"""

from __future__ import annotations

from dataclasses import dataclass

WRONG_USER = "wrong_ebay_user"
DECLINED = "consent_declined"
STATE = "invalid_state"
NO_CODE = "missing_code"
SIGNED_OUT = "unauthorized"
GONE = "account_not_found"
CODE_USED = "invalid_grant"


@dataclass(frozen=True)
class Ending:
    code: str
    title: str
    happened: str
    next_step: str
    retry: bool  # whether starting the same connect again is the next step


@dataclass(frozen=True)
class Reconnecting:
    """The account a reconnect was for, as the person knows it."""

    account_id: int
    label: str
    ebay_username: str


def ending_of(code: str, *, signed_in: str | None, target: Reconnecting | None) -> Ending:
    """The page for the callback's error ``code``; ``signed_in`` is the eBay user who consented
    (known for ``wrong_ebay_user``), ``target`` the account being reconnected, if any."""
    unchanged = (
        f"Nothing was changed: {target.label} is as it was." if target else "Nothing was stored."
    )
    if code == WRONG_USER and target is not None:
        who = signed_in or "another eBay user"
        return Ending(
            code,
            "Signed in on eBay as another seller",
            f"You signed in on eBay as {who}, but {target.label} is the eBay account "
            f"{target.ebay_username}. Nothing was changed: {target.label} was not reconnected, "
            f"no other account was touched, and the access {who} just granted was withdrawn "
            "at eBay.",
            f"Sign out of eBay as {who}, then press Reconnect again and sign in as "
            f"{target.ebay_username}.",
            retry=True,
        )
    if code == DECLINED:
        return Ending(
            code,
            "Access was declined on eBay",
            f"eBay says the seller did not agree to grant access. {unchanged}",
            "Try again and choose Agree on eBay's page, or go back to the accounts.",
            retry=True,
        )
    if code == STATE:
        return Ending(
            code,
            "This connect has expired",
            "The return from eBay does not match a connect started in this browser session: "
            "it is older than 10 minutes, was already used, or began in another session. "
            f"{unchanged}",
            "Start the connect again from the accounts page.",
            retry=True,
        )
    if code == SIGNED_OUT:
        return Ending(
            code,
            "Your session has ended",
            "A connect belongs to the session that started it, and you are signed out. "
            "Nothing was stored.",
            "Sign in, then start the connect again.",
            retry=False,
        )
    if code == GONE:
        return Ending(
            code,
            "The account to reconnect is gone",
            "It was disconnected while you were on eBay's page, so there is nothing to "
            "reconnect. Nothing was stored.",
            "Go back to the accounts and connect the seller as a new account.",
            retry=False,
        )
    if code == NO_CODE:
        what = "eBay sent the seller back without an authorization code."
    elif code == CODE_USED:
        what = (
            "eBay refused the authorization code: it expired (codes live 5 minutes) or was "
            "already used."
        )
    else:
        what = f"eBay did not complete the connect ({code})."
    return Ending(
        code,
        "eBay did not complete the connect",
        f"{what} {unchanged}",
        "Try again; if it keeps failing, the token refresh terminal shows eBay's answer.",
        retry=True,
    )

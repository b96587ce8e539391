"""The accounts list a person reads: which state each account is in, which ones come first, and
what a page of the list is (filter, search, sort, direction, page number).

Everything here is decided without the database: the SQL in ``db/account_list.py`` follows
:func:`status_of` and :class:`ListQuery`, and a test checks that both agree.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlencode

PAGE_SIZE = 50
MAX_QUERY_LENGTH = 100  # a search longer than any label or eBay username matches nothing
MAX_PAGE = 1_000_000


class Status(enum.StrEnum):
    """What a person must know of an account, worst first (the order of the default sort)."""

    NEEDS_RECONNECT = "needs_reconnect"
    FAILING = "failing"
    EXPIRING = "expiring"
    HEALTHY = "healthy"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    @property
    def badge(self) -> str:
        """The badge's words, the same as the terminal's and the API's ``display_state``."""
        return _BADGES[self]

    @property
    def kind(self) -> str:
        """The badge's colour: ``bad``, ``warn`` or ``ok``."""
        return _KINDS[self]

    @property
    def counted(self) -> str:
        """How the summary bar names a count of accounts in this state."""
        return _COUNTED[self]


_RANKS = {status: rank for rank, status in enumerate(Status)}
_BADGES = {
    Status.NEEDS_RECONNECT: "needs reconnect",
    Status.FAILING: "refresh failing",
    Status.EXPIRING: "expiring soon",
    Status.HEALTHY: "active",
}
_KINDS = {
    Status.NEEDS_RECONNECT: "bad",
    Status.FAILING: "bad",
    Status.EXPIRING: "warn",
    Status.HEALTHY: "ok",
}
_COUNTED = {
    Status.NEEDS_RECONNECT: "need reconnect",
    Status.FAILING: "failing",
    Status.EXPIRING: "expiring soon",
    Status.HEALTHY: "healthy",
}


def status_of(
    *,
    needs_reconnect: bool,
    failures_in_row: int,
    access_expires_at: datetime | None,
    now: datetime,
    refresh_ahead: timedelta,
) -> Status:
    """An expired access token of an idle account is healthy: its grant works and it is
    refreshed when a program asks for it."""
    if needs_reconnect:
        return Status.NEEDS_RECONNECT
    if failures_in_row > 0:
        return Status.FAILING
    if access_expires_at is not None and now < access_expires_at <= now + refresh_ahead:
        return Status.EXPIRING
    return Status.HEALTHY


class Action(enum.StrEnum):
    """The one thing a row offers first: a new consent for a broken grant (refreshing again
    would only count another failure), a refresh otherwise."""

    RECONNECT = "reconnect"
    REFRESH = "refresh"


def primary_action(status: Status) -> Action:
    return Action.RECONNECT if status is Status.NEEDS_RECONNECT else Action.REFRESH


class SortKey(enum.StrEnum):
    STATE = "state"
    LABEL = "label"
    EBAY_USERNAME = "ebay_username"
    ACCESS = "access"
    REFRESH = "refresh"
    FAILURES = "failures"
    LAST_ATTEMPT = "last_attempt"
    LAST_USED = "last_used"


COLUMNS: tuple[tuple[SortKey, str], ...] = (
    (SortKey.LABEL, "Label"),
    (SortKey.EBAY_USERNAME, "eBay username"),
    (SortKey.STATE, "State"),
    (SortKey.ACCESS, "Access token expires"),
    (SortKey.REFRESH, "Refresh token expires"),
    (SortKey.FAILURES, "Failures in a row"),
    (SortKey.LAST_ATTEMPT, "Last attempt"),
    (SortKey.LAST_USED, "Last used"),
)


@dataclass(frozen=True)
class ListQuery:
    """One view of the list, as its URL says it. Accounts without a value in the sorted column
    (never refreshed, never used) come last in both directions; ties go by id."""

    status: Status | None = None
    q: str = ""
    sort: SortKey = SortKey.STATE
    descending: bool = False
    page: int = 1

    def params(self) -> dict[str, str]:
        """The URL's parameters, defaults left out (the canonical form)."""
        out: dict[str, str] = {}
        if self.status is not None:
            out["state"] = self.status.value
        if self.q:
            out["q"] = self.q
        if self.sort is not SortKey.STATE:
            out["sort"] = self.sort.value
        if self.descending:
            out["dir"] = "desc"
        if self.page != 1:
            out["page"] = str(self.page)
        return out

    def path(self) -> str:
        """This view as a local path of the accounts page: ``/`` and the canonical query."""
        query = urlencode(self.params())
        return f"/?{query}" if query else "/"

    def with_status(self, status: Status | None) -> ListQuery:
        return replace(self, status=status, page=1)

    def sorted_by(self, key: SortKey) -> ListQuery:
        """The header link: the same column flips the direction, another starts ascending."""
        descending = not self.descending if key is self.sort else False
        return replace(self, sort=key, descending=descending, page=1)

    def on_page(self, number: int) -> ListQuery:
        return replace(self, page=number)


def parse(params: Mapping[str, str]) -> ListQuery:
    """A view from a URL's parameters. What is not understood falls back to the default view:
    a link from an old version or a hand-edited URL still shows the list, never an error."""
    try:
        status: Status | None = Status(params.get("state", ""))
    except ValueError:
        status = None
    try:
        sort = SortKey(params.get("sort", ""))
    except ValueError:
        sort = SortKey.STATE
    page_text = params.get("page", "1")
    page = int(page_text) if page_text.isascii() and page_text.isdigit() else 1
    return ListQuery(
        status=status,
        q=" ".join(params.get("q", "").split())[:MAX_QUERY_LENGTH],
        sort=sort,
        descending=params.get("dir") == "desc",
        page=min(max(page, 1), MAX_PAGE),
    )


def return_path(raw: str, account_id: int | None = None) -> str:
    """Where an action on the list sends the person back: the view they acted from (``raw``
    is its query string, as the form carried it) at the row acted on. Rebuilt from the parsed
    view, so whatever ``raw`` holds the answer is a path of this page (never another site)."""
    view = parse(dict(parse_qsl(raw.removeprefix("?"), keep_blank_values=True)))
    return view.path() + (f"#account-{account_id}" if account_id is not None else "")


@dataclass(frozen=True)
class Pages:
    """Page ``number`` of ``total`` rows, ``size`` a page; a number past the end shows the last."""

    total: int
    requested: int
    size: int = PAGE_SIZE

    @property
    def count(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def number(self) -> int:
        return min(max(self.requested, 1), self.count)

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.size

    @property
    def first_shown(self) -> int:
        return 0 if self.total == 0 else self.offset + 1

    @property
    def last_shown(self) -> int:
        return min(self.offset + self.size, self.total)


def summary(counts: Mapping[Status, int]) -> list[tuple[Status, int]]:
    """The summary bar, worst first: each problem state that has accounts, then the healthy."""
    return [
        (status, counts.get(status, 0))
        for status in Status
        if counts.get(status, 0) or status is Status.HEALTHY
    ]


def retry_text(next_attempt_at: datetime | None, now: datetime) -> str | None:
    """ "next retry in 2m" for a failing account (None when no retry is scheduled)."""
    if next_attempt_at is None:
        return None
    seconds = int((next_attempt_at - now).total_seconds())
    if seconds <= 0:
        return "next retry due now"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"next retry in {hours}h {minutes}m"
    if minutes:
        return f"next retry in {minutes}m"
    return f"next retry in {secs}s"

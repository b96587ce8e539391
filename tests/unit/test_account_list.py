"""The accounts list's decisions: states worst first, views from URLs, pages, return paths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ebay_connector.core import account_list
from ebay_connector.core.account_list import (
    Action,
    ListQuery,
    Pages,
    SortKey,
    Status,
    parse,
    primary_action,
    retry_text,
    return_path,
    status_of,
)

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
AHEAD = timedelta(minutes=10)


def state(**values: object) -> Status:
    defaults: dict[str, object] = {
        "needs_reconnect": False,
        "failures_in_row": 0,
        "access_expires_at": NOW + timedelta(hours=2),
        "now": NOW,
        "refresh_ahead": AHEAD,
    }
    return status_of(**{**defaults, **values})  # type: ignore[arg-type]


def test_states_in_order_of_precedence() -> None:
    assert state(needs_reconnect=True, failures_in_row=3) is Status.NEEDS_RECONNECT
    assert state(failures_in_row=1, access_expires_at=NOW + timedelta(minutes=1)) is (
        Status.FAILING
    )
    assert state(access_expires_at=NOW + timedelta(minutes=5)) is Status.EXPIRING
    assert state(access_expires_at=NOW + AHEAD) is Status.EXPIRING
    assert state(access_expires_at=NOW + AHEAD + timedelta(seconds=1)) is Status.HEALTHY
    # An idle account's expired access token: its grant still works.
    assert state(access_expires_at=NOW - timedelta(minutes=1)) is Status.HEALTHY
    assert state(access_expires_at=None) is Status.HEALTHY
    assert [s.rank for s in Status] == [0, 1, 2, 3]


def test_badges_and_summary_words() -> None:
    assert [s.badge for s in Status] == [
        "needs reconnect",
        "refresh failing",
        "expiring soon",
        "active",
    ]
    counts = {Status.NEEDS_RECONNECT: 2, Status.FAILING: 1, Status.HEALTHY: 1505}
    assert [(s.counted, n) for s, n in account_list.summary(counts)] == [
        ("need reconnect", 2),
        ("failing", 1),
        ("healthy", 1505),
    ]
    assert account_list.summary({}) == [(Status.HEALTHY, 0)]


def test_one_primary_action_per_state() -> None:
    assert primary_action(Status.NEEDS_RECONNECT) is Action.RECONNECT
    for other in (Status.FAILING, Status.EXPIRING, Status.HEALTHY):
        assert primary_action(other) is Action.REFRESH


def test_a_view_round_trips_through_its_url() -> None:
    view = ListQuery(Status.FAILING, "main store", SortKey.LAST_ATTEMPT, True, 3)
    assert view.path() == "/?state=failing&q=main+store&sort=last_attempt&dir=desc&page=3"
    assert parse(view.params()) == view
    assert ListQuery().path() == "/"


@pytest.mark.parametrize(
    "params",
    [
        {"state": "broken", "sort": "password", "dir": "sideways", "page": "x"},
        {"page": "-3"},
        {"page": "0"},
        {"page": "١٢"},  # digits, but not ASCII ones
    ],
)
def test_what_is_not_understood_is_the_default(params: dict[str, str]) -> None:
    assert parse(params) == ListQuery()


def test_search_is_trimmed_and_bounded() -> None:
    assert parse({"q": "  main   store "}).q == "main store"
    assert len(parse({"q": "x" * 500}).q) == account_list.MAX_QUERY_LENGTH
    assert parse({"page": "99999999999"}).page == account_list.MAX_PAGE


def test_header_links_flip_the_direction_of_the_sorted_column_only() -> None:
    view = ListQuery(sort=SortKey.LABEL, page=4)
    assert view.sorted_by(SortKey.LABEL) == ListQuery(sort=SortKey.LABEL, descending=True)
    assert view.sorted_by(SortKey.LAST_USED) == ListQuery(sort=SortKey.LAST_USED)
    assert ListQuery(page=5).with_status(Status.FAILING) == ListQuery(Status.FAILING)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("state=failing&page=2", "/?state=failing&page=2#account-7"),
        ("?q=outlet", "/?q=outlet#account-7"),
        ("", "/#account-7"),
        ("//evil.example/path", "/#account-7"),
        ("https://evil.example/?state=failing", "/#account-7"),
        ("state=failing&next=https://evil.example", "/?state=failing#account-7"),
        (
            "q=%0d%0aLocation:%20https://evil.example",
            "/?q=Location%3A+https%3A%2F%2Fevil.example#account-7",
        ),
    ],
)
def test_the_return_path_is_always_a_view_of_this_page(raw: str, expected: str) -> None:
    assert return_path(raw, 7) == expected
    assert return_path(raw).startswith("/")
    assert not return_path(raw).startswith("//")


def test_pages() -> None:
    pages = Pages(total=1508, requested=2)
    assert (pages.count, pages.number, pages.offset) == (31, 2, 50)
    assert (pages.first_shown, pages.last_shown) == (51, 100)
    last = Pages(total=1508, requested=99)
    assert (last.number, last.first_shown, last.last_shown) == (31, 1501, 1508)
    empty = Pages(total=0, requested=3)
    assert (empty.count, empty.number, empty.offset, empty.first_shown, empty.last_shown) == (
        1,
        1,
        0,
        0,
        0,
    )


def test_next_retry_in_words() -> None:
    assert retry_text(NOW + timedelta(seconds=130), NOW) == "next retry in 2m"
    assert retry_text(NOW + timedelta(seconds=42), NOW) == "next retry in 42s"
    assert retry_text(NOW + timedelta(hours=1, minutes=5), NOW) == "next retry in 1h 5m"
    assert retry_text(NOW - timedelta(seconds=1), NOW) == "next retry due now"
    assert retry_text(None, NOW) is None

"""The token refresh terminal: every exchange with eBay, live, without losing one.

The page shows the newest entries; older ones come by keyset pages (``before``). The live feed
asks for what is newer than the newest it has, oldest first and a page at a time, and is told
how many more are waiting: a burst is caught up in order, and the page says how many are still
to come instead of skipping them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ebay_connector.core.exchange import Trigger
from ebay_connector.core.outcome import Outcome
from ebay_connector.db.journal import ExchangeRow
from ebay_connector.db.store import MAX_ID
from ebay_connector.web import views
from ebay_connector.web.api.state import runtime_of
from ebay_connector.web.ui.exchanges import exchange_path
from ebay_connector.web.ui.pages import Cookie, me_of, page, templates

router = APIRouter(include_in_schema=False)

TERMINAL_PAGE = 100
FAILURES = "failures"  # every outcome except ok
MAX_SEARCH = 100
NEWER_HEADER = "X-Newer-Entries"  # how many newer entries wait after this page
OLDER_HEADER = "X-Older-Entries"  # "1" when older entries remain before this page


@dataclass(frozen=True)
class Filters:
    """The terminal's filters, as read from the query string (anything unknown is ignored)."""

    search: str
    account_id: int | None
    trigger: str | None
    outcome: str | None

    @classmethod
    def read(cls, q: str, account: str, trigger: str, outcome: str) -> Filters:
        known_outcomes = {o.value for o in Outcome} | {FAILURES}
        return cls(
            search=" ".join(q.split())[:MAX_SEARCH],
            account_id=int(account) if account.isdigit() and len(account) < 10 else None,
            trigger=trigger if trigger in {t.value for t in Trigger} else None,
            outcome=outcome if outcome in known_outcomes else None,
        )

    @property
    def active(self) -> bool:
        return bool(self.search or self.account_id or self.trigger or self.outcome)

    def journal(self) -> dict[str, Any]:
        failures = self.outcome == FAILURES
        return {
            "account_id": self.account_id,
            "trigger": self.trigger,
            "outcome": None if failures else self.outcome,
            "failures_only": failures,
            "account_search": self.search or None,
        }

    def query(self) -> str:
        pairs = (
            ("q", self.search),
            ("account", str(self.account_id) if self.account_id else ""),
            ("trigger", self.trigger or ""),
            ("outcome", self.outcome or ""),
        )
        return urlencode({k: v for k, v in pairs if v})


def _entry_view(row: ExchangeRow) -> dict[str, Any]:
    lines = "\n".join(views.exchange_lines(row.request, row.response, row.error))
    return {**views.exchange_row_dict(row), "lines": lines, "href": exchange_path(row.id)}


def _entries_html(rows: list[ExchangeRow]) -> str:
    entry = templates.get_template("entry.html")
    return "".join(entry.render(e=_entry_view(row)) for row in rows)


Search = Annotated[str, Query(max_length=200)]
Word = Annotated[str, Query(max_length=40)]
EntryId = Annotated[int, Query(ge=0, le=MAX_ID)]


@router.get("/terminal")
async def terminal_page(
    request: Request,
    cookie: Cookie,
    q: Search = "",
    account: Word = "",
    trigger: Word = "",
    outcome: Word = "",
    before: EntryId = 0,
) -> Response:
    me = await me_of(request, cookie)
    if me is None:
        return RedirectResponse("/login", status_code=303)
    runtime = runtime_of(request)
    filters = Filters.read(q, account, trigger, outcome)
    rows = await runtime.journal.exchanges(
        organization_id=me.organization_id,
        before_id=before or None,
        limit=TERMINAL_PAGE + 1,
        **filters.journal(),
    )
    older = len(rows) > TERMINAL_PAGE
    rows = rows[:TERMINAL_PAGE]
    one_account = None
    if filters.account_id is not None:
        found = await runtime.store.account_token(filters.account_id)
        if found is not None and found.organization_id == me.organization_id:
            one_account = {"id": found.account_id, "label": found.label}
    # An older page (before=) is a look back: the live feed belongs to the newest page.
    newest_id = rows[0].id if rows and not before else 0
    if not before and not rows:
        newest = await runtime.journal.exchanges(organization_id=me.organization_id, limit=1)
        newest_id = newest[0].id if newest else 0
    return page(
        request,
        "terminal.html",
        me,
        entries=[_entry_view(r) for r in rows],
        newest_id=newest_id,
        live=not before,
        oldest_id=rows[-1].id if rows else 0,
        older=older,
        query=filters.query(),
        filters=filters,
        one_account=one_account,
        journal_empty=not rows and not filters.active and not before,
        triggers=[t.value for t in Trigger],
        outcomes=[o.value for o in Outcome if o is not Outcome.OK],
        failures=FAILURES,
    )


@router.get("/ui/terminal/entries")
async def terminal_entries(
    request: Request,
    cookie: Cookie,
    after: EntryId = 0,
    before: EntryId = 0,
    q: Search = "",
    account: Word = "",
    trigger: Word = "",
    outcome: Word = "",
    peek: bool = False,
) -> Response:
    """Entries as HTML list items, newest first: with ``after``, the page of entries just newer
    than it (the live feed; ``X-Newer-Entries`` says how many more wait; with ``peek``, only
    that count, for a page that lets the person choose when to load them); with ``before``, the
    page just older (``X-Older-Entries`` says whether more remain)."""
    me = await me_of(request, cookie)
    if me is None:
        return Response(status_code=401)
    journal = runtime_of(request).journal
    filters = Filters.read(q, account, trigger, outcome).journal()
    if peek:
        response = HTMLResponse("")
        count = await journal.count_exchanges(
            organization_id=me.organization_id, after_id=after, **filters
        )
        response.headers[NEWER_HEADER] = str(count)
        return response
    if before:
        rows = await journal.exchanges(
            organization_id=me.organization_id,
            before_id=before,
            limit=TERMINAL_PAGE + 1,
            **filters,
        )
        response = HTMLResponse(_entries_html(rows[:TERMINAL_PAGE]))
        response.headers[OLDER_HEADER] = "1" if len(rows) > TERMINAL_PAGE else "0"
        return response
    rows = await journal.exchanges(
        organization_id=me.organization_id,
        after_id=after,
        limit=TERMINAL_PAGE,
        oldest_first=True,
        **filters,
    )
    waiting = 0
    if len(rows) == TERMINAL_PAGE:
        waiting = await journal.count_exchanges(
            organization_id=me.organization_id, after_id=rows[-1].id, **filters
        )
    response = HTMLResponse(_entries_html(rows[::-1]))
    response.headers[NEWER_HEADER] = str(waiting)
    return response

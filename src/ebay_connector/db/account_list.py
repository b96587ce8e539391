"""One page of an organization's accounts, filtered, searched, sorted and counted in SQL.

The state of each account (``core/account_list.py::status_of``) is a CASE expression here, so
the database filters, counts and sorts by it: a page costs one count and one page of rows,
whatever the number of accounts, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ebay_connector.core.account_list import ListQuery, Pages, SortKey, Status
from ebay_connector.core.token_state import TokenState
from ebay_connector.db import models as m
from ebay_connector.db.database import Database
from ebay_connector.db.store import _ACCOUNT_TOKEN_COLUMNS, AccountToken, _account_token

LIKE_ESCAPE = "\\"


def status_expression(now: datetime, refresh_ahead: timedelta) -> sa.ColumnElement[str]:
    """``status_of`` as SQL: the same four states in the same order of precedence."""
    token = m.EbayToken
    return sa.case(
        (token.state == TokenState.NEEDS_RECONNECT.value, Status.NEEDS_RECONNECT.value),
        (token.failures_in_row > 0, Status.FAILING.value),
        (
            sa.and_(token.access_expires_at > now, token.access_expires_at <= now + refresh_ahead),
            Status.EXPIRING.value,
        ),
        else_=Status.HEALTHY.value,
    )


def _rank(status: sa.ColumnElement[str]) -> sa.ColumnElement[int]:
    return sa.case(*((status == s.value, s.rank) for s in Status), else_=len(Status))


def _sort_column(key: SortKey, status: sa.ColumnElement[str]) -> sa.ColumnElement[Any]:
    account, token = m.EbayAccount, m.EbayToken
    columns: dict[SortKey, sa.ColumnElement[Any]] = {
        SortKey.STATE: _rank(status),
        SortKey.LABEL: sa.func.lower(account.label),
        SortKey.EBAY_USERNAME: sa.func.lower(account.ebay_username),
        SortKey.ACCESS: token.access_expires_at.expression,
        SortKey.REFRESH: token.refresh_expires_at.expression,
        # Most failures first when ascending: the column exists to find the worst.
        SortKey.FAILURES: -token.failures_in_row,
        SortKey.LAST_ATTEMPT: token.last_attempt_at.expression,
        SortKey.LAST_USED: account.last_used_at.expression,
    }
    return columns[key]


def _order(query: ListQuery, status: sa.ColumnElement[str]) -> list[sa.ColumnElement[Any]]:
    column = _sort_column(query.sort, status)
    # NULLs (never refreshed, never used) last in both directions; both backends know NULLS LAST.
    ordered = (column.desc() if query.descending else column.asc()).nulls_last()
    then = [] if query.sort is SortKey.LABEL else [sa.func.lower(m.EbayAccount.label).asc()]
    return [ordered, *then, m.EbayAccount.id.asc()]


def _search(q: str) -> sa.ColumnElement[bool] | None:
    if not q:
        return None
    escaped = (
        q.lower()
        .replace(LIKE_ESCAPE, LIKE_ESCAPE * 2)
        .replace("%", LIKE_ESCAPE + "%")
        .replace("_", LIKE_ESCAPE + "_")
    )
    pattern = f"%{escaped}%"
    return sa.or_(
        sa.func.lower(m.EbayAccount.label).like(pattern, escape=LIKE_ESCAPE),
        sa.func.lower(m.EbayAccount.ebay_username).like(pattern, escape=LIKE_ESCAPE),
    )


@dataclass(frozen=True)
class Listing:
    """A page of rows with each row's state, the counts by state (of the search, every state)
    and the page arithmetic of the filtered rows."""

    rows: Sequence[tuple[AccountToken, Status]]
    counts: dict[Status, int]
    pages: Pages

    @property
    def everything(self) -> int:
        return sum(self.counts.values())


class AccountList:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def page(
        self, organization_id: int, query: ListQuery, *, now: datetime, refresh_ahead: timedelta
    ) -> Listing:
        status = status_expression(now, refresh_ahead).label("status")
        scope: list[sa.ColumnElement[bool]] = [m.EbayAccount.organization_id == organization_id]
        search = _search(query.q)
        if search is not None:
            scope.append(search)
        joined = sa.join(m.EbayAccount, m.EbayToken, m.EbayToken.account_id == m.EbayAccount.id)
        states = sa.select(status).select_from(joined).where(*scope).subquery()
        counting = sa.select(states.c.status, sa.func.count()).group_by(states.c.status)
        async with self.db.read() as conn:
            counts = {Status(s): int(n) for s, n in (await conn.execute(counting)).all()}
            total = counts.get(query.status, 0) if query.status else sum(counts.values())
            pages = Pages(total, query.page)
            where = list(scope)
            if query.status is not None:
                where.append(status_expression(now, refresh_ahead) == query.status.value)
            rows = (
                await conn.execute(
                    sa.select(*_ACCOUNT_TOKEN_COLUMNS, status)
                    .select_from(joined)
                    .where(*where)
                    .order_by(*_order(query, status_expression(now, refresh_ahead)))
                    .limit(pages.size)
                    .offset(pages.offset)
                )
            ).all()
        return Listing(
            rows=[(_account_token(_without_status(row)), Status(row.status)) for row in rows],
            counts=counts,
            pages=pages,
        )


class _Row:
    """A result row without its ``status`` column, as ``_account_token`` expects."""

    def __init__(self, mapping: dict[str, Any]) -> None:
        self._mapping = mapping


def _without_status(row: Any) -> _Row:
    values = dict(row._mapping)
    values.pop("status")
    return _Row(values)

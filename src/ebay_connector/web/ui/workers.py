"""The workers page: heartbeats, the shared quota, activity and upcoming expiries."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from ebay_connector.core import quota
from ebay_connector.core.exchange import Action
from ebay_connector.web import views
from ebay_connector.web.api.auth import Operator
from ebay_connector.web.api.state import runtime_of
from ebay_connector.web.ui.pages import REFRESH_WARNING, Cookie, back, me_of, page

router = APIRouter(include_in_schema=False)


def activity_svg(points: list[tuple[datetime, str]], now: datetime) -> str:
    """Refreshes per hour over the last 24 h: ok bars up, failures down. Plain SVG, no CDN."""
    ok: Counter[int] = Counter()
    bad: Counter[int] = Counter()
    for when, outcome in points:
        hour = int((now - when).total_seconds() // 3600)
        if 0 <= hour < 24:
            (ok if outcome == "ok" else bad)[23 - hour] += 1
    top = max([1, *ok.values(), *bad.values()])
    width, half, bar = 24 * 20, 60, 14
    parts = [
        f'<svg role="img" aria-label="refreshes per hour" viewBox="0 0 {width} {2 * half + 20}"'
        f' width="100%" class="chart">',
        f'<line x1="0" x2="{width}" y1="{half}" y2="{half}" stroke="#999"/>',
    ]
    for slot in range(24):
        x = slot * 20 + 3
        up = round(ok[slot] / top * (half - 2))
        down = round(bad[slot] / top * (half - 2))
        label = f"{23 - slot} h ago: {ok[slot]} ok, {bad[slot]} failed"
        parts.append(
            f"<g><title>{label}</title>"
            f'<rect x="{x}" y="{half - up}" width="{bar}" height="{up}" fill="#2e7d32"/>'
            f'<rect x="{x}" y="{half}" width="{bar}" height="{down}" fill="#b71c1c"/></g>'
        )
    parts.append(f'<text x="0" y="{2 * half + 15}" font-size="11">24 h ago</text>')
    parts.append(f'<text x="{width - 30}" y="{2 * half + 15}" font-size="11">now</text></svg>')
    return "".join(parts)


@router.get("/workers")
async def workers_page(request: Request, cookie: Cookie) -> Response:
    me = await me_of(request, cookie)
    if me is None:
        return RedirectResponse("/login", status_code=303)
    runtime = runtime_of(request)
    now = runtime.clock()
    # Workers and the shared quota are the deployment's: its operator's to see, not every
    # organization's (host names, pids, the other organizations' spending).
    beats = await runtime.heartbeats.all() if me.operator else []
    versions = sorted({b.version for b in beats})
    cards = []
    for b in beats:
        status = b.status_at(now)
        kind = {"ok": "ok", "degraded": "warn", "starting": "idle"}.get(status, "bad")
        counts = [(k, v) for k, v in b.counts.items() if isinstance(v, int) and v]
        cards.append(
            {
                "instance_id": b.instance_id,
                "host": b.host,
                "pid": b.pid,
                "version": b.version,
                "status": status,
                "kind": kind,
                "started": views.relative(b.started_at, now),
                "last_cycle": views.relative(b.last_cycle_finished_at, now),
                "next_cycle": views.relative(
                    b.updated_at + timedelta(seconds=b.interval_seconds), now
                ),
                "counts": counts,
                "last_error": b.last_error,
            }
        )
    usage = quota.QuotaState(
        await runtime.journal.quota_usage(now - quota.WINDOW), runtime.settings.quota
    )
    table = [
        {"grant": g, "used": usage.used.get(g, 0), "limit": limit, "remaining": usage.remaining(g)}
        for g, limit in usage.config.limits.items()
        if me.operator
    ]
    projection = await runtime.journal.quota_projection(
        now, usage.config.limits.get(Action.REFRESH_TOKEN.value, 0)
    )
    points = await runtime.journal.refresh_outcomes_since(
        me.organization_id, now - timedelta(hours=24)
    )
    # Only what needs a person: an access token ending in two hours is routine (the worker
    # refreshes it); a refresh token ending, or an account that needs reconnecting, only the
    # seller can fix.
    expiries = []
    for a in await runtime.store.accounts(me.organization_id):
        if a.state.value == "needs_reconnect":
            reason = views.PLAIN_REASONS.get(a.state_reason or "", a.state_reason or "")
            what = f"needs reconnecting{f' — {reason}' if reason else ''}"
        elif a.refresh_expires_at is not None and a.refresh_expires_at - now < REFRESH_WARNING:
            what = (
                f"refresh token ends {views.relative(a.refresh_expires_at, now)}"
                " — the seller must reconnect before then"
            )
        else:
            continue
        expiries.append({"id": a.account_id, "label": a.label, "what": what})
    return page(
        request,
        "workers.html",
        me,
        workers=cards,
        versions=versions,
        mixed_versions=len(versions) > 1,
        quota=table,
        proactive_budget=usage.proactive_budget(),
        projection=projection,
        chart=activity_svg(points, now),
        expiries=expiries,
    )


@router.post("/ui/workers/run-once")
async def run_once(request: Request, principal: Operator) -> Response:
    report = await runtime_of(request).worker().run_once()
    c = report.counts
    return back(
        request,
        "/workers",
        f"cycle {report.status.value}: claimed {c.claimed}, refreshed {c.refreshed}, "
        f"failed {c.failed}",
    )

"""Accounts: list, refresh, read the terminal, inspect tokens and workers, set a policy, print
a token."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from ebay_connector.cli.console import (
    EXIT_FAILED,
    EXIT_OK,
    JsonOpt,
    exit_with,
    out,
    print_json,
    with_records,
    with_runtime,
)
from ebay_connector.core import masking, policy, quota
from ebay_connector.core.exchange import Trigger
from ebay_connector.errors import DecryptFailed, UsageError

if TYPE_CHECKING:
    from ebay_connector.records import Records
    from ebay_connector.runtime import Runtime

FOLLOW_POLL_S = 1.0


def accounts(as_json: JsonOpt = False) -> None:
    """List accounts with their state and reason."""
    from ebay_connector.web import views

    async def body(records: Records) -> list[views.AccountDoc]:
        now = records.clock()
        ahead = records.settings.refresh_ahead
        return [views.account_dict(a, now, ahead) for a in await records.store.accounts()]

    rows = with_records(body)
    if as_json:
        print_json({"accounts": rows})
        return
    now = datetime.now(UTC)
    table = Table(
        "id",
        "label",
        "eBay user",
        "state",
        "access expires",
        "refresh expires",
        "failures",
        "last error",
    )
    for r in rows:
        access = r["access_expires_at"]
        refresh = r["refresh_expires_at"]
        table.add_row(
            str(r["id"]),
            r["label"],
            r["ebay_username"],
            r["display_state"],
            views.relative(datetime.fromisoformat(access), now) if access else "-",
            views.relative(datetime.fromisoformat(refresh), now) if refresh else "-",
            str(r["failures_in_row"]),
            r["last_error_code"] or "",
        )
    out.print(table)


def refresh(
    account: Annotated[str, typer.Argument(help="Account id, label or eBay username.")],
    debug: Annotated[bool, typer.Option("--debug", help="Show the masked exchange.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Refresh one account now (trigger admin, or debug with --debug)."""
    from ebay_connector.web import views

    trigger = Trigger.DEBUG if debug else Trigger.ADMIN

    async def body(runtime: Runtime) -> tuple[bool, views.RefreshResultDoc]:
        account_id = await runtime.store.resolve_account(account)
        result = await runtime.refresher.refresh(account_id, trigger, actor="cli")
        exchange = views.exchange_dict(await runtime.refresher.exchange_of(result))
        return result.ok, views.refresh_result_dict(result, exchange)

    ok, doc = with_runtime(body)
    if as_json:
        print_json(doc)
    else:
        out.print(
            f"account #{doc['account_id']} · trigger {doc['trigger']} · outcome {doc['outcome']}"
            f" · state {doc['state']}"
            + (f" ({doc['state_reason']})" if doc["state_reason"] else "")
        )
        out.print(doc["meaning"])
        if doc["joined"]:
            out.print("another caller refreshed this account meanwhile; this is its result")
        exchange = doc["exchange"]
        if debug and exchange:
            out.print(f"token fingerprint: {exchange['token_fingerprint'] or '-'}")
            for line in views.exchange_lines(
                exchange["request"], exchange["response"], exchange["error"]
            ):
                out.print(line, markup=False)
    exit_with(EXIT_OK if ok else EXIT_FAILED)


def logs(
    account: Annotated[str | None, typer.Option(help="Account id, label or username.")] = None,
    trigger: Annotated[Trigger | None, typer.Option(help="Only this trigger.")] = None,
    outcome: Annotated[str | None, typer.Option(help="Only this outcome code.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many entries.")] = 20,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new ones.")] = False,
    full: Annotated[bool, typer.Option("--full", help="Show each masked exchange.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The token refresh terminal: every exchange with eBay, newest first (worker, admin, debug,
    on-demand, connect). With --follow and --json: one JSON document per line."""
    from ebay_connector.web import views

    async def body(records: Records) -> None:
        account_id = await records.store.resolve_account(account) if account else None
        filters: dict[str, Any] = {
            "account_id": account_id,
            "trigger": trigger.value if trigger else None,
            "outcome": outcome,
        }
        rows = await records.journal.exchanges(limit=limit, **filters)
        if as_json and not follow:
            print_json({"entries": [views.exchange_row_dict(r) for r in rows]})
            return
        _emit(rows, as_json, full)
        last_id = rows[0].id if rows else 0
        while follow:
            await asyncio.sleep(FOLLOW_POLL_S)
            new = await records.journal.exchanges(limit=1000, after_id=last_id, **filters)
            if new:
                _emit(new, as_json, full)
                last_id = new[0].id

    with_records(body)


def _emit(rows: list[Any], as_json: bool, full: bool) -> None:
    from ebay_connector.web import views

    for row in rows:
        if as_json:
            sys.stdout.write(json.dumps(views.exchange_row_dict(row), ensure_ascii=False) + "\n")
            continue
        out.print(views.exchange_head(row), markup=False)
        if full or not row.sent:
            for line in views.exchange_lines(row.request, row.response, row.error):
                out.print("    " + line, markup=False)
    sys.stdout.flush()


def inspect_tokens(as_json: JsonOpt = False) -> None:
    """Per account: ciphertext prefix and key, does it decrypt, masked plaintext and fingerprint."""
    from ebay_connector.keys import crypto

    async def body(records: Records) -> list[dict[str, Any]]:
        ring = records.keys.ring
        result = []
        for a in await records.store.accounts():
            entry: dict[str, Any] = {"id": a.account_id, "label": a.label, "state": a.state.value}
            for field, ct in (
                (crypto.TokenField.REFRESH_TOKEN, a.refresh_token_ciphertext),
                (crypto.TokenField.ACCESS_TOKEN, a.access_token_ciphertext),
            ):
                info: dict[str, Any] = {"stored": None}
                if ct is not None:
                    # The same masking as everywhere: `ENC:v1:…` vs a legacy `v^…` at a glance.
                    info["stored"] = masking.mask(ct, ring).to_dict()
                    info["encrypted"] = ct.startswith(crypto.PREFIX)
                    info["key_id"] = ring.key_id_of(ct)
                    try:
                        plain = ring.decrypt(ct, account_id=a.account_id, field=field)
                    except DecryptFailed as exc:
                        info["decrypts"] = False
                        info["error"] = f"{exc.code}: {exc.message}"
                    else:
                        info["decrypts"] = True
                        info["plaintext"] = masking.mask(plain, ring).to_dict()
                entry[field.value] = info
            result.append(entry)
        return result

    rows = with_records(body)
    if as_json:
        print_json({"tokens": rows})
        return
    table = Table("id", "label", "field", "stored", "key", "decrypts", "plaintext (masked)")
    for r in rows:
        for field in ("refresh_token", "access_token"):
            info = r[field]
            plain = info.get("plaintext")
            table.add_row(
                str(r["id"]),
                r["label"],
                field,
                (
                    f"{info['stored']['prefix']}… ({info['stored']['length']})"
                    if info["stored"]
                    else "-"
                ),
                str(info.get("key_id") or "-"),
                "yes" if info.get("decrypts") else f"NO {info.get('error', '')}",
                (
                    f"{plain['prefix']}… len {plain['length']} fp {plain['fingerprint']}"
                    if plain
                    else "-"
                ),
            )
    out.print(table)


def inspect_runtime(
    attempts: Annotated[int, typer.Option(min=1, max=100, help="Attempts per account.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Worker heartbeats (with staleness) and the last attempts of every account."""
    from ebay_connector.web import views

    async def body(records: Records) -> views.RuntimeDoc:
        now = records.clock()
        beats = [views.heartbeat_dict(h, now) for h in await records.heartbeats.all()]
        per_account: list[views.AccountAttemptsDoc] = []
        for a in await records.store.accounts():
            per_account.append(
                {
                    "id": a.account_id,
                    "label": a.label,
                    "state": a.state.value,
                    "reason": a.state_reason,
                    "attempts": [
                        views.attempt_dict(t)
                        for t in await records.journal.attempts(a.account_id, attempts)
                    ],
                }
            )
        usage = await records.journal.quota_usage(now - quota.WINDOW)
        return {
            "heartbeats": beats,
            "accounts_by_state": await records.store.count_by_state(),
            "due_now": await records.store.due_count(now),
            "quota": quota.QuotaState(usage, records.settings.quota).to_dict(),
            "accounts": per_account,
        }

    doc = with_records(body)
    if as_json:
        print_json(doc)
        return
    if not doc["heartbeats"]:
        out.print("no worker heartbeat: no worker is running")
    for h in doc["heartbeats"]:
        out.print(
            f"worker {h['instance_id']} · {h['status']} · version {h['version']} · cycles "
            f"{h['cycles']} · last cycle {h['last_cycle_finished_at']} · counts {h['counts']}"
            + (f" · error {h['last_error']}" if h["last_error"] else ""),
            markup=False,
        )
    out.print(f"accounts by state: {doc['accounts_by_state']} · due now: {doc['due_now']}")
    q = doc["quota"]
    out.print(
        "eBay quota, last 24 h: "
        + " · ".join(f"{g} {v['used']}/{v['limit']}" for g, v in q.items() if isinstance(v, dict))
        + f" · proactive budget left {q['proactive_budget']}"
    )
    for a in doc["accounts"]:
        out.print(
            f"#{a['id']} {a['label']} · {a['state']}" + (f" ({a['reason']})" if a["reason"] else "")
        )
        for t in a["attempts"]:
            out.print(
                f"    {t['started_at']} {t['trigger']} {t['outcome']}"
                + (f" — {t['error_message']}" if t["error_message"] else ""),
                markup=False,
            )


def policy_command(
    account: Annotated[str, typer.Argument(help="Account id, label or eBay username.")],
    value: Annotated[
        str, typer.Argument(help="auto, proactive, on_demand, or default (the global setting).")
    ],
) -> None:
    """Set an account's refresh policy (see README: refresh policies)."""
    from ebay_connector.web import views

    if value != "default" and value not in {p.value for p in policy.RefreshPolicy}:
        raise UsageError(f"unknown policy {value!r}: auto, proactive, on_demand or default")

    async def body(runtime: Runtime) -> str:
        account_id = await runtime.store.resolve_account(account)
        chosen = None if value == "default" else policy.RefreshPolicy(value)
        next_at = await runtime.connector.set_policy(account_id, chosen)
        when = views.iso(next_at) or "only on demand"
        return f"account #{account_id}: policy {value}; next background refresh {when}"

    out.print(with_runtime(body))


def token(
    account: Annotated[str, typer.Argument(help="Account id, label or eBay username.")],
    as_json: JsonOpt = False,
) -> None:
    """Print a valid access token (refreshing on demand). Its job is to print a secret."""
    from ebay_connector.web import views

    async def body(runtime: Runtime) -> views.AccessTokenDoc:
        account_id = await runtime.store.resolve_account(account)
        return views.access_token_dict(await runtime.refresher.get_access_token(account_id))

    doc = with_runtime(body)
    if as_json:
        print_json(doc)
    else:
        sys.stdout.write(doc["access_token"] + "\n")

"""The ``ebay-connector`` command line: one command per operator task.

Exit codes: 0 success · 1 a failed outcome · 2 usage or configuration error. An error is one
readable line on stderr (``error: <code>: <message>``); reading commands take ``--json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ebay_connector import emulator as emulation
from ebay_connector import log, loop, serve
from ebay_connector.core import masking, policy, quota
from ebay_connector.core.exchange import Trigger
from ebay_connector.db import api_keys, migrate, users
from ebay_connector.db.database import Database
from ebay_connector.errors import (
    ConfigError,
    ConnectorError,
    DecryptFailed,
    KeyRingError,
    NeedsReconnect,
    NotFound,
    SchemaMissing,
    UsageError,
)
from ebay_connector.keys import crypto, rotation
from ebay_connector.runtime import Runtime, load_keyring, open_runtime
from ebay_connector.service import metrics
from ebay_connector.service.worker import CycleStatus
from ebay_connector.settings import Settings, load
from ebay_connector.web import views

T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
FOLLOW_POLL_S = 1.0

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # usage errors as plain lines a script can read
    add_completion=False,
    help="Connect eBay seller accounts over OAuth and keep their tokens alive.",
)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
inspect_app = typer.Typer(no_args_is_help=True, help="Diagnostics (masked).")
keys_app = typer.Typer(no_args_is_help=True, help="Token encryption keys.")
app.add_typer(db_app, name="db")
app.add_typer(inspect_app, name="inspect")
app.add_typer(keys_app, name="keys")
orgs_app = typer.Typer(no_args_is_help=True, help="Organizations.")
users_app = typer.Typer(no_args_is_help=True, help="People who sign in.")
api_keys_app = typer.Typer(no_args_is_help=True, help="Programs' API keys.")
app.add_typer(orgs_app, name="orgs")
app.add_typer(users_app, name="users")
app.add_typer(api_keys_app, name="api-keys")

# Piped output (scripts, tests) gets wide lines instead of Rich's 80-column default.
PIPED_WIDTH = 200
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else PIPED_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


def _settings() -> Settings:
    return load()


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _with_runtime(body: Callable[[Runtime], Awaitable[T]]) -> T:
    settings = _settings()

    async def main() -> T:
        async with open_runtime(settings) as runtime:
            return await body(runtime)

    return _run(main())


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return loop.run(coro)


def _exit(code: int) -> NoReturn:
    raise typer.Exit(code)


# Running -------------------------------------------------------------------------------------


# --log-format as given on this invocation (None: EBAY_CONNECTOR_LOG_FORMAT decides).
_log_format_flag: log.LogFormat | None = None


@app.callback()
def _global_options(
    log_format: Annotated[
        log.LogFormat | None,
        typer.Option(
            "--log-format",
            case_sensitive=False,
            help="Log lines as text (readable, the default) or json (one object per line); "
            "overrides EBAY_CONNECTOR_LOG_FORMAT.",
        ),
    ] = None,
) -> None:
    global _log_format_flag
    _log_format_flag = log_format
    if log_format is not None:
        # Every command's warnings follow the flag; serve/demo/worker then log at INFO.
        log.configure(log_format, logging.WARNING)


def _configure_logging(settings: Settings) -> None:
    log.configure(_log_format_flag or log.LogFormat(settings.log_format), logging.INFO)


@app.command()
def demo() -> None:
    """Start the product on its embedded defaults, with the emulator and eight demo accounts."""
    settings = _settings()
    _configure_logging(settings)
    _run(serve.run(settings, with_demo=True, with_worker=True, say=out.print))


@app.command("serve")
def serve_command(
    no_worker: Annotated[bool, typer.Option("--no-worker", help="Do not run the worker.")] = False,
) -> None:
    """Start the HTTP server (and, unless --no-worker, the worker in the same process)."""
    settings = _settings()
    _configure_logging(settings)
    _run(serve.run(settings, with_demo=False, with_worker=not no_worker, say=out.print))


@app.command()
def worker(
    once: Annotated[bool, typer.Option("--once", help="Run one cycle and exit 0/1.")] = False,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=1,
            max=65535,
            help="Serve this worker's metrics on http://127.0.0.1:PORT/metrics (default: off).",
        ),
    ] = None,
) -> None:
    """Refresh every due account; with --once, exit 1 unless the cycle was ok."""

    async def body(runtime: Runtime) -> CycleStatus:
        _configure_logging(runtime.settings)
        if metrics_port is None:
            return await _work(runtime, once)
        with metrics.serve_process_metrics(runtime.metrics, metrics_port) as url:
            out.print(f"worker metrics on {url}")
            return await _work(runtime, once)

    status = _with_runtime(body)
    _exit(EXIT_OK if status is CycleStatus.OK else EXIT_FAILED)


async def _work(runtime: Runtime, once: bool) -> CycleStatus:
    w = runtime.worker()
    if once:
        report = await w.run_once()
        out.print(
            f"cycle {report.status.value}: due {report.counts.due}, refreshed "
            f"{report.counts.refreshed}, failed {report.counts.failed}, needs reconnect "
            f"{report.counts.needs_reconnect}, waiting for reconnect "
            f"{report.counts.waiting_reconnect}"
        )
        return report.status
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await w.run(stop)
    return CycleStatus.OK


@app.command()
def emulator(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = emulation.DEFAULT_PORT,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    client_id: Annotated[str, typer.Option(help="App ID to register.")] = "",
    client_secret: Annotated[str, typer.Option(help="Cert ID to register.")] = "",
    ru_name: Annotated[str, typer.Option(help="RuName to register.")] = "",
    accept_url: Annotated[str, typer.Option(help="Where consent redirects.")] = "",
    decline_url: Annotated[str | None, typer.Option(help="Where a decline goes.")] = None,
    user: Annotated[list[str] | None, typer.Option(help="Add an eBay user (repeatable).")] = None,
    latency_ms: Annotated[int, typer.Option(min=0, help="Latency added to every answer.")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the error_rate draws.")] = 0,
    daily_limit: Annotated[
        list[str] | None,
        typer.Option(help="GRANT=N daily limit, e.g. refresh_token=50000 (repeatable)."),
    ] = None,
) -> None:
    """Run the eBay identity emulator standalone (see docs/emulator.md)."""
    given = [client_id, client_secret, ru_name, accept_url]
    if any(given) and not all(given):
        raise UsageError("--client-id, --client-secret, --ru-name and --accept-url go together")
    limits: dict[str, int] = {}
    for item in daily_limit or []:
        grant, _, number = item.partition("=")
        if grant not in quota.DEFAULT_DAILY_LIMITS or not number.isdigit():
            raise UsageError(
                f"--daily-limit {item!r}: expected GRANT=N with GRANT one of "
                f"{', '.join(quota.DEFAULT_DAILY_LIMITS)}"
            )
        limits[grant] = int(number)
    emu = emulation.Emulator(seed=seed, daily_limits=limits or None)
    if all(given):
        emu.register_app(
            client_id=client_id,
            client_secret=client_secret,
            ru_name=ru_name,
            accept_url=accept_url,
            decline_url=decline_url,
        )
    for name in user or []:
        emu.add_user(name)
    if latency_ms:
        emu.set_faults(emulation.Faults(latency_ms=latency_ms))
    out.print(f"eBay identity emulator on http://{host}:{port}")
    emulation.run(emu, host, port)


# Database and keys ----------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply the schema migrations (alembic upgrade head)."""
    settings = _settings()
    migrate.upgrade(settings.database_url)
    out.print(f"database at head: {serve.describe_database(settings.database_url)}")


@keys_app.command("generate")
def keys_generate(
    key_id: Annotated[str, typer.Option("--id", help="Key id (letters, digits, _ and -).")] = "k1",
) -> None:
    """Print a new key for EBAY_CONNECTOR_TOKEN_KEYS (and a fingerprint key). Keep them secret."""
    entry = crypto.format_key(key_id, crypto.generate_key())
    crypto.KeyRing.from_spec(entry)  # validates the id
    fingerprint = crypto.format_key("fp", crypto.generate_key()).split(":", 1)[1]
    sys.stdout.write(f"EBAY_CONNECTOR_TOKEN_KEYS={entry}\n")
    sys.stdout.write(f"EBAY_CONNECTOR_FINGERPRINT_KEY={fingerprint}\n")


BatchOpt = Annotated[
    int,
    typer.Option("--batch-size", min=1, max=10_000, help="Rows per read and per transaction."),
]


def _with_sealed_database(body: Callable[[Database], Awaitable[T]]) -> T:
    """The keys commands work on the database directly, not through a runtime: they must run
    (to diagnose and repair) when the start-up key check refuses the ring."""
    settings = _settings()

    async def main() -> T:
        db = Database.open(settings.database_url, pool_size=2)
        try:
            return await body(db)
        finally:
            await db.close()

    return _run(main())


def _row_label(row: dict[str, Any]) -> str:
    return " ".join(f"{k.removesuffix('_id')} {v}" for k, v in row.items())


def _failure_line(f: rotation.Failure) -> str:
    key = f" (key {f.key_id!r})" if f.key_id else ""
    return f"  {_row_label(dict(f.row))} · {f.field} · {f.reason}{key}"


@keys_app.command("rotate")
def keys_rotate(
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Key id to re-encrypt under; it must be in the key ring (default: the "
            "primary). With the local key file and no --to, a new key is added as primary.",
        ),
    ] = None,
    batch_size: BatchOpt = rotation.DEFAULT_BATCH_SIZE,
    as_json: JsonOpt = False,
) -> None:
    """Re-encrypt every stored secret under one key, online, in batches (resumable)."""
    settings = _settings()
    ring = load_keyring(settings).ring
    if settings.token_keys is None:
        # The local key file: this command adds and promotes the key itself; running processes
        # follow the file (crypto.KeyRing follows its edits), so they need no restart.
        if to is None:
            to = crypto.add_file_key(settings.key_file)
            err.print(f"added key {to} to {settings.key_file} as its primary", markup=False)
        else:
            crypto.promote_file_key(settings.key_file, to)
        ring = load_keyring(settings).ring
    target = to or ring.primary_id
    if target not in ring.key_ids:
        raise UsageError(
            f"key {target!r} is not in EBAY_CONNECTOR_TOKEN_KEYS ({', '.join(ring.key_ids)}): "
            "deploy it to every process first (see docs/security.md)"
        )
    if target != ring.primary_id:
        err.print(
            f"note: the configured primary is still {ring.primary_id!r}; processes keep sealing "
            f"new tokens with it until {target!r} is their primary — then run this again",
            markup=False,
        )

    async def body(db: Database) -> rotation.RotationReport:
        total = await rotation.pending(db, target)
        with Progress(console=err, disable=as_json) as progress:
            task = progress.add_task(f"re-encrypting under {target}", total=total)
            return await rotation.rotate(
                db,
                ring,
                target=target,
                batch_size=batch_size,
                on_batch=lambda n: progress.advance(task, n),
            )

    report = _with_sealed_database(body)
    if as_json:
        _print_json(report.to_dict())
    else:
        out.print(
            f"key {target}: {report.rewritten} re-encrypted, {report.changed_meanwhile} changed "
            f"meanwhile by a refresh, {len(report.failures)} do not decrypt, "
            f"{report.remaining} not yet under {target}",
            markup=False,
        )
        for f in report.failures:
            out.print(_failure_line(f), markup=False)
        if report.remaining > len(report.failures):
            out.print("run `keys rotate` again to re-encrypt the rest", markup=False)
    _exit(EXIT_FAILED if report.failures else EXIT_OK)


@keys_app.command("check")
def keys_check(
    batch_size: BatchOpt = rotation.DEFAULT_BATCH_SIZE, as_json: JsonOpt = False
) -> None:
    """Decrypt every stored secret: counts per key id and, by account, each one that fails."""
    ring = load_keyring(_settings()).ring
    report = _with_sealed_database(lambda db: rotation.check(db, ring, batch_size=batch_size))
    if as_json:
        _print_json(report.to_dict())
    else:
        keys = " · ".join(f"{k} {n}" for k, n in report.by_key.items()) or "-"
        out.print(f"{report.total} ciphertexts · by key: {keys}", markup=False)
        for f in report.failures:
            out.print(_failure_line(f), markup=False)
        out.print(
            "ok: every ciphertext decrypts"
            if report.ok
            else f"{len(report.failures)} ciphertexts do not decrypt",
            markup=False,
        )
    _exit(EXIT_OK if report.ok else EXIT_FAILED)


@keys_app.command("remove")
def keys_remove(key_id: Annotated[str, typer.Argument(help="The key id to remove.")]) -> None:
    """Remove a key from the local key file once nothing is sealed with it."""
    settings = _settings()
    if settings.token_keys is not None:
        raise UsageError(
            f"the key ring comes from EBAY_CONNECTOR_TOKEN_KEYS: remove {key_id!r} there once "
            "`keys check` shows nothing under it"
        )
    ring = load_keyring(settings).ring
    report = _with_sealed_database(lambda db: rotation.check(db, ring))
    in_use = report.by_key.get(key_id, 0)
    if in_use:
        raise UsageError(f"{in_use} stored secrets are still sealed with {key_id!r}: rotate first")
    crypto.remove_file_key(settings.key_file, key_id)
    out.print(f"key {key_id} removed from {settings.key_file}", markup=False)


# Organizations, users, API keys ----------------------------------------------------------------

OrgOpt = Annotated[str, typer.Option("--org", help="Organization name.")]


@orgs_app.command("create")
def orgs_create(name: Annotated[str, typer.Argument(help="Organization name.")]) -> None:
    """Create an organization."""
    if not name.strip() or len(name) > 200:
        raise UsageError("an organization name has 1 to 200 characters")

    async def body(runtime: Runtime) -> int:
        if await runtime.store.organization_id(name) is not None:
            raise UsageError(f"organization {name!r} already exists")
        return await runtime.store.create_organization(name)

    out.print(f"organization #{_with_runtime(body)} {name!r} created")


@users_app.command("create")
def users_create(
    org: OrgOpt,
    email: Annotated[str, typer.Option("--email", help="E-mail address (the sign-in name).")],
    role: Annotated[users.Role, typer.Option("--role", help="admin or viewer.")],
    password: Annotated[
        str | None, typer.Option("--password", help="Prompted for when not given.")
    ] = None,
) -> None:
    """Create a user who signs in to the web UI and API."""
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)

    async def body(runtime: Runtime) -> users.UserRow:
        organization_id = await users.organization_by_name(runtime.db, org)
        return await users.Users(runtime.db).create(organization_id, email, role, password)

    user = _with_runtime(body)
    out.print(f"user #{user.id} {user.email} ({user.role.value}) created in {org!r}")


@api_keys_app.command("create")
def api_keys_create(
    org: OrgOpt,
    name: Annotated[str, typer.Option("--name", help="What the key is for.")] = "program",
    tokens: Annotated[
        bool, typer.Option("--tokens", help="Allow this key to read access tokens.")
    ] = False,
) -> None:
    """Create an API key; it is printed once and cannot be shown again."""

    async def body(runtime: Runtime) -> tuple[api_keys.ApiKeyRow, str]:
        organization_id = await users.organization_by_name(runtime.db, org)
        return await api_keys.ApiKeys(runtime.db).create(
            organization_id, name, can_read_tokens=tokens
        )

    row, full = _with_runtime(body)
    err.print(
        f"API key {row.key_id} ({'may read tokens' if row.can_read_tokens else 'no token access'})"
        " — store it now, it is not shown again:",
        markup=False,
    )
    sys.stdout.write(full + "\n")


@api_keys_app.command("list")
def api_keys_list(org: OrgOpt, as_json: JsonOpt = False) -> None:
    """List an organization's API keys (never the keys themselves)."""

    async def body(runtime: Runtime) -> list[api_keys.ApiKeyRow]:
        organization_id = await users.organization_by_name(runtime.db, org)
        return await api_keys.ApiKeys(runtime.db).list(organization_id)

    rows = _with_runtime(body)
    docs: list[dict[str, Any]] = [
        {
            "key_id": r.key_id,
            "name": r.name,
            "can_read_tokens": r.can_read_tokens,
            "created_at": views.iso(r.created_at),
            "last_used_at": views.iso(r.last_used_at),
            "revoked_at": views.iso(r.revoked_at),
        }
        for r in rows
    ]
    if as_json:
        _print_json({"api_keys": docs})
        return
    table = Table("key id", "name", "tokens", "created", "last used", "revoked")
    for d in docs:
        table.add_row(
            d["key_id"],
            d["name"],
            "yes" if d["can_read_tokens"] else "no",
            d["created_at"] or "-",
            d["last_used_at"] or "-",
            d["revoked_at"] or "-",
        )
    out.print(table)


@api_keys_app.command("revoke")
def api_keys_revoke(
    org: OrgOpt, key_id: Annotated[str, typer.Argument(help="The key id (see list).")]
) -> None:
    """Revoke an API key; programs using it get 401 from now on."""

    async def body(runtime: Runtime) -> bool:
        organization_id = await users.organization_by_name(runtime.db, org)
        return await api_keys.ApiKeys(runtime.db).revoke(organization_id, key_id)

    if not _with_runtime(body):
        raise NotFound(f"no active API key {key_id!r} in {org!r}")
    out.print(f"API key {key_id} revoked")


# Reading ---------------------------------------------------------------------------------------


@app.command()
def accounts(as_json: JsonOpt = False) -> None:
    """List accounts with their state and reason."""

    async def body(runtime: Runtime) -> list[views.AccountDoc]:
        now = runtime.clock()
        ahead = runtime.settings.refresh_ahead
        return [views.account_dict(a, now, ahead) for a in await runtime.store.accounts()]

    rows = _with_runtime(body)
    if as_json:
        _print_json({"accounts": rows})
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


@app.command()
def refresh(
    account: Annotated[str, typer.Argument(help="Account id, label or eBay username.")],
    debug: Annotated[bool, typer.Option("--debug", help="Show the masked exchange.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Refresh one account now (trigger admin, or debug with --debug)."""
    trigger = Trigger.DEBUG if debug else Trigger.ADMIN

    async def body(runtime: Runtime) -> tuple[bool, views.RefreshResultDoc]:
        account_id = await runtime.store.resolve_account(account)
        result = await runtime.refresher.refresh(account_id, trigger, actor="cli")
        exchange = views.exchange_dict(await runtime.refresher.exchange_of(result))
        return result.ok, views.refresh_result_dict(result, exchange)

    ok, doc = _with_runtime(body)
    if as_json:
        _print_json(doc)
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
    _exit(EXIT_OK if ok else EXIT_FAILED)


@app.command()
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

    async def body(runtime: Runtime) -> None:
        account_id = await runtime.store.resolve_account(account) if account else None
        filters: dict[str, Any] = {
            "account_id": account_id,
            "trigger": trigger.value if trigger else None,
            "outcome": outcome,
        }
        rows = await runtime.journal.exchanges(limit=limit, **filters)
        if as_json and not follow:
            _print_json({"entries": [views.exchange_row_dict(r) for r in rows]})
            return
        _emit(rows, as_json, full)
        last_id = rows[0].id if rows else 0
        while follow:
            await asyncio.sleep(FOLLOW_POLL_S)
            new = await runtime.journal.exchanges(limit=1000, after_id=last_id, **filters)
            if new:
                _emit(new, as_json, full)
                last_id = new[0].id

    _with_runtime(body)


def _emit(rows: list[Any], as_json: bool, full: bool) -> None:
    for row in rows:
        if as_json:
            sys.stdout.write(json.dumps(views.exchange_row_dict(row), ensure_ascii=False) + "\n")
            continue
        out.print(views.exchange_head(row), markup=False)
        if full or not row.sent:
            for line in views.exchange_lines(row.request, row.response, row.error):
                out.print("    " + line, markup=False)
    sys.stdout.flush()


@inspect_app.command("tokens")
def inspect_tokens(as_json: JsonOpt = False) -> None:
    """Per account: ciphertext prefix and key, does it decrypt, masked plaintext and fingerprint."""

    async def body(runtime: Runtime) -> list[dict[str, Any]]:
        ring = runtime.keys.ring
        result = []
        for a in await runtime.store.accounts():
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

    rows = _with_runtime(body)
    if as_json:
        _print_json({"tokens": rows})
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


@inspect_app.command("runtime")
def inspect_runtime(
    attempts: Annotated[int, typer.Option(min=1, max=100, help="Attempts per account.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """Worker heartbeats (with staleness) and the last attempts of every account."""

    async def body(runtime: Runtime) -> views.RuntimeDoc:
        now = runtime.clock()
        beats = [views.heartbeat_dict(h, now) for h in await runtime.heartbeats.all()]
        per_account: list[views.AccountAttemptsDoc] = []
        for a in await runtime.store.accounts():
            per_account.append(
                {
                    "id": a.account_id,
                    "label": a.label,
                    "state": a.state.value,
                    "reason": a.state_reason,
                    "attempts": [
                        views.attempt_dict(t)
                        for t in await runtime.journal.attempts(a.account_id, attempts)
                    ],
                }
            )
        usage = await runtime.journal.quota_usage(now - quota.WINDOW)
        return {
            "heartbeats": beats,
            "accounts_by_state": await runtime.store.count_by_state(),
            "due_now": await runtime.store.due_count(now),
            "quota": quota.QuotaState(usage, runtime.settings.quota).to_dict(),
            "accounts": per_account,
        }

    doc = _with_runtime(body)
    if as_json:
        _print_json(doc)
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


@app.command("policy")
def policy_command(
    account: Annotated[str, typer.Argument(help="Account id, label or eBay username.")],
    value: Annotated[
        str, typer.Argument(help="auto, proactive, on_demand, or default (the global setting).")
    ],
) -> None:
    """Set an account's refresh policy (see README: refresh policies)."""
    if value != "default" and value not in {p.value for p in policy.RefreshPolicy}:
        raise UsageError(f"unknown policy {value!r}: auto, proactive, on_demand or default")

    async def body(runtime: Runtime) -> str:
        account_id = await runtime.store.resolve_account(account)
        row = await runtime.store.account_token(account_id)
        assert row is not None
        chosen = None if value == "default" else value
        config = runtime.settings.policy
        now = runtime.clock()
        due = policy.schedule(
            policy.effective(chosen, config),
            access_expires_at=row.access_expires_at,
            last_used_at=row.last_used_at,
            last_success_at=row.last_success_at,
            now=now,
            config=config,
        )
        await runtime.store.set_policy(account_id, chosen, due.next_attempt_at)
        when = views.iso(due.next_attempt_at) or "only on demand"
        return f"account #{account_id}: policy {value}; next background refresh {when}"

    out.print(_with_runtime(body))


@app.command()
def token(
    account: Annotated[str, typer.Argument(help="Account id, label or eBay username.")],
    as_json: JsonOpt = False,
) -> None:
    """Print a valid access token (refreshing on demand). Its job is to print a secret."""

    async def body(runtime: Runtime) -> views.AccessTokenDoc:
        account_id = await runtime.store.resolve_account(account)
        return views.access_token_dict(await runtime.refresher.get_access_token(account_id))

    doc = _with_runtime(body)
    if as_json:
        _print_json(doc)
    else:
        sys.stdout.write(doc["access_token"] + "\n")


# Entry point ------------------------------------------------------------------------------------

_USAGE_ERRORS = (ConfigError, KeyRingError, UsageError, NotFound, SchemaMissing)


# -- commands of later concerns (webhooks, retention, keys rotate/check), one block each --

webhooks_app = typer.Typer(no_args_is_help=True, help="Webhook endpoints (docs/webhooks.md).")
app.add_typer(webhooks_app, name="webhooks")


@webhooks_app.command("add")
def webhooks_add(
    org: OrgOpt,
    url: Annotated[str, typer.Argument(help="http:// or https:// URL that receives events.")],
    description: Annotated[str, typer.Option("--description", help="What it is for.")] = "",
) -> None:
    """Add a webhook endpoint; its signing secret is printed once."""
    from ebay_connector.web.api import webhooks as webhooks_api

    async def body(runtime: Runtime) -> tuple[Any, str]:
        organization_id = await users.organization_by_name(runtime.db, org)
        return await webhooks_api.create_endpoint(runtime, organization_id, url, description)

    row, secret = _with_runtime(body)
    err.print(f"webhook #{row.id} {row.url} — its signing secret, shown this once:", markup=False)
    sys.stdout.write(secret + "\n")


@webhooks_app.command("list")
def webhooks_list(org: OrgOpt, as_json: JsonOpt = False) -> None:
    """List an organization's webhook endpoints (never their secrets)."""
    from ebay_connector.db import outbox

    async def body(runtime: Runtime) -> list[outbox.EndpointRow]:
        organization_id = await users.organization_by_name(runtime.db, org)
        return await outbox.Outbox(runtime.db).endpoints(organization_id)

    docs: list[dict[str, Any]] = [
        {
            "id": r.id,
            "url": r.url,
            "description": r.description,
            "created_at": views.iso(r.created_at),
        }
        for r in _with_runtime(body)
    ]
    if as_json:
        _print_json({"webhooks": docs})
        return
    table = Table("id", "url", "description", "created")
    for d in docs:
        table.add_row(str(d["id"]), d["url"], d["description"], d["created_at"] or "-")
    out.print(table)


@webhooks_app.command("remove")
def webhooks_remove(
    org: OrgOpt, endpoint_id: Annotated[int, typer.Argument(help="The endpoint id (see list).")]
) -> None:
    """Remove a webhook endpoint and its delivery log."""
    from ebay_connector.db import outbox

    async def body(runtime: Runtime) -> bool:
        organization_id = await users.organization_by_name(runtime.db, org)
        return await outbox.Outbox(runtime.db).delete_endpoint(organization_id, endpoint_id)

    if not _with_runtime(body):
        raise NotFound(f"no webhook {endpoint_id} in {org!r}")
    out.print(f"webhook #{endpoint_id} removed")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; every ConnectorError becomes one line and an exit code."""
    try:
        # Standalone mode: Typer reports its own usage errors (exit 2) and raises SystemExit.
        app(args=argv, prog_name="ebay-connector")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_USAGE)
    except NeedsReconnect as exc:
        err.print(f"error: {exc.code}: {exc.message}", markup=False)
        return EXIT_FAILED
    except _USAGE_ERRORS as exc:
        err.print(f"error: {exc.code}: {exc.message}", markup=False)
        return EXIT_USAGE
    except ConnectorError as exc:
        err.print(f"error: {exc.code}: {exc.message}", markup=False)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return EXIT_OK

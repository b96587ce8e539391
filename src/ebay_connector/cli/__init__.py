"""The ``ebay-connector`` command line: one command per operator task.

Exit codes: 0 success · 1 a failed outcome · 2 usage or configuration error. An error is one
readable line on stderr (``error: <code>: <message>``); reading commands take ``--json``.

This module is the table of commands; each lives in the module of its concern and imports what it
needs when it runs, so ``--help`` never loads the web stack, the emulator or the eBay client.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ebay_connector import log
from ebay_connector.cli import accounts, doctor, keys, people, running, webhooks
from ebay_connector.cli.console import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, set_log_format
from ebay_connector.errors import (
    ConfigError,
    ConnectorError,
    KeyRingError,
    NeedsReconnect,
    NotFound,
    SchemaMissing,
    UsageError,
)

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # usage errors as plain lines a script can read
    add_completion=False,
    help="Connect eBay seller accounts over OAuth and keep their tokens alive.",
)


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
    set_log_format(log_format)


def _group(name: str, help_text: str) -> typer.Typer:
    group = typer.Typer(no_args_is_help=True, help=help_text)
    app.add_typer(group, name=name)
    return group


# Running
app.command()(running.demo)
app.command("serve")(running.serve_command)
app.command()(running.worker)
app.command()(running.emulator)

# Checking a deployment
app.command()(doctor.doctor)

# Database and keys
_group("db", "Database schema.").command("upgrade")(keys.db_upgrade)
keys_group = _group("keys", "Token encryption keys.")
keys_group.command("generate")(keys.keys_generate)
keys_group.command("rotate")(keys.keys_rotate)
keys_group.command("check")(keys.keys_check)
keys_group.command("remove")(keys.keys_remove)

# Organizations, people, programs
orgs_group = _group("orgs", "Organizations.")
orgs_group.command("create")(people.orgs_create)
return_urls_group = typer.Typer(
    no_args_is_help=True, help="Where connect sessions may send sellers back (docs/programs.md)."
)
orgs_group.add_typer(return_urls_group, name="return-urls")
return_urls_group.command("add")(people.return_urls_add)
return_urls_group.command("list")(people.return_urls_list)
return_urls_group.command("remove")(people.return_urls_remove)
users_group = _group("users", "People who sign in.")
users_group.command("create")(people.users_create)
users_group.command("set-password")(people.users_set_password)
users_group.command("set-role")(people.users_set_role)
users_group.command("remove")(people.users_remove)
api_keys_group = _group("api-keys", "Programs' API keys.")
api_keys_group.command("create")(people.api_keys_create)
api_keys_group.command("list")(people.api_keys_list)
api_keys_group.command("revoke")(people.api_keys_revoke)

# Accounts
app.command()(accounts.accounts)
app.command()(accounts.refresh)
app.command()(accounts.logs)
inspect_group = _group("inspect", "Diagnostics (masked).")
inspect_group.command("tokens")(accounts.inspect_tokens)
inspect_group.command("runtime")(accounts.inspect_runtime)
app.command("policy")(accounts.policy_command)
app.command()(accounts.token)

# Webhooks
webhooks_group = _group("webhooks", "Webhook endpoints (docs/webhooks.md).")
webhooks_group.command("add")(webhooks.webhooks_add)
webhooks_group.command("list")(webhooks.webhooks_list)
webhooks_group.command("remove")(webhooks.webhooks_remove)

_USAGE_ERRORS = (ConfigError, KeyRingError, UsageError, NotFound, SchemaMissing)


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

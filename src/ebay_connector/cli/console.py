"""What every command shares: the output streams, exit codes, settings and the runtime.

Everything heavy (settings, the database, the runtime) is imported when a command runs, not when
the CLI starts: ``--help`` and the light commands then start in a fraction of the time (see
docs/decisions.md, "CLI start-up").
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from ebay_connector import log, loop

if TYPE_CHECKING:
    from ebay_connector.db.database import Database
    from ebay_connector.records import Records
    from ebay_connector.runtime import Runtime
    from ebay_connector.settings import Settings

T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

# Piped output (scripts, tests) gets wide lines instead of Rich's 80-column default.
PIPED_WIDTH = 200
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else PIPED_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
OrgOpt = Annotated[str, typer.Option("--org", help="Organization name.")]


def settings() -> Settings:
    from ebay_connector.settings import load

    return load()


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return loop.run(coro)


def with_runtime(body: Callable[[Runtime], Awaitable[T]]) -> T:
    """Run ``body`` with the full runtime of the configured deployment."""
    from ebay_connector.runtime import open_runtime

    conf = settings()

    async def main() -> T:
        async with open_runtime(conf) as runtime:
            return await body(runtime)

    return run(main())


def with_records(body: Callable[[Records], Awaitable[T]]) -> T:
    """Run ``body`` with the stored state only: for commands that read and never call eBay."""
    from ebay_connector.records import open_records

    conf = settings()

    async def main() -> T:
        async with open_records(conf) as records:
            return await body(records)

    return run(main())


def with_database(body: Callable[[Database], Awaitable[T]]) -> T:
    """Run ``body`` on the database alone, without a runtime: the keys commands must run (to
    diagnose and repair) when the runtime's start-up key check refuses the ring."""
    from ebay_connector.db.database import Database

    conf = settings()

    async def main() -> T:
        db = Database.open(conf.database_url, pool_size=2)
        try:
            return await body(db)
        finally:
            await db.close()

    return run(main())


def exit_with(code: int) -> NoReturn:
    raise typer.Exit(code)


# --log-format as given on this invocation (None: EBAY_CONNECTOR_LOG_FORMAT decides).
_log_format_flag: log.LogFormat | None = None


def set_log_format(log_format: log.LogFormat | None) -> None:
    global _log_format_flag
    _log_format_flag = log_format
    if log_format is not None:
        # Every command's warnings follow the flag; serve/demo/worker then log at INFO.
        log.configure(log_format, logging.WARNING)


def configure_logging(conf: Settings) -> None:
    log.configure(_log_format_flag or log.LogFormat(conf.log_format), logging.INFO)

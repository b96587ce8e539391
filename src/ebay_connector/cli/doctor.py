"""``doctor``: check the configured deployment end to end, changing nothing."""

from __future__ import annotations

from typing import Annotated

import typer

from ebay_connector.cli.console import (
    EXIT_FAILED,
    EXIT_OK,
    JsonOpt,
    exit_with,
    out,
    print_json,
    run,
    settings,
)

STATUS_WIDTH = 4
NAME_WIDTH = 16


def doctor(
    full: Annotated[
        bool,
        typer.Option(
            "--full", help="Decrypt every stored secret (like `keys check`), not a sample."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check settings, database, key ring, eBay keyset, RuName, callback, deletion endpoint,
    workers, clock and quota: one line per check (ok / warn / fail). Exit 1 if one fails."""
    from ebay_connector.runtime import open_doctor

    conf = settings()

    async def main() -> dict[str, object]:
        async with open_doctor(conf) as checkup:
            return (await checkup.run(full=full)).to_dict()

    report = run(main())
    checks = report["checks"]
    assert isinstance(checks, list)
    if as_json:
        print_json(report)
    else:
        for check in checks:
            remedy = f" → {check['remedy']}" if check["remedy"] else ""
            out.print(
                f"{check['status']:<{STATUS_WIDTH}} {check['name']:<{NAME_WIDTH}} "
                f"{check['detail']}{remedy}",
                markup=False,
            )
    exit_with(EXIT_OK if report["ok"] else EXIT_FAILED)

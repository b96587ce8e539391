"""Webhook endpoints of an organization: add (secret printed once), list, remove."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from ebay_connector.cli.console import JsonOpt, OrgOpt, err, out, print_json, with_runtime
from ebay_connector.cli.people import organization_by_name
from ebay_connector.errors import NotFound

if TYPE_CHECKING:
    from ebay_connector.db.outbox import EndpointRow
    from ebay_connector.runtime import Runtime


def webhooks_add(
    org: OrgOpt,
    url: Annotated[str, typer.Argument(help="http:// or https:// URL that receives events.")],
    description: Annotated[str, typer.Option("--description", help="What it is for.")] = "",
) -> None:
    """Add a webhook endpoint; its signing secret is printed once."""

    async def body(runtime: Runtime) -> tuple[EndpointRow, str]:
        organization_id = await organization_by_name(runtime.db, org)
        return await runtime.webhooks.create(organization_id, url, description)

    row, secret = with_runtime(body)
    err.print(f"webhook #{row.id} {row.url} — its signing secret, shown this once:", markup=False)
    sys.stdout.write(secret + "\n")


def webhooks_list(org: OrgOpt, as_json: JsonOpt = False) -> None:
    """List an organization's webhook endpoints (never their secrets)."""
    from ebay_connector.web import views

    async def body(runtime: Runtime) -> list[EndpointRow]:
        organization_id = await organization_by_name(runtime.db, org)
        return await runtime.webhooks.endpoints(organization_id)

    docs: list[dict[str, Any]] = [
        {
            "id": r.id,
            "url": r.url,
            "description": r.description,
            "created_at": views.iso(r.created_at),
        }
        for r in with_runtime(body)
    ]
    if as_json:
        print_json({"webhooks": docs})
        return
    table = Table("id", "url", "description", "created")
    for d in docs:
        table.add_row(str(d["id"]), d["url"], d["description"], d["created_at"] or "-")
    out.print(table)


def webhooks_remove(
    org: OrgOpt,
    endpoint_id: Annotated[
        int, typer.Argument(min=1, max=2**31 - 1, help="The endpoint id (see list).")
    ],
) -> None:
    """Remove a webhook endpoint and its delivery log."""

    async def body(runtime: Runtime) -> bool:
        organization_id = await organization_by_name(runtime.db, org)
        return await runtime.webhooks.remove(organization_id, endpoint_id)

    if not with_runtime(body):
        raise NotFound(f"no webhook {endpoint_id} in {org!r}")
    out.print(f"webhook #{endpoint_id} removed")

"""Organizations, the people who sign in, and programs' API keys."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from ebay_connector.cli.console import (
    JsonOpt,
    OrgOpt,
    err,
    out,
    print_json,
    with_records,
    with_runtime,
)
from ebay_connector.core.roles import Role
from ebay_connector.errors import NotFound, UsageError

if TYPE_CHECKING:
    from ebay_connector.db.api_keys import ApiKeyRow
    from ebay_connector.db.database import Database
    from ebay_connector.db.users import UserRow
    from ebay_connector.records import Records
    from ebay_connector.runtime import Runtime


async def organization_by_name(db: Database, name: str) -> int:
    from ebay_connector.db import users

    return await users.organization_by_name(db, name)


def orgs_create(name: Annotated[str, typer.Argument(help="Organization name.")]) -> None:
    """Create an organization."""
    if not name.strip() or len(name) > 200:
        raise UsageError("an organization name has 1 to 200 characters")

    async def body(records: Records) -> int:
        if await records.store.organization_id(name) is not None:
            raise UsageError(f"organization {name!r} already exists")
        return await records.store.create_organization(name)

    out.print(f"organization #{with_records(body)} {name!r} created")


def return_urls_add(
    org: OrgOpt,
    url: Annotated[
        str, typer.Argument(help="Origin and path prefix, e.g. https://app.example.com/ebay")
    ],
) -> None:
    """Allow connect sessions to send sellers back to URL (exact origin, path prefix)."""
    from ebay_connector.core import return_urls

    try:
        entry = return_urls.normalize_entry(url)
    except ValueError as exc:
        raise UsageError(f"URL {exc}") from exc

    async def body(records: Records) -> bool:
        from ebay_connector.db.return_urls import ReturnUrls

        organization_id = await organization_by_name(records.db, org)
        return await ReturnUrls(records.db).add(organization_id, entry)

    added = with_records(body)
    out.print(f"return URL {entry} {'allowed' if added else 'was already allowed'} for {org!r}")


def return_urls_list(org: OrgOpt, as_json: JsonOpt = False) -> None:
    """List the return URLs connect sessions of an organization may send sellers to."""

    async def body(records: Records) -> list[str]:
        from ebay_connector.db.return_urls import ReturnUrls

        organization_id = await organization_by_name(records.db, org)
        return await ReturnUrls(records.db).list(organization_id)

    urls = with_records(body)
    if as_json:
        print_json({"return_urls": urls})
        return
    for url in urls:
        out.print(url, markup=False)


def return_urls_remove(
    org: OrgOpt, url: Annotated[str, typer.Argument(help="An allowed URL (see list).")]
) -> None:
    """Stop allowing URL; sessions already created keep their return URL."""
    from ebay_connector.core import return_urls

    try:
        entry = return_urls.normalize_entry(url)
    except ValueError as exc:
        raise UsageError(f"URL {exc}") from exc

    async def body(records: Records) -> bool:
        from ebay_connector.db.return_urls import ReturnUrls

        organization_id = await organization_by_name(records.db, org)
        return await ReturnUrls(records.db).remove(organization_id, entry)

    if not with_records(body):
        raise NotFound(f"{entry} is not an allowed return URL of {org!r}")
    out.print(f"return URL {entry} removed from {org!r}")


def users_create(
    org: OrgOpt,
    email: Annotated[str, typer.Option("--email", help="E-mail address (the sign-in name).")],
    role: Annotated[Role, typer.Option("--role", help="admin, viewer or operator.")],
    password: Annotated[
        str | None, typer.Option("--password", help="Prompted for when not given.")
    ] = None,
) -> None:
    """Create a user who signs in to the web UI and API."""
    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)

    async def body(runtime: Runtime) -> UserRow:
        organization_id = await organization_by_name(runtime.db, org)
        return await runtime.users.create(organization_id, email, role, password)

    user = with_runtime(body)
    out.print(f"user #{user.id} {user.email} ({user.role.value}) created in {org!r}")


EmailOpt = Annotated[str, typer.Option("--email", help="The user's e-mail address.")]


def users_set_password(
    email: EmailOpt,
    password: Annotated[
        str | None, typer.Option("--password", help="Prompted for when not given.")
    ] = None,
) -> None:
    """Set a user's password; every session of the user ends now."""
    if password is None:
        password = typer.prompt("New password", hide_input=True, confirmation_prompt=True)

    async def body(runtime: Runtime) -> UserRow:
        user = await runtime.users.by_email(email)
        await runtime.users.set_password(user.id, password)
        return user

    user = with_runtime(body)
    out.print(f"password of {user.email} changed; their sessions have ended")


def users_set_role(
    email: EmailOpt,
    role: Annotated[Role, typer.Option("--role", help="admin, viewer or operator.")],
) -> None:
    """Change a user's role; every session of the user ends now."""

    async def body(runtime: Runtime) -> UserRow:
        user = await runtime.users.by_email(email)
        await runtime.users.set_role(user.id, role)
        return user

    user = with_runtime(body)
    out.print(f"{user.email} is now {role.value}; their sessions have ended")


def users_remove(email: EmailOpt) -> None:
    """Remove a user; their sessions end now."""

    async def body(runtime: Runtime) -> UserRow:
        user = await runtime.users.by_email(email)
        await runtime.users.remove(user.id)
        return user

    out.print(f"user {with_runtime(body).email} removed")


def api_keys_create(
    org: OrgOpt,
    name: Annotated[str, typer.Option("--name", help="What the key is for.")] = "program",
    tokens: Annotated[
        bool, typer.Option("--tokens", help="Allow this key to read access tokens.")
    ] = False,
    connect: Annotated[
        bool,
        typer.Option("--connect", help="Allow this key to create connect sessions for sellers."),
    ] = False,
    proxy: Annotated[
        bool, typer.Option("--proxy", help="Allow this key to call eBay through the proxy.")
    ] = False,
) -> None:
    """Create an API key; it is printed once and cannot be shown again.

    Every key lists its organization's accounts; each other permission is granted by its flag."""

    async def body(runtime: Runtime) -> tuple[ApiKeyRow, str]:
        organization_id = await organization_by_name(runtime.db, org)
        return await runtime.api_keys.create(
            organization_id, name, can_read_tokens=tokens, can_connect=connect, can_proxy=proxy
        )

    row, full = with_runtime(body)
    err.print(
        f"API key {row.key_id} ({_permissions(row)}) — store it now, it is not shown again:",
        markup=False,
    )
    sys.stdout.write(full + "\n")


def _permissions(row: ApiKeyRow) -> str:
    granted = [
        name
        for name, allowed in (
            ("tokens", row.can_read_tokens),
            ("connect", row.can_connect),
            ("proxy", row.can_proxy),
        )
        if allowed
    ]
    return "may " + ", ".join(granted) if granted else "list accounts only"


def api_keys_list(org: OrgOpt, as_json: JsonOpt = False) -> None:
    """List an organization's API keys (never the keys themselves)."""
    from ebay_connector.web import views

    async def body(runtime: Runtime) -> list[ApiKeyRow]:
        organization_id = await organization_by_name(runtime.db, org)
        return await runtime.api_keys.list(organization_id)

    rows = with_runtime(body)
    docs: list[dict[str, Any]] = [
        {
            "key_id": r.key_id,
            "name": r.name,
            "can_read_tokens": r.can_read_tokens,
            "can_connect": r.can_connect,
            "can_proxy": r.can_proxy,
            "created_at": views.iso(r.created_at),
            "last_used_at": views.iso(r.last_used_at),
            "revoked_at": views.iso(r.revoked_at),
        }
        for r in rows
    ]
    if as_json:
        print_json({"api_keys": docs})
        return
    table = Table("key id", "name", "tokens", "connect", "proxy", "created", "last used", "revoked")
    for d in docs:
        table.add_row(
            d["key_id"],
            d["name"],
            "yes" if d["can_read_tokens"] else "no",
            "yes" if d["can_connect"] else "no",
            "yes" if d["can_proxy"] else "no",
            d["created_at"] or "-",
            d["last_used_at"] or "-",
            d["revoked_at"] or "-",
        )
    out.print(table)


def api_keys_revoke(
    org: OrgOpt, key_id: Annotated[str, typer.Argument(help="The key id (see list).")]
) -> None:
    """Revoke an API key; programs using it get 401 from now on."""

    async def body(runtime: Runtime) -> bool:
        organization_id = await organization_by_name(runtime.db, org)
        return await runtime.api_keys.revoke(organization_id, key_id)

    if not with_runtime(body):
        raise NotFound(f"no active API key {key_id!r} in {org!r}")
    out.print(f"API key {key_id} revoked")

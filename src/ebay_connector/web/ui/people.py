"""The people of an organization, managed by its admins: who signs in, with which role.

The same calls as the CLI's ``users create``; a role change or removal goes through
``Users.change_member`` (``core.roles.refusal``): nobody removes themselves, the last admin
stays, and only an operator grants the operator role."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response

from ebay_connector.core.roles import Role
from ebay_connector.db.users import UserRow
from ebay_connector.errors import MemberChangeRefused, NotFound, UsageError
from ebay_connector.web.api import schemas
from ebay_connector.web.api.auth import Admin
from ebay_connector.web.api.state import runtime_of
from ebay_connector.web.ui.pages import Cookie, Me, back, me_of, page

router = APIRouter(include_in_schema=False)
UserId = Annotated[int, PathParam(ge=1, le=2**31 - 1), schemas.DIGITS]
# Longer than any e-mail accepted, so an over-long one reaches the rule that says why.
TYPED_MAX = 1000


def grantable(me: Me) -> list[str]:
    roles = [Role.ADMIN.value, Role.VIEWER.value]
    return [*roles, Role.OPERATOR.value] if me.operator else roles


def forbidden(request: Request, me: Me) -> Response:
    response = page(
        request,
        "forbidden.html",
        me,
        what="The people of an organization are managed by its admins.",
    )
    response.status_code = 403
    return response


async def render(
    request: Request,
    me: Me,
    *,
    error: str | None = None,
    status: int = 200,
    typed_email: str = "",
    typed_role: str = Role.VIEWER.value,
) -> Response:
    people = await runtime_of(request).users.list(me.organization_id)
    response = page(
        request,
        "users.html",
        me,
        people=people,
        roles=grantable(me),
        error=error,
        typed_email=typed_email,
        typed_role=typed_role,
    )
    response.status_code = status
    return response


@router.get("/users")
async def users_page(request: Request, cookie: Cookie) -> Response:
    me = await me_of(request, cookie)
    if me is None:
        return RedirectResponse("/login", status_code=303)
    if not me.admin:
        return forbidden(request, me)
    return await render(request, me)


async def _me(request: Request, cookie: str | None) -> tuple[Me, UserRow]:
    me = await me_of(request, cookie)
    user = await runtime_of(request).users.get(me.user_id) if me else None
    assert me is not None and user is not None  # Admin: a signed-in admin's session
    return me, user


@router.post("/ui/users")
async def create(
    request: Request,
    principal: Admin,
    cookie: Cookie,
    email: Annotated[str, Form(max_length=TYPED_MAX)] = "",
    role: Annotated[str, Form(max_length=32)] = Role.VIEWER.value,
    password: Annotated[str, Form(max_length=1024)] = "",
) -> Response:
    me, _ = await _me(request, cookie)
    kept = {"typed_email": email, "typed_role": role}
    if role not in grantable(me):
        return await render(request, me, error="Choose admin or viewer.", status=422, **kept)
    try:
        added = await runtime_of(request).users.create(
            principal.organization_id, email, Role(role), password
        )
    except UsageError as exc:
        return await render(request, me, error=_sentence(exc.message), status=422, **kept)
    return back(
        request,
        "/users",
        f"{added.email} can now sign in as {added.role.value} with the password you chose.",
    )


@router.post("/ui/users/{user_id}/role")
async def change_role(
    request: Request,
    user_id: UserId,
    principal: Admin,
    cookie: Cookie,
    role: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    me, by = await _me(request, cookie)
    if role not in [r.value for r in Role]:
        return await render(request, me, error="Choose a role from the list.", status=422)
    return await _change(request, me, by, user_id, Role(role))


@router.post("/ui/users/{user_id}/remove")
async def remove(request: Request, user_id: UserId, principal: Admin, cookie: Cookie) -> Response:
    me, by = await _me(request, cookie)
    return await _change(request, me, by, user_id, None)


async def _change(
    request: Request, me: Me, by: UserRow, user_id: int, role: Role | None
) -> Response:
    try:
        member = await runtime_of(request).users.change_member(
            me.organization_id, user_id, role, by=by
        )
    except MemberChangeRefused as exc:
        return await render(request, me, error=_sentence(exc.message), status=409)
    except NotFound:
        return await render(
            request, me, error="That person is no longer in this organization.", status=404
        )
    if role is None:
        return back(request, "/users", f"{member.email} removed; their sessions have ended.")
    return back(
        request, "/users", f"{member.email} is now {role.value}; their sessions have ended."
    )


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")

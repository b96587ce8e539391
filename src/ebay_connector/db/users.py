"""People: organizations' users, their roles, passwords (argon2) and session versions."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import argon2
import sqlalchemy as sa

from ebay_connector.core import roles
from ebay_connector.core.labels import has_hidden
from ebay_connector.core.roles import Role
from ebay_connector.db import models as m
from ebay_connector.db.database import Database
from ebay_connector.errors import MemberChangeRefused, NotFound, StoreError, UsageError

T = TypeVar("T")
MIN_PASSWORD_LENGTH = 10
_HASHER = argon2.PasswordHasher()
# Hashing costs tens of milliseconds of CPU on several cores (argon2 releases the GIL and runs
# its lanes in threads of its own): off the event loop, in one thread at a lowered priority, so
# forty sign-ins at once queue there instead of stalling every other request. Measured in
# docs/decisions.md, "Password hashing off the event loop".
HASHING_THREADS = 1
HASHING_NICENESS = 10


def _lower_priority() -> None:
    # Linux: a thread's niceness is its own, and argon2's lane threads inherit it.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASHING_NICENESS)


_hashing = ThreadPoolExecutor(
    HASHING_THREADS, thread_name_prefix="argon2", initializer=_lower_priority
)


async def _off_loop(fn: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_hashing, fn, *args)


def _verify(stored: str, password: str) -> bool:
    try:
        return bool(_HASHER.verify(stored, password))
    except argon2.exceptions.VerificationError:
        return False


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the e-mail is unknown, so a miss costs as much as a wrong password.

    Made on first use: hashing costs a quarter of a second, which no command should pay at import.
    """
    return _HASHER.hash("not a password of anybody")


@dataclass(frozen=True)
class UserRow:
    id: int
    organization_id: int
    email: str
    role: Role
    session_version: int = 0


def normalise_email(email: str) -> str:
    return email.strip().lower()


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UsageError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


class Users:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(self, organization_id: int, email: str, role: Role, password: str) -> UserRow:
        check_password(password)
        address = normalise_email(email)
        if "@" not in address or len(address) > 320 or has_hidden(address) or " " in address:
            raise UsageError(f"{email!r} is not an e-mail address")
        try:
            async with self.db.transaction() as conn:
                result = await conn.execute(
                    sa.insert(m.User)
                    .values(
                        organization_id=organization_id,
                        email=address,
                        role=role.value,
                        password_hash=await _off_loop(_HASHER.hash, password),
                        created_at=self.db.clock(),
                    )
                    .returning(m.User.id)
                )
                user_id = int(result.scalar_one())
        except StoreError as exc:
            raise UsageError(f"a user {address!r} already exists") from exc
        return UserRow(user_id, organization_id, address, role)

    async def list(self, organization_id: int) -> list[UserRow]:
        """The organization's people, by e-mail."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(m.User.__table__)
                .where(m.User.organization_id == organization_id)
                .order_by(m.User.email)
            )
            return [_user(r) for r in rows]

    async def change_member(
        self, organization_id: int, user_id: int, role: Role | None, *, by: UserRow
    ) -> UserRow:
        """Give a member of the organization ``role`` (``None``: remove them), as ``by`` asks;
        ``core.roles.refusal`` decides, on the organization's people as they are inside this
        transaction (their rows locked where the database can), so two admins demoting each
        other at once cannot leave it without one. Their sessions end. Answers the member as
        they were; another organization's member is ``NotFound`` like a missing one."""
        async with self.db.transaction() as conn:
            people = [
                _user(r)
                for r in await conn.execute(
                    sa.select(m.User.__table__)
                    .where(m.User.organization_id == organization_id)
                    .with_for_update()
                )
            ]
            member = next((p for p in people if p.id == user_id), None)
            if member is None:
                raise NotFound(f"no user #{user_id} in this organization")
            # The actor as they are now: an admin demoted a moment ago is no longer one.
            actor = next((p for p in people if p.id == by.id), None)
            why = roles.refusal(
                by=actor.role if actor else Role.VIEWER,
                by_self=member.id == by.id,
                current=member.role,
                new=role,
                managers=sum(p.role.manages for p in people),
            )
            if why is not None:
                raise MemberChangeRefused(why)
            if role is None:
                await conn.execute(sa.delete(m.User).where(m.User.id == user_id))
            else:
                await conn.execute(
                    sa.update(m.User)
                    .where(m.User.id == user_id)
                    .values(session_version=m.User.session_version + 1, role=role.value)
                )
        return member

    async def get(self, user_id: int) -> UserRow | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(sa.select(m.User.__table__).where(m.User.id == user_id))
            ).first()
        return None if row is None else _user(row)

    async def managers(self, organization_id: int) -> builtins.list[str]:  # `list` is a method
        """The e-mails of the people who may act on the organization's accounts (a viewer is
        told whom to ask)."""
        roles = [role.value for role in Role if role.manages]
        async with self.db.read() as conn:
            rows = await conn.execute(
                sa.select(m.User.email)
                .where(m.User.organization_id == organization_id, m.User.role.in_(roles))
                .order_by(m.User.email)
            )
            return [str(email) for (email,) in rows.all()]

    async def authenticate(self, email: str, password: str) -> UserRow | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(m.User.__table__).where(m.User.email == normalise_email(email))
                )
            ).first()
        stored = row.password_hash if row is not None and row.password_hash else None
        if not await _off_loop(_verify, stored or await _off_loop(_dummy_hash), password):
            return None
        return None if row is None or stored is None else _user(row)

    async def by_email(self, email: str) -> UserRow:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(m.User.__table__).where(m.User.email == normalise_email(email))
                )
            ).first()
        if row is None:
            raise NotFound(f"no user {normalise_email(email)!r}")
        return _user(row)

    async def end_sessions(self, user_id: int) -> None:
        """Every session of this user ends now (sign-out ends them all, on every device)."""
        await self._update(user_id)

    async def set_password(self, user_id: int, password: str) -> None:
        check_password(password)
        await self._update(user_id, password_hash=await _off_loop(_HASHER.hash, password))

    async def set_role(self, user_id: int, role: Role) -> None:
        await self._update(user_id, role=role.value)

    async def remove(self, user_id: int) -> bool:
        async with self.db.transaction() as conn:
            result = await conn.execute(sa.delete(m.User).where(m.User.id == user_id))
            return bool(result.rowcount)

    async def _update(self, user_id: int, **values: Any) -> None:
        """Change the user and end their sessions, in one statement."""
        async with self.db.transaction() as conn:
            result = await conn.execute(
                sa.update(m.User)
                .where(m.User.id == user_id)
                .values(session_version=m.User.session_version + 1, **values)
            )
        if not result.rowcount:
            raise NotFound(f"no user #{user_id}")


async def organization_by_name(db: Database, name: str) -> int:
    async with db.transaction() as conn:
        value = (
            await conn.execute(sa.select(m.Organization.id).where(m.Organization.name == name))
        ).scalar_one_or_none()
    if value is None:
        raise NotFound(f"no organization named {name!r}")
    return int(value)


def _user(row: sa.Row[tuple[object, ...]]) -> UserRow:
    return UserRow(
        int(row.id),
        int(row.organization_id),
        str(row.email),
        Role(row.role),
        int(row.session_version),
    )

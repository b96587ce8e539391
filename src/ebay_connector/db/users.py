"""People: organizations' users, their roles and passwords (argon2)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import argon2
import sqlalchemy as sa

from ebay_connector.core.roles import Role
from ebay_connector.db import models as m
from ebay_connector.db.database import Database
from ebay_connector.errors import NotFound, StoreError, UsageError

MIN_PASSWORD_LENGTH = 10
_HASHER = argon2.PasswordHasher()


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
        if "@" not in address or len(address) > 320:
            raise UsageError(f"{email!r} is not an e-mail address")
        try:
            async with self.db.transaction() as conn:
                result = await conn.execute(
                    sa.insert(m.User)
                    .values(
                        organization_id=organization_id,
                        email=address,
                        role=role.value,
                        password_hash=_HASHER.hash(password),
                        created_at=self.db.clock(),
                    )
                    .returning(m.User.id)
                )
                user_id = int(result.scalar_one())
        except StoreError as exc:
            raise UsageError(f"a user {address!r} already exists") from exc
        return UserRow(user_id, organization_id, address, role)

    async def get(self, user_id: int) -> UserRow | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(sa.select(m.User.__table__).where(m.User.id == user_id))
            ).first()
        return None if row is None else _user(row)

    async def authenticate(self, email: str, password: str) -> UserRow | None:
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    sa.select(m.User.__table__).where(m.User.email == normalise_email(email))
                )
            ).first()
        stored = row.password_hash if row is not None and row.password_hash else _dummy_hash()
        try:
            _HASHER.verify(stored, password)
        except argon2.exceptions.VerificationError:
            return None
        return None if row is None else _user(row)


async def organization_by_name(db: Database, name: str) -> int:
    async with db.transaction() as conn:
        value = (
            await conn.execute(sa.select(m.Organization.id).where(m.Organization.name == name))
        ).scalar_one_or_none()
    if value is None:
        raise NotFound(f"no organization named {name!r}")
    return int(value)


def _user(row: sa.Row[tuple[object, ...]]) -> UserRow:
    return UserRow(int(row.id), int(row.organization_id), str(row.email), Role(row.role))

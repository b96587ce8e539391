"""Key rotation: every sealed column of the database, re-encrypted online, checked, verified.

The registry :data:`SEALED_COLUMNS` names each column that holds ciphertexts of
:class:`~ebay_connector.keys.crypto.KeyRing` and how to compute the context (associated data) of a
row. Rotation, ``keys check`` and the start-up check walk the same registry, so a new encrypted
column is covered by adding one entry.

Rotation is online: workers keep refreshing while rows are rewritten. Each rewrite is a
compare-and-set on the ciphertext itself (``UPDATE … WHERE <key> AND <column> = <old>``): a row
that a refresh changed meanwhile is left alone (it now holds a new token, sealed with the
writer's primary) and counted, never overwritten with the older token; a refresh that finishes
after the rewrite overwrites it with its newer token, which is what it should do. Ciphertexts
carry random nonces, so equal ciphertext means an unchanged row. The ``version`` of a token row
is not bumped: the token did not change, and waiters use ``version`` to learn of a refresh.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ebay_connector import log
from ebay_connector.db import models as m
from ebay_connector.db.database import Database
from ebay_connector.errors import ConfigError, DecryptFailed, DecryptReason, SchemaMissing
from ebay_connector.keys.crypto import PREFIX, KeyRing, TokenField
from ebay_connector.keys.crypto import token_context as _token_context

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 200  # rows per read and per rewrite transaction
STARTUP_SAMPLE = (
    5  # ciphertexts per column tried at start-up: cheap, and enough to spot a wrong key
)
NOT_ENCRYPTED = "(none)"  # the by-key bucket of values that are not ENC:v1: (never a key id)
# Reasons that mean "this ring is not the ring that sealed it", as opposed to a damaged row.
WRONG_KEY_REASONS = frozenset({DecryptReason.UNKNOWN_KEY, DecryptReason.AUTHENTICATION_FAILED})


@dataclass(frozen=True)
class SealedColumn:
    """One column of ciphertexts: its table, the row key, and the context each row is bound to."""

    field: str  # how reports name the secret, e.g. "access_token"
    table: sa.Table
    key_columns: tuple[str, ...]  # the primary key; also how reports name the row
    column: str  # the ciphertext column
    context: Callable[[Mapping[str, Any]], str]  # key values -> seal context


def _token_column(token_field: TokenField, column: str) -> SealedColumn:
    return SealedColumn(
        field=token_field.value,
        table=m.EbayToken.__table__,  # type: ignore[arg-type]
        key_columns=("account_id",),
        column=column,
        context=lambda key: _token_context(int(key["account_id"]), token_field),
    )


# Refresh tokens first: the start-up check samples the registry in this order, and they are
# what a wrong key would cost.
SEALED_COLUMNS: tuple[SealedColumn, ...] = (
    _token_column(TokenField.REFRESH_TOKEN, "refresh_token_ciphertext"),
    _token_column(TokenField.ACCESS_TOKEN, "access_token_ciphertext"),
    SealedColumn(
        field="webhook_secret",
        table=m.WebhookEndpoint.__table__,  # type: ignore[arg-type]
        key_columns=("id",),
        column="secret_ciphertext",
        context=lambda key: f"webhook/{int(key['id'])}",
    ),
    SealedColumn(
        field="app_token",
        table=m.AppToken.__table__,  # type: ignore[arg-type]
        key_columns=("environment",),
        column="ciphertext",
        context=lambda key: f"app_token/{key['environment']}",
    ),
)


# Reports ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """A ciphertext that does not decrypt: which row and field, why, and the key it names."""

    field: str
    row: Mapping[str, Any]  # the row key, e.g. {"account_id": 3}
    reason: str
    key_id: str | None

    def to_dict(self) -> dict[str, Any]:
        return {**self.row, "field": self.field, "reason": self.reason, "key_id": self.key_id}


@dataclass(frozen=True)
class CheckReport:
    """What ``keys check`` found: ciphertexts per key id, and every one that does not decrypt."""

    total: int
    by_key: Mapping[str, int]
    failures: tuple[Failure, ...]

    @property
    def ok(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "total": self.total,
            "by_key": dict(self.by_key),
            "failures": [f.to_dict() for f in self.failures],
        }


@dataclass
class RotationReport:
    """What ``keys rotate`` did, per run."""

    target: str
    rewritten: int = 0
    changed_meanwhile: int = 0  # a refresh wrote the row between read and rewrite: left alone
    failures: list[Failure] = field(default_factory=list)
    remaining: int = 0  # ciphertexts not under the target after the run (failures included)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "rewritten": self.rewritten,
            "changed_meanwhile": self.changed_meanwhile,
            "failed": len(self.failures),
            "remaining": self.remaining,
            "failures": [f.to_dict() for f in self.failures],
        }


# Queries ----------------------------------------------------------------------------------------


def _key_cols(column: SealedColumn) -> list[sa.ColumnElement[Any]]:
    return [column.table.c[name] for name in column.key_columns]


def _after(column: SealedColumn, last: Sequence[Any] | None) -> sa.ColumnElement[bool]:
    """Keyset pagination: rows after ``last`` in key order."""
    cols = _key_cols(column)
    if last is None:
        return sa.true()
    if len(cols) == 1:
        after: sa.ColumnElement[bool] = cols[0] > last[0]
        return after
    return sa.tuple_(*cols) > sa.tuple_(*last)


def _not_under(column: SealedColumn, key_id: str) -> sa.ColumnElement[bool]:
    # substr, not LIKE: key ids may contain "_", a LIKE wildcard.
    prefix = f"{PREFIX}{key_id}:"
    return sa.func.substr(column.table.c[column.column], 1, len(prefix)) != prefix


async def _batch(
    db: Database,
    column: SealedColumn,
    last: Sequence[Any] | None,
    limit: int,
    *extra: sa.ColumnElement[bool],
) -> list[tuple[dict[str, Any], str]]:
    ct = column.table.c[column.column]
    query = (
        sa.select(*_key_cols(column), ct)
        .where(ct.is_not(None), _after(column, last), *extra)
        .order_by(*_key_cols(column))
        .limit(limit)
    )
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    n = len(column.key_columns)
    return [(dict(zip(column.key_columns, row[:n], strict=True)), str(row[n])) for row in rows]


async def _count(db: Database, column: SealedColumn, *where: sa.ColumnElement[bool]) -> int:
    ct = column.table.c[column.column]
    query = sa.select(sa.func.count()).select_from(column.table).where(ct.is_not(None), *where)
    async with db.read() as conn:
        return int((await conn.execute(query)).scalar_one())


async def _newest(
    db: Database, column: SealedColumn, limit: int
) -> list[tuple[dict[str, Any], str]]:
    ct = column.table.c[column.column]
    query = (
        sa.select(*_key_cols(column), ct)
        .where(ct.is_not(None))
        .order_by(*(c.desc() for c in _key_cols(column)))
        .limit(limit)
    )
    async with db.read() as conn:
        rows = (await conn.execute(query)).all()
    n = len(column.key_columns)
    return [(dict(zip(column.key_columns, row[:n], strict=True)), str(row[n])) for row in rows]


def _failure(
    column: SealedColumn, key: Mapping[str, Any], exc: DecryptFailed, ring: KeyRing, text: str
) -> Failure:
    return Failure(column.field, dict(key), exc.reason.value, ring.key_id_of(text))


# Rotation ---------------------------------------------------------------------------------------


async def pending(db: Database, target: str) -> int:
    """How many ciphertexts are not sealed with ``target`` (what a rotation would rewrite)."""
    return sum([await _count(db, c, _not_under(c, target)) for c in SEALED_COLUMNS])


async def rotate(
    db: Database,
    ring: KeyRing,
    *,
    target: str,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[int], None] = lambda n: None,
    columns: Sequence[SealedColumn] = SEALED_COLUMNS,
) -> RotationReport:
    """Re-seal every ciphertext not under ``target`` with ``target``, ``batch_size`` rows at a time.

    Resumable and idempotent: only rows not yet under ``target`` are read. Rows that do not
    decrypt are reported and left as they are. ``on_batch(n)`` is told after each batch.
    """
    writer = ring.with_primary(target)
    report = RotationReport(target)
    for column in columns:
        last: Sequence[Any] | None = None
        while batch := await _batch(db, column, last, batch_size, _not_under(column, target)):
            last = [batch[-1][0][k] for k in column.key_columns]
            rewrites: list[Rewrite] = []
            for key, text in batch:
                context = column.context(key)
                try:
                    plain = ring.open(text, context=context)
                except DecryptFailed as exc:
                    report.failures.append(_failure(column, key, exc, ring, text))
                    continue
                rewrites.append((key, text, writer.seal(plain, context=context)))
            rewritten = await apply_rewrites(db, column, rewrites)
            report.rewritten += rewritten
            report.changed_meanwhile += len(rewrites) - rewritten
            on_batch(len(batch))
    report.remaining = sum([await _count(db, c, _not_under(c, target)) for c in columns])
    log.event(
        logger,
        "keys.rotated",
        target=target,
        rewritten=report.rewritten,
        changed_meanwhile=report.changed_meanwhile,
        failed=len(report.failures),
        remaining=report.remaining,
    )
    return report


Rewrite = tuple[Mapping[str, Any], str, str]  # (row key, ciphertext read, new ciphertext)


async def apply_rewrites(db: Database, column: SealedColumn, rewrites: Sequence[Rewrite]) -> int:
    """Write each new ciphertext only where the row still holds the one read; how many were.

    One transaction per batch: short, so refreshes queue behind it for milliseconds only.
    """
    ct = column.table.c[column.column]
    done = 0
    async with db.transaction() as conn:
        for key, old, new in rewrites:
            where = [column.table.c[k] == v for k, v in key.items()]
            result = await conn.execute(
                sa.update(column.table).where(*where, ct == old).values({column.column: new})
            )
            done += result.rowcount
    return done


# Check ------------------------------------------------------------------------------------------


async def check(
    db: Database,
    ring: KeyRing,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    columns: Sequence[SealedColumn] = SEALED_COLUMNS,
) -> CheckReport:
    """Decrypt every ciphertext: counts per key id, and each one that fails (never its value)."""
    by_key: dict[str, int] = {}
    failures: list[Failure] = []
    total = 0
    for column in columns:
        last: Sequence[Any] | None = None
        while batch := await _batch(db, column, last, batch_size):
            last = [batch[-1][0][k] for k in column.key_columns]
            for key, text in batch:
                total += 1
                key_id = ring.key_id_of(text) or NOT_ENCRYPTED
                by_key[key_id] = by_key.get(key_id, 0) + 1
                try:
                    ring.open(text, context=column.context(key))
                except DecryptFailed as exc:
                    failures.append(_failure(column, key, exc, ring, text))
    return CheckReport(total, dict(sorted(by_key.items())), tuple(failures))


# Survey (doctor) --------------------------------------------------------------------------------

# Long enough to hold "ENC:v1:<key id of up to 32 characters>:".
_KEY_ID_PREFIX_CHARS = len(PREFIX) + 32 + 1
_OUTSIDE_SAMPLE = 200  # rows outside the ring's keys read per round to name their key ids
_OUTSIDE_ROUNDS = 5


def _under(column: SealedColumn, key_id: str) -> sa.ColumnElement[bool]:
    prefix = f"{PREFIX}{key_id}:"
    return sa.func.substr(column.table.c[column.column], 1, len(prefix)) == prefix


async def key_ids_in_use(
    db: Database, ring: KeyRing, *, columns: Sequence[SealedColumn] = SEALED_COLUMNS
) -> dict[str, int]:
    """Ciphertexts per key id they name, without decrypting or reading whole rows: counted in
    SQL per key of the ring; key ids outside the ring are named from a few rows' prefixes, then
    counted too (values that are no ``ENC:v1:`` ciphertext count under ``(none)``)."""
    by_key: dict[str, int] = {}

    def add(key_id: str, n: int) -> None:
        if n:
            by_key[key_id] = by_key.get(key_id, 0) + n

    for column in columns:
        ct = column.table.c[column.column]
        for key_id in ring.key_ids:
            add(key_id, await _count(db, column, _under(column, key_id)))
        outside = [_not_under(column, k) for k in ring.key_ids]
        for _ in range(_OUTSIDE_ROUNDS):
            query = (
                sa.select(sa.func.substr(ct, 1, _KEY_ID_PREFIX_CHARS))
                .where(ct.is_not(None), *outside)
                .limit(_OUTSIDE_SAMPLE)
            )
            async with db.read() as conn:
                prefixes = [str(r[0]) for r in (await conn.execute(query)).all()]
            if not prefixes:
                break
            named = {ring.key_id_of(text) for text in prefixes}
            for key_id in sorted(k for k in named if k is not None):
                add(key_id, await _count(db, column, _under(column, key_id)))
                outside.append(_not_under(column, key_id))
            if None in named:
                # What is left names no key: count it once, in one bucket.
                add(NOT_ENCRYPTED, await _count(db, column, *outside))
                break
    return dict(sorted(by_key.items()))


async def sample(
    db: Database,
    ring: KeyRing,
    *,
    per_column: int = STARTUP_SAMPLE,
    columns: Sequence[SealedColumn] = SEALED_COLUMNS,
) -> CheckReport:
    """Decrypt the newest ``per_column`` ciphertexts of each column (``check`` does them all)."""
    by_key: dict[str, int] = {}
    failures: list[Failure] = []
    total = 0
    for column in columns:
        for key, text in await _newest(db, column, per_column):
            total += 1
            key_id = ring.key_id_of(text) or NOT_ENCRYPTED
            by_key[key_id] = by_key.get(key_id, 0) + 1
            try:
                ring.open(text, context=column.context(key))
            except DecryptFailed as exc:
                failures.append(_failure(column, key, exc, ring, text))
    return CheckReport(total, dict(sorted(by_key.items())), tuple(failures))


# Start-up ---------------------------------------------------------------------------------------


async def verify_keyring(db: Database, ring: KeyRing, *, setting: str) -> None:
    """Fail fast with one ``ConfigError`` line if ``ring`` decrypts none of a few stored secrets.

    Samples up to :data:`STARTUP_SAMPLE` of the newest rows per column. Only a ring that opens
    none of them, each for a wrong-key reason, is refused: one damaged row must not stop the
    service, but a wrong key would otherwise turn every account into ``decrypt_failed``. An
    empty database, or one without the schema yet, passes.
    """
    tried: list[Failure] = []
    for column in SEALED_COLUMNS:
        try:
            rows = await _newest(db, column, STARTUP_SAMPLE)
        except SchemaMissing:
            return
        for key, text in rows:
            try:
                ring.open(text, context=column.context(key))
            except DecryptFailed as exc:
                tried.append(_failure(column, key, exc, ring, text))
                continue
            return  # one secret opens: this is the right ring
    if not tried or any(f.reason not in WRONG_KEY_REASONS for f in tried):
        return
    named = sorted({f.key_id for f in tried if f.key_id})
    raise ConfigError(
        f"{setting}: the key ring (keys {', '.join(ring.key_ids)}) decrypts none of the "
        f"{len(tried)} stored secrets sampled (sealed with {', '.join(named) or '?'}: "
        f"{', '.join(sorted({f.reason for f in tried}))}) — a wrong or missing key; "
        "`ebay-connector keys check` lists every affected account"
    )

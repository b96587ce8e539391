"""Database schema and token encryption keys: upgrade, generate, rotate, check, remove."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ebay_connector.cli.console import (
    EXIT_FAILED,
    EXIT_OK,
    JsonOpt,
    err,
    exit_with,
    out,
    print_json,
    settings,
    with_database,
)
from ebay_connector.errors import UsageError

if TYPE_CHECKING:
    from ebay_connector.db.database import Database
    from ebay_connector.keys import rotation


def db_upgrade() -> None:
    """Apply the schema migrations (alembic upgrade head)."""
    from ebay_connector.db import migrate
    from ebay_connector.db.database import describe

    conf = settings()
    migrate.upgrade(conf.database_url)
    out.print(f"database at head: {describe(conf.database_url)}")


def keys_generate(
    key_id: Annotated[str, typer.Option("--id", help="Key id (letters, digits, _ and -).")] = "k1",
) -> None:
    """Print a new key for EBAY_CONNECTOR_TOKEN_KEYS (and a fingerprint key). Keep them secret."""
    from ebay_connector.keys import crypto

    entry = crypto.format_key(key_id, crypto.generate_key())
    crypto.KeyRing.from_spec(entry)  # validates the id
    fingerprint = crypto.format_key("fp", crypto.generate_key()).split(":", 1)[1]
    sys.stdout.write(f"EBAY_CONNECTOR_TOKEN_KEYS={entry}\n")
    sys.stdout.write(f"EBAY_CONNECTOR_FINGERPRINT_KEY={fingerprint}\n")


# `ebay_connector.keys.rotation.DEFAULT_BATCH_SIZE` (kept equal by a test); importing rotation
# here would cost every command's start-up the database layer.
ROTATION_BATCH_SIZE = 200
BatchOpt = Annotated[
    int,
    typer.Option("--batch-size", min=1, max=10_000, help="Rows per read and per transaction."),
]


def _row_label(row: dict[str, Any]) -> str:
    return " ".join(f"{k.removesuffix('_id')} {v}" for k, v in row.items())


def _failure_line(f: rotation.Failure) -> str:
    key = f" (key {f.key_id!r})" if f.key_id else ""
    return f"  {_row_label(dict(f.row))} · {f.field} · {f.reason}{key}"


def keys_rotate(
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="Key id to re-encrypt under; it must be in the key ring (default: the "
            "primary). With the local key file and no --to, a new key is added as primary.",
        ),
    ] = None,
    batch_size: BatchOpt = ROTATION_BATCH_SIZE,
    as_json: JsonOpt = False,
) -> None:
    """Re-encrypt every stored secret under one key, online, in batches (resumable)."""
    from rich.progress import Progress

    from ebay_connector.keys import crypto, rotation
    from ebay_connector.keys.source import load_keyring

    conf = settings()
    ring = load_keyring(conf).ring
    if conf.token_keys is None:
        # The local key file: this command adds and promotes the key itself; running processes
        # follow the file (crypto.KeyRing follows its edits), so they need no restart.
        if to is None:
            to = crypto.add_file_key(conf.key_file)
            err.print(f"added key {to} to {conf.key_file} as its primary", markup=False)
        else:
            crypto.promote_file_key(conf.key_file, to)
        ring = load_keyring(conf).ring
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

    report = with_database(body)
    if as_json:
        print_json(report.to_dict())
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
    exit_with(EXIT_FAILED if report.failures else EXIT_OK)


def keys_check(batch_size: BatchOpt = ROTATION_BATCH_SIZE, as_json: JsonOpt = False) -> None:
    """Decrypt every stored secret: counts per key id and, by account, each one that fails."""
    from ebay_connector.keys import rotation
    from ebay_connector.keys.source import load_keyring

    ring = load_keyring(settings()).ring
    report = with_database(lambda db: rotation.check(db, ring, batch_size=batch_size))
    if as_json:
        print_json(report.to_dict())
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
    exit_with(EXIT_OK if report.ok else EXIT_FAILED)


def keys_remove(key_id: Annotated[str, typer.Argument(help="The key id to remove.")]) -> None:
    """Remove a key from the local key file once nothing is sealed with it."""
    from ebay_connector.keys import crypto, rotation
    from ebay_connector.keys.source import load_keyring

    conf = settings()
    if conf.token_keys is not None:
        raise UsageError(
            f"the key ring comes from EBAY_CONNECTOR_TOKEN_KEYS: remove {key_id!r} there once "
            "`keys check` shows nothing under it"
        )
    ring = load_keyring(conf).ring
    report = with_database(lambda db: rotation.check(db, ring))
    in_use = report.by_key.get(key_id, 0)
    if in_use:
        raise UsageError(f"{in_use} stored secrets are still sealed with {key_id!r}: rotate first")
    crypto.remove_file_key(conf.key_file, key_id)
    out.print(f"key {key_id} removed from {conf.key_file}", markup=False)

"""Key rotation, ``keys check`` and the start-up key check, on real SQLite and PostgreSQL.

Rotation is online: a worker cycle refreshes while rows are re-encrypted, and a row a refresh
changed between the rotation's read and its rewrite keeps the refresh's newer token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from ebay_connector.core.exchange import Trigger
from ebay_connector.core.token_state import TokenState
from ebay_connector.db import models as m
from ebay_connector.emulator import Emulator
from ebay_connector.errors import ConfigError
from ebay_connector.keys import crypto, rotation
from ebay_connector.keys.crypto import KeyRing, TokenField
from ebay_connector.runtime import Runtime, open_runtime
from ebay_connector.service.worker import CycleStatus
from tests.conftest import DatabaseTarget, FakeClock, in_thread, make_settings, register_app
from tests.helpers import seed_account

pytestmark = pytest.mark.integration

OLD = crypto.format_key("old", crypto.generate_key())
NEW = crypto.format_key("new", crypto.generate_key())
OTHER = crypto.format_key("other", crypto.generate_key())
FINGERPRINT = crypto.format_key("fp", crypto.generate_key()).split(":", 1)[1]


@contextlib.asynccontextmanager
async def env_runtime(
    database: DatabaseTarget,
    emulator: tuple[Emulator, str],
    tmp_path: Path,
    clock: FakeClock,
    keys: str,
    primary: str | None = None,
) -> AsyncIterator[Runtime]:
    """A runtime whose key ring comes from EBAY_CONNECTOR_TOKEN_KEYS (as in production)."""
    conf = make_settings(
        database,
        emulator[1],
        tmp_path,
        http_timeout_seconds=3,
        token_keys=keys,
        token_primary_key_id=primary,
        fingerprint_key=FINGERPRINT,
    )
    async with open_runtime(conf, clock=clock, rng=random.Random(3), schema=database.schema) as rt:
        yield rt


@pytest.fixture
def registered(emulator: tuple[Emulator, str], tmp_path: Path) -> tuple[Emulator, str]:
    emu, base_url = emulator
    conf = make_settings(DatabaseTarget("sqlite:///unused.db", None, "sqlite"), base_url, tmp_path)
    register_app(emu, conf)
    return emulator


async def connect_many(runtime: Runtime, emu: Emulator, count: int, *, due: bool) -> list[int]:
    """Accounts with tokens the emulator really issued, sealed with the runtime's primary."""
    organization = await runtime.store.create_organization("Rotation org")
    now = runtime.clock()
    ids = []
    for i in range(count):
        account_id, _ = await seed_account(
            runtime,
            emu,
            organization,
            f"rot_{i:03d}",
            access_expires_at=now - timedelta(minutes=1) if due else now + timedelta(hours=2),
            next_attempt_at=now - timedelta(seconds=1) if due else now + timedelta(hours=1),
        )
        ids.append(account_id)
    return ids


async def plaintexts(runtime: Runtime, ring: KeyRing) -> dict[tuple[int, str], str]:
    found = {}
    for a in await runtime.store.accounts():
        for field, ct in (
            (TokenField.ACCESS_TOKEN, a.access_token_ciphertext),
            (TokenField.REFRESH_TOKEN, a.refresh_token_ciphertext),
        ):
            assert ct is not None
            found[(a.account_id, field.value)] = ring.decrypt(
                ct, account_id=a.account_id, field=field
            )
    return found


async def test_rotation_reencrypts_every_token_in_batches_and_a_second_run_has_nothing_to_do(
    database: DatabaseTarget,
    registered: tuple[Emulator, str],
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    async with env_runtime(database, registered, tmp_path, clock, f"{OLD},{NEW}") as rt:
        await connect_many(rt, registered[0], 12, due=False)
        ring = rt.keys.ring
        before = await plaintexts(rt, ring)
        versions = {a.account_id: a.version for a in await rt.store.accounts()}
        assert await rotation.pending(rt.db, "new") == 24

        batches: list[int] = []
        report = await rotation.rotate(
            rt.db, ring, target="new", batch_size=5, on_batch=batches.append
        )
        assert (report.rewritten, report.changed_meanwhile, report.failures) == (24, 0, [])
        assert report.remaining == 0
        assert batches == [5, 5, 2, 5, 5, 2]  # two columns of 12 rows, 5 at a time

        checked = await rotation.check(rt.db, ring)
        assert checked.ok and checked.by_key == {"new": 24}
        only_new = KeyRing.from_spec(NEW, fingerprint_key=FINGERPRINT)
        assert await plaintexts(rt, only_new) == before  # same tokens, new key
        # Not a token change: waiters compare version to learn of a refresh.
        assert {a.account_id: a.version for a in await rt.store.accounts()} == versions

        again: list[int] = []
        second = await rotation.rotate(rt.db, ring, target="new", on_batch=again.append)
        assert (second.rewritten, second.remaining, again) == (0, 0, [])


async def test_a_row_refreshed_between_read_and_rewrite_keeps_the_newer_token(
    database: DatabaseTarget,
    registered: tuple[Emulator, str],
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    """The compare-and-set: the rotation must not write back the token it read."""
    async with env_runtime(database, registered, tmp_path, clock, f"{OLD},{NEW}") as rt:
        [account_id] = await connect_many(rt, registered[0], 1, due=True)
        ring = rt.keys.ring
        column = rotation.SEALED_COLUMNS[1]
        assert column.field == "access_token"
        [(key, read)] = await rotation._batch(rt.db, column, None, 10)
        stale = ring.with_primary("new").seal(
            ring.open(read, context=column.context(key)), context=column.context(key)
        )
        result = await rt.refresher.refresh(account_id, Trigger.ADMIN)  # a worker, meanwhile
        assert result.outcome.value == "ok"
        fresh = (await plaintexts(rt, ring))[(account_id, "access_token")]

        assert await rotation.apply_rewrites(rt.db, column, [(key, read, stale)]) == 0
        assert (await plaintexts(rt, ring))[(account_id, "access_token")] == fresh
        # The next run picks the row up under the new key.
        report = await rotation.rotate(rt.db, ring, target="new")
        assert report.remaining == 0
        assert (await plaintexts(rt, ring))[(account_id, "access_token")] == fresh


async def test_rotation_runs_online_beside_a_refreshing_worker(
    database: DatabaseTarget,
    registered: tuple[Emulator, str],
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    """Step 1 of the procedure: every process has the new key, the primary is still the old."""
    async with env_runtime(database, registered, tmp_path, clock, f"{OLD},{NEW}") as rt:
        ids = await connect_many(rt, registered[0], 40, due=True)
        worker = rt.worker()
        cycle, report = await asyncio.gather(
            worker.run_once(),
            rotation.rotate(rt.db, rt.keys.ring, target="new", batch_size=3),
        )
        assert cycle.status is CycleStatus.OK, cycle
        assert cycle.counts.refreshed == 40
        assert not report.failures
        states = {a.account_id: a.state for a in await rt.store.accounts()}
        assert states == dict.fromkeys(ids, TokenState.ACTIVE)
        # The worker sealed its new access tokens with its primary ("old"); run again.
        await rotation.rotate(rt.db, rt.keys.ring, target="new")
        checked = await rotation.check(rt.db, rt.keys.ring)
        assert checked.ok and checked.by_key == {"new": 80}

    # Old key removed: every process starts and every account still refreshes.
    async with env_runtime(database, registered, tmp_path, clock, NEW) as rt:
        clock.advance(hours=3)
        for account_id in ids[:3]:
            assert (await rt.refresher.refresh(account_id, Trigger.ADMIN)).outcome.value == "ok"


async def test_check_lists_undecryptable_rows_by_account_and_rotation_leaves_them(
    database: DatabaseTarget,
    registered: tuple[Emulator, str],
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    async with env_runtime(database, registered, tmp_path, clock, f"{OLD},{NEW}") as rt:
        a, b, c = await connect_many(rt, registered[0], 3, due=False)
        ring = rt.keys.ring
        # account_token is None only for an unknown id; ``a`` was just connected.
        moved = (await rt.store.account_token(a)).refresh_token_ciphertext  # type: ignore[union-attr]
        assert moved is not None
        await rt.store.set_refresh_ciphertext(b, moved)  # another account's: authentication fails
        foreign = KeyRing.from_spec(OTHER, fingerprint_key=FINGERPRINT)
        await rt.store.set_refresh_ciphertext(
            c, foreign.encrypt("v^1.1#x", account_id=c, field=TokenField.REFRESH_TOKEN)
        )
        checked = await rotation.check(rt.db, ring)
        assert not checked.ok
        assert checked.by_key == {"old": 5, "other": 1}
        assert [f.to_dict() for f in checked.failures] == [
            {
                "account_id": b,
                "field": "refresh_token",
                "reason": "authentication_failed",
                "key_id": "old",
            },
            {"account_id": c, "field": "refresh_token", "reason": "unknown_key", "key_id": "other"},
        ]
        report = await rotation.rotate(rt.db, ring, target="new", batch_size=2)
        assert (report.rewritten, len(report.failures), report.remaining) == (4, 2, 2)
        after = await rt.store.account_token(b)
        assert after is not None and after.refresh_token_ciphertext == moved  # left as it was


async def test_key_ids_in_use_counts_what_check_counts_without_decrypting(
    database: DatabaseTarget,
    registered: tuple[Emulator, str],
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    """doctor's survey: key ids the ring lacks and values that are no ciphertext are named."""
    async with env_runtime(database, registered, tmp_path, clock, f"{OLD},{NEW}") as rt:
        _, b, c, d = await connect_many(rt, registered[0], 4, due=False)
        ring = rt.keys.ring
        foreign = KeyRing.from_spec(f"{OTHER},{crypto.format_key('k_9', crypto.generate_key())}")
        for account, key_id in ((b, "other"), (c, "k_9")):
            await rt.store.set_refresh_ciphertext(
                account,
                foreign.with_primary(key_id).encrypt(
                    "v^1.1#x", account_id=account, field=TokenField.REFRESH_TOKEN
                ),
            )
        await rt.store.set_refresh_ciphertext(d, "v^1.1#a-plaintext-token-never-sealed")
        in_use = await rotation.key_ids_in_use(rt.db, ring)
        assert in_use == (await rotation.check(rt.db, ring)).by_key
        assert in_use == {"(none)": 1, "k_9": 1, "old": 5, "other": 1}
        sampled = await rotation.sample(rt.db, ring, per_column=2)
        assert sampled.total == 4  # two refresh tokens, two access tokens: the newest
        # The newest refresh tokens are d's (no ciphertext) and c's (under a key not in the ring).
        assert sorted((f.row["account_id"], f.reason) for f in sampled.failures) == [
            (c, "unknown_key"),
            (d, "not_encrypted"),
        ]


async def test_a_wrong_key_fails_fast_at_start_but_one_damaged_row_does_not(
    database: DatabaseTarget,
    registered: tuple[Emulator, str],
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    async with env_runtime(database, registered, tmp_path, clock, OLD) as rt:
        first, *_ = await connect_many(rt, registered[0], 8, due=False)
        await rt.store.set_refresh_ciphertext(first, "ENC:v1:gone:" + "A" * 44)

    wrong = crypto.format_key("old", crypto.generate_key())  # same id, another key
    for keys, reason in ((NEW, "unknown_key"), (wrong, "authentication_failed")):
        with pytest.raises(ConfigError) as info:
            async with env_runtime(database, registered, tmp_path, clock, keys):
                pass
        message = info.value.message
        assert message.startswith("EBAY_CONNECTOR_TOKEN_KEYS: the key ring")
        assert reason in message and "keys check" in message and "\n" not in message
        assert keys.split(":", 1)[1] not in message

    async with env_runtime(database, registered, tmp_path, clock, f"{OLD},{NEW}") as rt:
        assert len(await rt.store.accounts()) == 8  # one damaged row: still starts


# The CLI (SQLite: the CLI reads its database from the environment) -----------------------------


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from ebay_connector import cli  # the whole CLI (server, UI) only for the tests that use it

    code = in_thread(cli.main, args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def sqlite_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/cli.db"
    monkeypatch.setenv("EBAY_CONNECTOR_DATABASE_URL", url)
    monkeypatch.setenv("EBAY_CONNECTOR_KEY_FILE", str(tmp_path / "keys" / "keyring.json"))
    from ebay_connector.db import migrate

    in_thread(migrate.upgrade, url)
    return url


async def test_cli_rotates_the_local_key_file_while_a_runtime_keeps_refreshing(
    sqlite_env: str,
    registered: tuple[Emulator, str],
    tmp_path: Path,
    clock: FakeClock,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EBAY_CONNECTOR_EMULATOR_URL", registered[1])
    target = DatabaseTarget(sqlite_env, None, "sqlite")
    conf = make_settings(target, registered[1], tmp_path, http_timeout_seconds=3)
    async with open_runtime(conf, clock=clock, rng=random.Random(5)) as rt:
        ids = await connect_many(rt, registered[0], 7, due=False)
        first_key = rt.keys.ring.primary_id

        code, out, err = run_cli(["keys", "rotate", "--batch-size", "3"], capsys)
        assert code == 0, err
        assert "added key" in err and "14 re-encrypted" in out
        new_key = json.loads(Path(conf.key_file).read_text())["primary"]
        assert new_key != first_key

        code, out, _ = run_cli(["keys", "check", "--json"], capsys)
        assert code == 0 and json.loads(out)["by_key"] == {new_key: 14}
        code, out, _ = run_cli(["keys", "remove", first_key], capsys)
        assert code == 0, out
        assert list(json.loads(Path(conf.key_file).read_text())["keys"]) == [new_key]

        # The running process follows the key file: it reads the new rows, writes with the new key.
        clock.advance(hours=3)
        result = await rt.refresher.refresh(ids[0], Trigger.ADMIN)
        assert result.outcome.value == "ok", result.message
        row = await rt.store.account_token(ids[0])
        assert row is not None and row.access_token_ciphertext is not None
        assert rt.keys.ring.key_id_of(row.access_token_ciphertext) == new_key

        # A failing check exits 1 and names the account, never a secret.
        await rt.store.set_refresh_ciphertext(ids[1], "ENC:v1:gone:" + "A" * 44)
        code, out, _ = run_cli(["keys", "check"], capsys)
        assert code == 1
        assert f"account {ids[1]} · refresh_token · unknown_key (key 'gone')" in out


def test_cli_rotate_needs_the_target_key_deployed_first(
    sqlite_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EBAY_CONNECTOR_TOKEN_KEYS", OLD)
    code, out, err = run_cli(["keys", "rotate", "--to", "new"], capsys)
    assert code == 2 and out == ""
    assert err.strip().startswith("error: usage_error: key 'new' is not in")
    assert len(err.strip().splitlines()) == 1


def test_worker_with_a_wrong_key_exits_2_with_one_line(
    sqlite_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def seed() -> None:
        ring = KeyRing.from_spec(OLD)
        async with rotation_db(sqlite_env) as db, db.transaction() as conn:
            now = db.clock()
            await conn.execute(sa.insert(m.Organization).values(id=1, name="o", created_at=now))
            await conn.execute(
                sa.insert(m.EbayAccount).values(
                    id=1,
                    organization_id=1,
                    environment="emulator",
                    ebay_user_id="u",
                    ebay_username="u",
                    label="u",
                    scopes="s",
                    created_at=now,
                    updated_at=now,
                )
            )
            await conn.execute(
                sa.insert(m.EbayToken).values(
                    account_id=1,
                    refresh_token_ciphertext=ring.encrypt(
                        "v^1.1#r", account_id=1, field=TokenField.REFRESH_TOKEN
                    ),
                    state="active",
                    updated_at=now,
                )
            )

    in_thread(asyncio.run, seed())
    monkeypatch.setenv("EBAY_CONNECTOR_TOKEN_KEYS", NEW)
    code, out, err = run_cli(["worker", "--once"], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: config_invalid: EBAY_CONNECTOR_TOKEN_KEYS: the key ring")
    code, out, _ = run_cli(["keys", "check", "--json"], capsys)  # still runs, to diagnose
    doc: dict[str, Any] = json.loads(out)
    assert code == 1 and doc["failures"][0]["reason"] == "unknown_key"


def test_sandbox_without_an_explicit_key_ring_refuses_to_start(
    sqlite_env: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EBAY_CONNECTOR_EBAY_ENVIRONMENT", "sandbox")
    monkeypatch.setenv("EBAY_CONNECTOR_CLIENT_ID", "App-SBX-1")
    monkeypatch.setenv("EBAY_CONNECTOR_CLIENT_SECRET", "SBX-secret")
    monkeypatch.setenv("EBAY_CONNECTOR_RU_NAME", "ru")
    for command in (["worker", "--once"], ["serve"]):
        code, _out, err = run_cli(command, capsys)
        assert code == 2
        assert err.strip() == (
            "error: config_invalid: EBAY_CONNECTOR_TOKEN_KEYS: required when "
            "EBAY_CONNECTOR_EBAY_ENVIRONMENT=sandbox"
        )
        assert not (Path("keys") / "keyring.json").exists()


@contextlib.asynccontextmanager
async def rotation_db(url: str) -> AsyncIterator[Any]:
    from ebay_connector.db.database import Database

    db = Database.open(url)
    try:
        yield db
    finally:
        await db.close()


async def test_rotation_and_check_cover_webhook_secrets_and_the_app_token(
    database: DatabaseTarget,
    registered: tuple[Emulator, str],
    tmp_path: Path,
    clock: FakeClock,
) -> None:
    from ebay_connector.db.outbox import Outbox
    from ebay_connector.ebay.app_token import AppTokens

    keys = f"{OLD},{NEW}"
    async with env_runtime(database, registered, tmp_path, clock, keys, primary="old") as rt:
        ring = rt.keys.ring
        org = await rt.store.create_organization("Hooks org")
        endpoint = await Outbox(rt.db).create_endpoint(
            org,
            "https://hooks.example/in",
            "orders",
            lambda eid: ring.seal("whsec_rotation_canary", context=f"webhook/{eid}"),
        )
        tokens = AppTokens(
            db=rt.db,
            client=rt.client,
            keyring=ring,
            environment=rt.environment,
            owner="rotation-test",
            clock=rt.clock,
        )
        app_token = await tokens.get()
        checked = await rotation.check(rt.db, ring)
        assert checked.ok and checked.by_key == {"old": 2}

        report = await rotation.rotate(rt.db, ring, target="new")
        assert (report.rewritten, report.failures, report.remaining) == (2, [], 0)

        only_new = KeyRing.from_spec(NEW, fingerprint_key=FINGERPRINT)
        async with rt.db.read() as conn:
            secret_ct = (await conn.execute(sa.select(m.WebhookEndpoint.secret_ciphertext))).one()
            app_ct = (await conn.execute(sa.select(m.AppToken.ciphertext))).one()
        assert only_new.open(secret_ct[0], context=f"webhook/{endpoint.id}") == (
            "whsec_rotation_canary"
        )
        assert app_ct[0] is not None
        assert only_new.open(app_ct[0], context=f"app_token/{rt.environment}") == app_token
        assert (await rotation.check(rt.db, only_new)).by_key == {"new": 2}

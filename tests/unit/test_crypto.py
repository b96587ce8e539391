"""Token encryption: round trips, binding to account and field, rotation, and refusals."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ebay_connector.errors import CryptoError, DecryptFailed, DecryptReason, KeyRingError
from ebay_connector.keys import crypto
from ebay_connector.keys.crypto import KeyRing, TokenField

pytestmark = pytest.mark.unit

TOKEN = "v^1.1#i^1#p^3#r^1#I^3#f^0#t^H4sIAAAAAAAA/+VZf2wbVx2P0yRV1KaMrR1pN8C7"
ACCESS = TokenField.ACCESS_TOKEN
REFRESH = TokenField.REFRESH_TOKEN


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_ring(*key_ids: str, fingerprint_key: bytes | None = None) -> KeyRing:
    keys = {key_id: crypto.generate_key() for key_id in key_ids or ("k1",)}
    return KeyRing(keys, next(iter(keys)), fingerprint_key or secrets.token_bytes(32))


def reason_of(info: pytest.ExceptionInfo[DecryptFailed]) -> DecryptReason:
    assert info.value.code == "decrypt_failed"
    return info.value.reason


def test_round_trip() -> None:
    ring = make_ring()
    text = ring.encrypt(TOKEN, account_id=7, field=ACCESS)
    assert ring.decrypt(text, account_id=7, field=ACCESS) == TOKEN


def test_ciphertext_names_the_primary_key_and_hides_the_token() -> None:
    ring = make_ring("primary", "old")
    text = ring.encrypt(TOKEN, account_id=7, field=ACCESS)
    assert text.startswith("ENC:v1:primary:")
    assert "=" not in text  # base64url without padding
    assert TOKEN not in text
    assert ring.key_id_of(text) == "primary"
    assert ring.key_id_of(TOKEN) is None


def test_two_encryptions_of_one_token_differ_by_nonce() -> None:
    ring = make_ring()
    first = ring.encrypt(TOKEN, account_id=7, field=ACCESS)
    second = ring.encrypt(TOKEN, account_id=7, field=ACCESS)
    assert first != second
    assert unb64(first.split(":")[3])[:12] != unb64(second.split(":")[3])[:12]


@pytest.mark.parametrize(
    ("account_id", "field"), [(8, ACCESS), (7, REFRESH)], ids=["other-account", "other-field"]
)
def test_ciphertext_copied_to_another_row_or_field_does_not_decrypt(
    account_id: int, field: TokenField
) -> None:
    ring = make_ring()
    text = ring.encrypt(TOKEN, account_id=7, field=ACCESS)
    with pytest.raises(DecryptFailed) as info:
        ring.decrypt(text, account_id=account_id, field=field)
    assert reason_of(info) == DecryptReason.AUTHENTICATION_FAILED
    assert f"account {account_id}" in str(info.value)


def test_tampered_byte_fails_authentication() -> None:
    ring = make_ring()
    text = ring.encrypt(TOKEN, account_id=7, field=ACCESS)
    head, payload = text.rsplit(":", 1)
    blob = bytearray(unb64(payload))
    blob[20] ^= 0x01  # inside the ciphertext, past the nonce
    with pytest.raises(DecryptFailed) as info:
        ring.decrypt(f"{head}:{b64(bytes(blob))}", account_id=7, field=ACCESS)
    assert reason_of(info) == DecryptReason.AUTHENTICATION_FAILED


def test_wrong_key_under_the_same_id_fails_authentication() -> None:
    text = make_ring("k1").encrypt(TOKEN, account_id=7, field=ACCESS)
    with pytest.raises(DecryptFailed) as info:
        make_ring("k1").decrypt(text, account_id=7, field=ACCESS)
    assert reason_of(info) == DecryptReason.AUTHENTICATION_FAILED


def test_unknown_key_id_is_named() -> None:
    text = make_ring("gone").encrypt(TOKEN, account_id=7, field=ACCESS)
    with pytest.raises(DecryptFailed) as info:
        make_ring("k1").decrypt(text, account_id=7, field=ACCESS)
    assert reason_of(info) == DecryptReason.UNKNOWN_KEY
    assert "'gone'" in str(info.value)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (TOKEN, DecryptReason.NOT_ENCRYPTED),
        ("", DecryptReason.NOT_ENCRYPTED),
        ("ENC:v2:k1:AAAA", DecryptReason.MALFORMED),
        ("ENC:v1:k1", DecryptReason.MALFORMED),
        ("ENC:v1:bad id!:AAAA", DecryptReason.MALFORMED),
        ("ENC:v1:k1:not*base64", DecryptReason.MALFORMED),
        ("ENC:v1:k1:" + b64(b"too short"), DecryptReason.MALFORMED),
    ],
)
def test_unusable_values_are_refused_with_a_reason(text: str, reason: DecryptReason) -> None:
    with pytest.raises(DecryptFailed) as info:
        make_ring().decrypt(text, account_id=7, field=ACCESS)
    assert reason_of(info) == reason
    assert TOKEN not in str(info.value)


def test_older_key_still_decrypts_after_the_primary_changes() -> None:
    old_ring = make_ring("old")
    text = old_ring.encrypt(TOKEN, account_id=7, field=REFRESH)
    new_ring = old_ring.with_new_primary("new", crypto.generate_key())
    assert new_ring.primary_id == "new"
    assert new_ring.key_ids == ("old", "new")
    assert new_ring.decrypt(text, account_id=7, field=REFRESH) == TOKEN
    assert new_ring.key_id_of(new_ring.encrypt(TOKEN, account_id=7, field=REFRESH)) == "new"
    assert new_ring.fingerprint(TOKEN) == old_ring.fingerprint(TOKEN)


def test_with_new_primary_refuses_to_reuse_an_id_for_another_key() -> None:
    with pytest.raises(KeyRingError, match="'k1'"):
        make_ring("k1").with_new_primary("k1", crypto.generate_key())


def test_doubly_encrypted_token_is_refused_not_returned() -> None:
    """A real system decrypted a token encrypted twice to ``ENC:v1:...`` and sent it to eBay."""
    key = crypto.generate_key()
    ring = KeyRing({"k1": key}, "k1", secrets.token_bytes(32))
    once = ring.encrypt(TOKEN, account_id=7, field=ACCESS)
    nonce = secrets.token_bytes(12)
    aad = b"ebay-connector/v1/7/access_token"
    twice = "ENC:v1:k1:" + b64(nonce + AESGCM(key).encrypt(nonce, once.encode(), aad))
    with pytest.raises(DecryptFailed) as info:
        ring.decrypt(twice, account_id=7, field=ACCESS)
    assert reason_of(info) == DecryptReason.DOUBLY_ENCRYPTED
    assert once not in str(info.value)
    assert "'k1'" in str(info.value)


def test_encrypt_refuses_a_value_that_is_already_encrypted() -> None:
    ring = make_ring()
    once = ring.encrypt(TOKEN, account_id=7, field=ACCESS)
    with pytest.raises(CryptoError) as info:
        ring.encrypt(once, account_id=7, field=ACCESS)
    assert info.value.code == "already_encrypted"
    assert once not in str(info.value)


def test_from_spec_reads_keys_and_defaults_primary_to_the_first() -> None:
    k1, k2 = crypto.generate_key(), crypto.generate_key()
    spec = f"{crypto.format_key('k1', k1)}, {crypto.format_key('k2', k2)}"
    ring = KeyRing.from_spec(spec)
    assert (ring.primary_id, ring.key_ids) == ("k1", ("k1", "k2"))
    assert KeyRing.from_spec(spec, primary_id="k2").primary_id == "k2"
    text = KeyRing({"k1": k1}, "k1", b"x" * 32).encrypt(TOKEN, account_id=1, field=ACCESS)
    assert ring.decrypt(text, account_id=1, field=ACCESS) == TOKEN


def test_default_fingerprint_key_follows_the_primary_unless_set() -> None:
    spec = f"{crypto.format_key('a', crypto.generate_key())},"
    spec += crypto.format_key("b", crypto.generate_key())
    assert KeyRing.from_spec(spec).fingerprint(TOKEN) != KeyRing.from_spec(
        spec, primary_id="b"
    ).fingerprint(TOKEN)
    fp_key = b64(secrets.token_bytes(32))
    assert KeyRing.from_spec(spec, fingerprint_key=fp_key).fingerprint(TOKEN) == (
        KeyRing.from_spec(spec, primary_id="b", fingerprint_key=fp_key).fingerprint(TOKEN)
    )


SPEC_KEY = b64(b"\x42" * 32)


@pytest.mark.parametrize(
    ("spec", "primary", "problem"),
    [
        ("", None, "entry 1 is not"),
        (SPEC_KEY, None, "entry 1 is not"),
        (f"k1:{SPEC_KEY},{SPEC_KEY}", None, "entry 2 is not"),
        (f"bad id!:{SPEC_KEY}", None, "entry 1 has an invalid id"),
        (f"k1:{SPEC_KEY},k1:{SPEC_KEY}", None, "'k1' is listed twice"),
        (f"k1:{SPEC_KEY[:-1]}*", None, "'k1' is not valid base64url"),
        (f"k1:{b64(b'short')}", None, "'k1' is 5 bytes, need 32"),
        (f"k1:{SPEC_KEY}", "k9", "primary key 'k9'"),
    ],
)
def test_from_spec_errors_name_the_problem_but_not_the_key(
    spec: str, primary: str | None, problem: str
) -> None:
    with pytest.raises(KeyRingError) as info:
        KeyRing.from_spec(spec, primary_id=primary)
    message = str(info.value)
    assert problem in message
    assert "\n" not in message
    assert SPEC_KEY[:8] not in message
    assert info.value.code == "keyring_invalid"


def test_fingerprint_key_errors_do_not_show_it() -> None:
    with pytest.raises(KeyRingError, match="fingerprint key") as info:
        KeyRing.from_spec(f"k1:{SPEC_KEY}", fingerprint_key="secret*fp*key")
    assert "secret" not in str(info.value)


def test_repr_shows_key_ids_only() -> None:
    key = crypto.generate_key()
    text = repr(KeyRing({"k1": key}, "k1", b"f" * 32))
    assert "k1" in text
    assert b64(key) not in text
    assert str(key) not in text


def test_fingerprints_are_stable_and_keyed() -> None:
    fp_key = secrets.token_bytes(32)
    ring = make_ring(fingerprint_key=fp_key)
    same = make_ring(fingerprint_key=fp_key)  # other AES keys, same fingerprint key
    other = make_ring(fingerprint_key=secrets.token_bytes(32))
    assert ring.fingerprint(TOKEN) == ring.fingerprint(TOKEN) == same.fingerprint(TOKEN)
    assert len(ring.fingerprint(TOKEN)) == 16
    assert ring.fingerprint(TOKEN) != ring.fingerprint(TOKEN + "x")
    assert ring.fingerprint(TOKEN) != other.fingerprint(TOKEN)


def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "token-keys.json"
    ring, created = KeyRing.load_or_create_file(path)
    assert created
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert ring.primary_id.startswith("local-")
    data = json.loads(path.read_text())
    assert data["version"] == 1
    assert data["primary"] == ring.primary_id

    again, created_again = KeyRing.load_or_create_file(path)
    assert not created_again
    text = ring.encrypt(TOKEN, account_id=3, field=REFRESH)
    assert again.decrypt(text, account_id=3, field=REFRESH) == TOKEN
    assert again.fingerprint(TOKEN) == ring.fingerprint(TOKEN)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_key_file_accessible_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "token-keys.json"
    KeyRing.load_or_create_file(path)
    os.chmod(path, mode)
    with pytest.raises(KeyRingError, match=f"{mode:04o}"):
        KeyRing.load_or_create_file(path)


def test_corrupt_key_file_is_refused_without_showing_it(tmp_path: Path) -> None:
    path = tmp_path / "token-keys.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(
        fd,
        b'{"version": 1, "primary": "k1", "keys": {"k1": "c2VjcmV0*"}, "fingerprint_key": "AAAA"}',
    )
    os.close(fd)
    with pytest.raises(KeyRingError, match="key 'k1' is not valid base64url") as info:
        KeyRing.load_or_create_file(path)
    assert "c2VjcmV0" not in str(info.value)


# Rotation of the local key file ------------------------------------------------------------------


def test_with_primary_writes_with_a_ring_key_and_refuses_an_unknown_one() -> None:
    ring = make_ring("old", "new")
    text = ring.with_primary("new").encrypt(TOKEN, account_id=1, field=ACCESS)
    assert ring.key_id_of(text) == "new"
    assert ring.decrypt(text, account_id=1, field=ACCESS) == TOKEN
    with pytest.raises(KeyRingError, match="'gone' is not in the key ring"):
        ring.with_primary("gone")


def test_token_context_is_what_encrypt_binds_to() -> None:
    ring = make_ring()
    text = ring.encrypt(TOKEN, account_id=9, field=REFRESH)
    assert ring.open(text, context=crypto.token_context(9, REFRESH)) == TOKEN


def test_key_file_add_promote_remove_keep_it_private_and_valid(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "keyring.json"
    ring, _ = KeyRing.load_or_create_file(path)
    first = ring.primary_id
    added = crypto.add_file_key(path)
    assert added.startswith(first) and added != first  # local-<date>-2
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    reread = KeyRing._read_file(path)
    assert reread.primary_id == added and set(reread.key_ids) == {first, added}
    assert reread.fingerprint(TOKEN) == ring.fingerprint(TOKEN)  # fingerprints survive
    with pytest.raises(KeyRingError, match="is the primary"):
        crypto.remove_file_key(path, added)
    with pytest.raises(KeyRingError, match="already in the key file"):
        crypto.add_file_key(path, first)
    crypto.promote_file_key(path, first)
    crypto.remove_file_key(path, added)
    assert KeyRing._read_file(path).key_ids == (first,)
    assert [p.name for p in path.parent.iterdir()] == ["keyring.json"]  # no temp file left


def test_a_ring_from_the_key_file_follows_its_rotation_without_a_restart(tmp_path: Path) -> None:
    """A running process must read rows re-encrypted under a key added after it started."""
    path = tmp_path / "keyring.json"
    running, _ = KeyRing.load_or_create_file(path)
    old = running.primary_id
    new = crypto.add_file_key(path)
    rotated = KeyRing._read_file(path)
    text = rotated.encrypt(TOKEN, account_id=4, field=REFRESH)
    assert running.decrypt(text, account_id=4, field=REFRESH) == TOKEN
    assert running.key_id_of(running.encrypt(TOKEN, account_id=4, field=ACCESS)) == new
    crypto.promote_file_key(path, old)
    assert running.key_id_of(running.encrypt(TOKEN, account_id=4, field=ACCESS)) == old


def test_a_broken_key_file_edit_is_not_taken_by_a_running_ring(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    running, _ = KeyRing.load_or_create_file(path)
    data = json.loads(path.read_text())
    data["fingerprint_key"] = b64(secrets.token_bytes(32))  # would break every fingerprint
    data["keys"]["k9"] = b64(crypto.generate_key())
    data["primary"] = "k9"
    path.write_text(json.dumps(data))
    text = running.encrypt(TOKEN, account_id=1, field=ACCESS)
    assert running.key_id_of(text) == running.primary_id != "k9"
    assert running.decrypt(text, account_id=1, field=ACCESS) == TOKEN


def test_a_fingerprint_is_the_keyed_sha256_older_records_hold() -> None:
    # Records written by earlier versions must stay comparable: the fingerprint is the first
    # FINGERPRINT_HEX_CHARS hex digits of HMAC-SHA256(fingerprint key, UTF-8 secret).
    key = bytes(range(32))
    ring = make_ring("k1", fingerprint_key=key)
    expected = hmac.new(key, TOKEN.encode("utf-8"), hashlib.sha256).hexdigest()
    assert ring.fingerprint(TOKEN) == expected[: crypto.FINGERPRINT_HEX_CHARS]
    assert len(ring.fingerprint(TOKEN)) == crypto.FINGERPRINT_HEX_CHARS

"""Envelope encryption and the local key store (pure logic plus real files)."""

from __future__ import annotations

import os
import stat
import uuid
from pathlib import Path

import pytest

from reelm.storage.crypto import DecryptionFailed, UserCipher, blind_index, cipher_for
from reelm.storage.keys import KeyDestroyed, LocalKeyStore


def test_round_trip_and_binding_to_user_and_field(tmp_path: Path) -> None:
    keys = LocalKeyStore("us", tmp_path / "keys")
    alice, bob = uuid.uuid4(), uuid.uuid4()
    a = cipher_for(keys, alice, create=True)
    b = cipher_for(keys, bob, create=True)
    blob = a.encrypt("email", "alice@example.com")
    assert b"alice" not in blob
    assert a.decrypt("email", blob) == "alice@example.com"
    assert a.encrypt("email", "x") != a.encrypt("email", "x")  # fresh nonce each time
    with pytest.raises(DecryptionFailed):
        a.decrypt("phone", blob)  # moved to another column
    with pytest.raises(DecryptionFailed):
        b.decrypt("email", blob)  # moved to another user's row
    # Even with Alice's key, a copy bound to Bob's id does not open.
    with pytest.raises(DecryptionFailed):
        UserCipher(bob, keys.data_key(alice)).decrypt("email", blob)
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(DecryptionFailed):
        a.decrypt("email", tampered)
    with pytest.raises(DecryptionFailed):
        a.decrypt("email", b"")


def test_key_files_are_private_and_survive_restart(tmp_path: Path) -> None:
    keys = LocalKeyStore("ca", tmp_path / "keys")
    user = uuid.uuid4()
    blob = cipher_for(keys, user, create=True).encrypt("email", "c@example.com")
    master = tmp_path / "keys" / "master.key"
    assert stat.S_IMODE(master.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    wrapped = tmp_path / "keys" / "users" / f"{user}.key"
    assert stat.S_IMODE(wrapped.stat().st_mode) == 0o600
    assert keys.data_key(user) not in wrapped.read_bytes()  # stored wrapped, not in clear
    reopened = LocalKeyStore("ca", tmp_path / "keys")
    assert cipher_for(reopened, user).decrypt("email", blob) == "c@example.com"


def test_destroying_the_key_makes_every_copy_unreadable(tmp_path: Path) -> None:
    keys = LocalKeyStore("au", tmp_path / "keys")
    user = uuid.uuid4()
    copy_of_row = cipher_for(keys, user, create=True).encrypt("birth_date", "2000-01-01")
    assert keys.destroy_data_key(user) is True
    assert keys.destroy_data_key(user) is False  # idempotent
    assert not keys.has_data_key(user)
    for store in (keys, LocalKeyStore("au", tmp_path / "keys")):  # cache and disk both
        with pytest.raises(KeyDestroyed):
            cipher_for(store, user).decrypt("birth_date", copy_of_row)


def test_a_wrapped_key_from_another_region_does_not_unwrap(tmp_path: Path) -> None:
    us = LocalKeyStore("us", tmp_path / "us")
    sg = LocalKeyStore("sg", tmp_path / "sg")
    user = uuid.uuid4()
    us.create_data_key(user)
    (tmp_path / "sg" / "users").mkdir(exist_ok=True)
    (tmp_path / "sg" / "users" / f"{user}.key").write_bytes(
        (tmp_path / "us" / "users" / f"{user}.key").read_bytes()
    )
    with pytest.raises(KeyDestroyed, match="does not open"):
        sg.data_key(user)


def test_blind_index_is_keyed_and_deterministic(tmp_path: Path) -> None:
    us = LocalKeyStore("us", tmp_path / "us").create_index_key(1)
    ca = LocalKeyStore("ca", tmp_path / "ca").create_index_key(1)
    assert blind_index(us, "email", "a@example.com") == blind_index(us, "email", "a@example.com")
    assert blind_index(us, "email", "a@example.com") != blind_index(ca, "email", "a@example.com")
    assert blind_index(us, "email", "a@example.com") != blind_index(us, "phone", "a@example.com")


def test_index_keys_by_epoch_are_random_private_and_destroyable(tmp_path: Path) -> None:
    keys = LocalKeyStore("nz", tmp_path / "keys")
    first = keys.create_index_key(1)
    assert keys.create_index_key(1) == first  # made once, then read back
    second = keys.create_index_key(2)
    assert second != first
    path = tmp_path / "keys" / "index" / "1.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.index_key_epochs() == [1, 2]
    # Not derived from the master key: another store with the same master has other keys.
    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / "master.key").write_bytes((tmp_path / "keys" / "master.key").read_bytes())
    assert LocalKeyStore("nz", twin).create_index_key(1) != first
    assert keys.destroy_index_key(1) is True
    assert keys.destroy_index_key(1) is False
    assert keys.index_key_epochs() == [2]
    with pytest.raises(KeyDestroyed):
        LocalKeyStore("nz", tmp_path / "keys").index_key(1)
    assert keys.index_key(2) == second
    with pytest.raises(ValueError, match="start at 1"):
        keys.create_index_key(0)


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 65537, 3 * 65536 + 123])
def test_chunked_blob_encryption_round_trip_and_ranges(size: int) -> None:
    import io
    import random

    from reelm.storage.crypto import (
        decrypt_blob,
        decrypt_blob_range,
        encrypt_blob,
        encrypted_size,
        plain_size,
    )

    key, user = os.urandom(32), uuid.uuid4()
    plain = os.urandom(size)
    sealed = io.BytesIO()
    assert encrypt_blob(key, user, "originals/v1", io.BytesIO(plain), sealed) == size
    data = sealed.getvalue()
    assert len(data) == encrypted_size(size)
    assert plain_size(len(data)) == size
    out = io.BytesIO()
    decrypt_blob(key, user, "originals/v1", io.BytesIO(data), len(data), out)
    assert out.getvalue() == plain
    rng = random.Random(size)
    for _ in range(20):
        a = rng.randrange(0, size + 1)
        b = rng.randrange(a, size + 2)
        got = decrypt_blob_range(key, user, "originals/v1", io.BytesIO(data), len(data), a, b)
        assert got == plain[a:b]


def test_chunked_blob_refuses_tampering() -> None:
    import io

    from reelm.storage.crypto import BLOB_CHUNK, decrypt_blob, encrypt_blob

    key, user = os.urandom(32), uuid.uuid4()
    plain = os.urandom(3 * BLOB_CHUNK)
    sealed = io.BytesIO()
    encrypt_blob(key, user, "originals/v1", io.BytesIO(plain), sealed)
    data = sealed.getvalue()

    def opens(blob: bytes, name: str = "originals/v1", who: uuid.UUID = user) -> bool:
        try:
            decrypt_blob(key, who, name, io.BytesIO(blob), len(blob), io.BytesIO())
        except DecryptionFailed:
            return False
        return True

    assert opens(data)
    assert not opens(data, name="originals/v2")  # moved to another blob
    assert not opens(data, who=uuid.uuid4())  # moved to another user
    flipped = bytearray(data)
    flipped[100] ^= 1
    assert not opens(bytes(flipped))
    chunk = BLOB_CHUNK + 16
    truncated = data[: 13 + 2 * chunk]  # the last chunk dropped
    assert not opens(truncated)
    swapped = (
        data[:13]
        + data[13 + chunk : 13 + 2 * chunk]
        + data[13 : 13 + chunk]
        + data[13 + 2 * chunk :]
    )
    assert not opens(swapped)


def test_truncated_or_empty_swapped_blobs_do_not_open() -> None:
    import io

    from reelm.storage.crypto import decrypt_blob, encrypt_blob

    key, user = os.urandom(32), uuid.uuid4()
    sealed = io.BytesIO()
    encrypt_blob(key, user, "originals/v1", io.BytesIO(os.urandom(140_000)), sealed)
    data = sealed.getvalue()
    for cut in (0, 13, 23, 28, 29, 13 + 65552):
        with pytest.raises(DecryptionFailed):
            decrypt_blob(key, user, "originals/v1", io.BytesIO(data[:cut]), cut, io.BytesIO())
    empty = io.BytesIO()
    encrypt_blob(key, uuid.uuid4(), "originals/other", io.BytesIO(b""), empty)
    swapped = empty.getvalue()
    with pytest.raises(DecryptionFailed):
        decrypt_blob(key, user, "originals/v1", io.BytesIO(swapped), len(swapped), io.BytesIO())

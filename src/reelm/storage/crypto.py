"""Envelope encryption of protected fields, and keyed blind indexes for lookups.

A protected field is stored as ``version || nonce || AES-256-GCM(data key, value)``, with the
user id and field name as associated data, so a ciphertext copied to another user's row or
another column fails to decrypt instead of silently reading as someone else's data.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import BinaryIO, Protocol
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from reelm.storage.keys import NONCE_BYTES, KeyStore

FORMAT_V1 = b"\x01"


class DecryptionFailed(ValueError):
    """A ciphertext could not be opened: wrong key, wrong row or column, or tampered."""


class UserCipher:
    """Encrypts and decrypts one user's protected fields with their data key."""

    def __init__(self, subject: UUID, data_key: bytes) -> None:
        self.subject = subject
        self._aead = AESGCM(data_key)
        # For the user's own lookups (have I liked this video?): derived from the data key,
        # so destroying that key also leaves these indexes meaningless.
        self._lookup_key = hmac.new(data_key, b"reelm/lookup/v1", hashlib.sha256).digest()

    def _aad(self, field: str) -> bytes:
        return f"reelm/field/{self.subject}/{field}".encode()

    def encrypt(self, field: str, value: str) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return FORMAT_V1 + nonce + self._aead.encrypt(nonce, value.encode(), self._aad(field))

    def decrypt(self, field: str, blob: bytes) -> str:
        if not blob or blob[:1] != FORMAT_V1:
            raise DecryptionFailed(f"{field}: unknown ciphertext format")
        nonce, body = blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, self._aad(field)).decode()
        except InvalidTag as exc:
            raise DecryptionFailed(f"{field}: ciphertext does not open") from exc

    def encrypt_optional(self, field: str, value: str | None) -> bytes | None:
        return None if value is None else self.encrypt(field, value)

    def decrypt_optional(self, field: str, blob: bytes | None) -> str | None:
        return None if blob is None else self.decrypt(field, blob)

    def lookup(self, field: str, value: str) -> bytes:
        """A keyed index of ``value`` for this user only (see ``blind_index``)."""
        return blind_index(self._lookup_key, field, value)


def blind_index(key: bytes, field: str, normalised_value: str) -> bytes:
    """HMAC-SHA256 of a normalised value: equal inputs match, the value is not recoverable."""
    return hmac.new(key, f"{field}\x00{normalised_value}".encode(), hashlib.sha256).digest()


def cipher_for(keys: KeyStore, subject: UUID, *, create: bool = False) -> UserCipher:
    key = keys.create_data_key(subject) if create else keys.data_key(subject)
    return UserCipher(subject, key)


# ---- protected blobs: chunked AES-256-GCM ------------------------------------------------
#
# A protected blob (an original upload, a private rendition, an export) is encrypted in
# 64 KiB chunks so it can be written as a stream and read back by range (HTTP 206) without
# decrypting the whole file. Each chunk's nonce is a random per-blob prefix plus the chunk
# number; its associated data binds the user, the blob's name, the chunk number and whether it
# is the last chunk, so chunks cannot be reordered, dropped, swapped between blobs or users, or
# the blob truncated, without the tag check failing.

BLOB_MAGIC = b"RLMB1"
BLOB_CHUNK = 64 * 1024
_TAG = 16
_PREFIX = 8
BLOB_HEADER = len(BLOB_MAGIC) + _PREFIX


class Readable(Protocol):
    """What decryption needs of an encrypted blob: a file, or a blob store read by ranges."""

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def read(self, size: int = -1, /) -> bytes: ...


def _blob_nonce(prefix: bytes, index: int) -> bytes:
    return prefix + index.to_bytes(4, "big")


def _blob_aad(subject: UUID, name: str, index: int, last: bool) -> bytes:
    return f"reelm/blob/{subject}/{name}/{index}/{int(last)}".encode()


def encrypted_size(plain_size: int) -> int:
    chunks = max(1, -(-plain_size // BLOB_CHUNK))
    return BLOB_HEADER + plain_size + chunks * _TAG


def encrypt_blob(
    data_key: bytes, subject: UUID, name: str, source: BinaryIO, sink: BinaryIO
) -> int:
    """Encrypt ``source`` into ``sink`` chunk by chunk; returns the plaintext size."""
    aead = AESGCM(data_key)
    prefix = secrets.token_bytes(_PREFIX)
    sink.write(BLOB_MAGIC + prefix)
    index, total = 0, 0
    chunk = source.read(BLOB_CHUNK)
    while True:
        following = source.read(BLOB_CHUNK)
        last = not following
        aad = _blob_aad(subject, name, index, last)
        sink.write(aead.encrypt(_blob_nonce(prefix, index), chunk, aad))
        total += len(chunk)
        if last:
            return total
        chunk, index = following, index + 1


def plain_size(encrypted: int) -> int:
    body = encrypted - BLOB_HEADER
    chunks = max(1, -(-body // (BLOB_CHUNK + _TAG)))
    return body - chunks * _TAG


def decrypt_blob_range(
    data_key: bytes, subject: UUID, name: str, blob: Readable, total: int, start: int, end: int
) -> bytes:
    """Plaintext bytes [start, end) of an encrypted blob of ``total`` encrypted bytes."""
    if total < BLOB_HEADER + _TAG or plain_size(total) < 0:
        raise DecryptionFailed(f"{name}: not a complete encrypted blob")
    blob.seek(0)
    header = blob.read(BLOB_HEADER)
    if header[: len(BLOB_MAGIC)] != BLOB_MAGIC:
        raise DecryptionFailed("not an encrypted reelm blob")
    prefix = header[len(BLOB_MAGIC) :]
    size = plain_size(total)
    last_index = max(0, -(-size // BLOB_CHUNK) - 1)
    end = min(end, size)
    if start >= end:
        # Nothing to return, but a truncated or swapped blob must still fail: open the last
        # chunk, whose associated data says it is the last.
        start, end = last_index * BLOB_CHUNK, size
        if size == 0:
            aead = AESGCM(data_key)
            blob.seek(BLOB_HEADER)
            try:
                aead.decrypt(
                    _blob_nonce(prefix, 0), blob.read(_TAG), _blob_aad(subject, name, 0, True)
                )
            except InvalidTag as exc:
                raise DecryptionFailed(f"{name}: the blob does not open") from exc
            return b""
        decrypt_blob_range(data_key, subject, name, blob, total, start, end)
        return b""
    aead = AESGCM(data_key)
    out = bytearray()
    for index in range(start // BLOB_CHUNK, (end - 1) // BLOB_CHUNK + 1):
        blob.seek(BLOB_HEADER + index * (BLOB_CHUNK + _TAG))
        sealed = blob.read(BLOB_CHUNK + _TAG)
        aad = _blob_aad(subject, name, index, index == last_index)
        try:
            chunk = aead.decrypt(_blob_nonce(prefix, index), sealed, aad)
        except InvalidTag as exc:
            raise DecryptionFailed(f"{name}: chunk {index} does not open") from exc
        base = index * BLOB_CHUNK
        out += chunk[max(0, start - base) : end - base]
    return bytes(out)


def decrypt_blob(
    data_key: bytes, subject: UUID, name: str, blob: Readable, total: int, sink: BinaryIO
) -> None:
    """Decrypt a whole blob into ``sink``, chunk by chunk (constant memory)."""
    size = plain_size(total)
    for start in range(0, max(size, 1), BLOB_CHUNK):
        sink.write(
            decrypt_blob_range(data_key, subject, name, blob, total, start, start + BLOB_CHUNK)
        )

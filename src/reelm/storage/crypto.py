"""Envelope encryption of protected fields, and keyed blind indexes for lookups.

A protected field is stored as ``version || nonce || AES-256-GCM(data key, value)``, with the
user id and field name as associated data, so a ciphertext copied to another user's row or
another column fails to decrypt instead of silently reading as someone else's data.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
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


def blind_index(key: bytes, field: str, normalised_value: str) -> bytes:
    """HMAC-SHA256 of a normalised value: equal inputs match, the value is not recoverable."""
    return hmac.new(key, f"{field}\x00{normalised_value}".encode(), hashlib.sha256).digest()


def cipher_for(keys: KeyStore, subject: UUID, *, create: bool = False) -> UserCipher:
    key = keys.create_data_key(subject) if create else keys.data_key(subject)
    return UserCipher(subject, key)

"""A cell's identity: an Ed25519 key pair. The private key (32 raw bytes, mode 0600) signs this
cell's inter-cell requests; the public key, printed by ``reelm cell identity``, goes into the
other cells' ``peers`` configuration."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from reelm.storage.keys import read_or_create_secret


def load_or_create(path: Path) -> Ed25519PrivateKey:
    """The identity key in ``path``, made on first start (0600, never overwritten)."""
    return Ed25519PrivateKey.from_private_bytes(read_or_create_secret(path, 32))


def encode_public(key: Ed25519PublicKey) -> str:
    """base64url of the 32 raw bytes, unpadded (43 characters)."""
    raw = key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_public(text: str) -> Ed25519PublicKey:
    """A peer's public key as configured; ValueError when it is not 32 bytes of base64url."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)

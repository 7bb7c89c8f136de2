"""The canonical content of a user's protected data, and its SHA-256.

Computed independently on each side of a migration (each with its own region's keys): rows
with their protected columns decrypted (blind indexes and the fence column left out: they are
region-local), in primary-key order, as canonical JSON (sorted keys, no whitespace); blobs
by key, plaintext size and plaintext SHA-256; staged uploads by name, size and SHA-256.
Equal digests mean the destination holds exactly what the source held."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any


def canonical(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    raise TypeError(f"no canonical form for {type(value).__name__}")


def digest(document: dict[str, Any]) -> bytes:
    """SHA-256 of the document as canonical JSON: keys sorted, no whitespace, UTF-8. (The
    values are only strings, integers, floats, booleans and null once ``canonical`` has run,
    for which this is as canonical as RFC 8785 and several times faster in Python.)"""
    text = json.dumps(
        canonical(document), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(text.encode()).digest()


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Which parts of two documents differ (names only, never values: for the report)."""
    out = []
    for part in sorted(set(a) | set(b)):
        left, right = a.get(part), b.get(part)
        if isinstance(left, dict) and isinstance(right, dict):
            out += [
                f"{part}.{k}" for k in sorted(set(left) | set(right)) if left.get(k) != right.get(k)
            ]
        elif left != right:
            out.append(part)
    return out

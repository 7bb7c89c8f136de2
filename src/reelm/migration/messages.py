"""What crosses between a migration's coordinator, its source cell's exporter and its
destination cell's importer: plain dataclasses that serialize to JSON (``to_json`` /
``from_json``) so a transport between processes (the inter-cell protocol) carries them as
they are. Blob and staged-file bytes are streamed as bytes, never inside a message.

The JSON form keeps every type a row holds: a value that JSON has no type for (a UUID, a
date, bytes, a map with non-string keys...) is an object with one ``$``-tag, and every map is
tagged too, so a row's JSONB content can never be mistaken for a tag."""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any, ClassVar, Protocol, Self

# A blob's size and modification time in its store, when it was read.
Stamp = tuple[int, datetime]


def encode(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, uuid.UUID):
        return {"$uuid": str(value)}
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, tuple):
        return {"$tuple": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, Message):
        return {"$" + type(value).__name__: value.to_dict()}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"$map": {k: encode(v) for k, v in value.items()}}
        return {"$pairs": [[encode(k), encode(v)] for k, v in value.items()]}
    raise TypeError(f"cannot send a {type(value).__name__}")


_SCALARS: dict[str, Any] = {
    "$uuid": uuid.UUID,
    "$datetime": datetime.fromisoformat,
    "$date": date.fromisoformat,
    "$bytes": base64.b64decode,
    "$decimal": Decimal,
}


def decode(value: Any) -> Any:
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) != 1:
        raise ValueError("an untagged object in a migration message")
    ((tag, payload),) = value.items()
    if tag in _SCALARS:
        return _SCALARS[tag](payload)
    if tag == "$tuple":
        return tuple(decode(v) for v in payload)
    if tag == "$map":
        return {k: decode(v) for k, v in payload.items()}
    if tag == "$pairs":
        return {decode(k): decode(v) for k, v in payload}
    kind = Message.kinds.get(tag[1:])
    if kind is None:
        raise ValueError(f"unknown tag {tag[:40]!r} in a migration message")
    return kind.from_dict(payload)


class MessageError(ValueError):
    """A message that is not one this side sends (malformed, or of another version)."""


class Message:
    """A dataclass that travels: its fields encoded by ``encode``."""

    kinds: ClassVar[dict[str, type[Message]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        Message.kinds[cls.__name__] = cls

    def to_dict(self) -> dict[str, Any]:
        return {f.name: encode(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        if set(data) != names:
            raise ValueError(f"{cls.__name__}: expected the fields {sorted(names)}")
        return cls(**{name: decode(value) for name, value in data.items()})

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False).encode()

    @classmethod
    def from_json(cls, text: bytes | str) -> Self:
        try:
            return cls.from_dict(json.loads(text))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise MessageError(f"malformed {cls.__name__}: {exc}"[:200]) from exc


@dataclasses.dataclass
class Survey(Message):
    """Who of one source region would move, and how much they hold (for the plan)."""

    users: list[uuid.UUID]
    rows: dict[str, int] = dataclasses.field(default_factory=dict)  # by table
    bytes: int = 0  # protected blob bytes (plaintext)


@dataclasses.dataclass
class ExportBatch(Message):
    """A batch of frozen users' rows, protected columns in the clear, from the source."""

    migration_id: uuid.UUID
    # user -> table -> rows (column -> value), blind indexes and lookups left out.
    users: dict[uuid.UUID, dict[str, list[dict[str, Any]]]] = dataclasses.field(
        default_factory=dict
    )
    counts: dict[uuid.UUID, int] = dataclasses.field(default_factory=dict)  # rows per user
    failed: dict[uuid.UUID, str] = dataclasses.field(default_factory=dict)  # user -> why


@dataclasses.dataclass
class ImportReceipt(Message):
    """The destination wrote the batch's rows (users not in ``failed``) as ``incoming``."""

    migration_id: uuid.UUID
    imported: list[uuid.UUID] = dataclasses.field(default_factory=list)
    failed: dict[uuid.UUID, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class BlobCheck(Message):
    """One blob copied: the source's size and modification time when it was read, and the
    SHA-256 of its plaintext as read from the source and as read back from the destination."""

    stamp: Stamp
    source_sha: str
    dest_sha: str
    size: int


@dataclasses.dataclass
class Fingerprint(Message):
    """One user's side of the verification: the document's digest and its outline (per
    table digest, blob and staged file hashes: what ``digest.differences`` compares)."""

    digest: bytes
    outline: dict[str, Any]
    blobs: int
    blob_bytes: int

    @classmethod
    def of(cls, digest: bytes, outline: dict[str, Any]) -> Fingerprint:
        blobs = outline["blobs"]
        return cls(digest, outline, len(blobs), sum(v["size"] for v in blobs.values()))


@dataclasses.dataclass
class Digests(Message):
    """One side's fingerprints of a batch of users, and the users it could not read."""

    migration_id: uuid.UUID
    users: dict[uuid.UUID, Fingerprint] = dataclasses.field(default_factory=dict)
    failed: dict[uuid.UUID, str] = dataclasses.field(default_factory=dict)


class Receiver(Protocol):
    """Where the source's exporter streams bytes to: the destination's importer (in-process
    today; the inter-cell protocol's migration endpoint between cell processes). Each call is
    idempotent: a blob or file received again replaces the one received before."""

    def receive_blob(
        self, migration_id: uuid.UUID, user_id: uuid.UUID, key: str, chunks: Iterable[bytes]
    ) -> str:
        """Seal the plaintext under the user's new key, store it, read it back: its SHA-256."""
        ...

    def receive_staged(self, migration_id: uuid.UUID, name: str, chunks: Iterable[bytes]) -> bool:
        """Store a staged upload's bytes; False when the source's file went meanwhile."""
        ...

    def tidy_staged(
        self,
        migration_id: uuid.UUID,
        pending: dict[uuid.UUID, uuid.UUID | None],
        copied: list[str],
    ) -> None:
        """Remove staged names of these uploads the source no longer has."""
        ...

"""Serving video files: HTTP range requests, caching, and the signed URLs of protected media.

Public renditions and posters are served at ``/media/v/<video>/<file>`` while the video is in
the public catalog, with ``Cache-Control: public, max-age=300`` and an ETag: a video made private
or deleted leaves shared caches within five minutes.

Followers-only and private videos stay encrypted in the owner's home region. The API hands an
authorised viewer a URL ``/media/p/<region>/<video>/<file>?expires=..&signature=..``, valid for
a few minutes (an HMAC over region, video, file and expiry, keyed by the region's secret); the
region decrypts only the chunks a range request asks for. Such responses are ``private``: no
shared cache keeps them, and the browser keeps them no longer than the URL lives.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from reelm.numbers import natural_or_none, parse_natural
from reelm.regions.cell import Cell
from reelm.storage.blobs import BlobStore
from reelm.storage.crypto import decrypt_blob_range, plain_size

Reader = Callable[[int, int], bytes]

PRIVATE_URL_SECONDS = 15 * 60
# A public video's bytes never change, but it may stop being public (made private, deleted, its
# account made private): shared caches keep it five minutes at most, then revalidate (ETag).
PUBLIC_CACHE = "public, max-age=300"
READ_CHUNK = 256 * 1024
EXPIRES_DIGITS = 12  # a unix time, in ASCII digits (reelm.numbers)
# ASCII digits only (re's \d also matches "٣"); parse_natural reads them.
_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})")
_FILE = re.compile(r"^[a-z0-9]{1,16}\.(mp4|jpg)$")
MIME = {"mp4": "video/mp4", "jpg": "image/jpeg"}


class BadRange(ValueError):
    """The Range header asks for bytes the file does not have (416)."""


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one byte range a ``Range`` header asks for, or None for the whole file. Several
    ranges, or a malformed header, are ignored (the whole file is sent, as RFC 9110 allows);
    a range that starts past the end raises :class:`BadRange`."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        suffix = parse_natural(last)
        if suffix == 0:
            raise BadRange(header)
        return ByteRange(max(0, size - suffix), size)
    start = parse_natural(first)
    end = size if not last else min(size, parse_natural(last) + 1)
    if start >= size or end <= start:
        raise BadRange(header)
    return ByteRange(start, end)


def valid_file(name: str) -> bool:
    return bool(_FILE.fullmatch(name))


def mime_of(name: str) -> str:
    return MIME[name.rsplit(".", 1)[1]]


def chunks(read: Callable[[int, int], bytes], span: ByteRange) -> Iterator[bytes]:
    """The bytes of ``span``, read piece by piece (never the whole file in memory)."""
    for offset in range(span.start, span.end, READ_CHUNK):
        yield read(offset, min(span.end, offset + READ_CHUNK))


# ---- signed URLs of protected media ---------------------------------------------------------


def _signature(cell: Cell, video_id: uuid.UUID, file: str, expires: int) -> str:
    key = cell.keys.signing_seed("media-url")
    message = f"reelm/media-url/v1\n{cell.region}\n{video_id}\n{file}\n{expires}".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def private_url(
    cell: Cell, video_id: uuid.UUID, file: str, *, ttl: int = PRIVATE_URL_SECONDS
) -> str:
    # Rounded up to the minute: a page that asks twice in a minute gets the same URL, which
    # the browser can keep in its cache.
    expires = (int(time.time()) + ttl) // 60 * 60 + 60
    signature = _signature(cell, video_id, file, expires)
    return f"/media/p/{cell.region}/{video_id}/{file}?expires={expires}&signature={signature}"


def verify_private(
    cell: Cell, video_id: uuid.UUID, file: str, expires: str, signature: str
) -> int | None:
    """Seconds the URL has left, or None when it is forged, altered or expired."""
    when = natural_or_none(expires, digits=EXPIRES_DIGITS)
    if when is None or len(signature) > 100:
        return None
    expected = _signature(cell, video_id, file, when)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return None
    left = when - int(time.time())
    return left if left > 0 else None


def public_url(video_id: uuid.UUID, file: str) -> str:
    return f"/media/v/{video_id}/{file}"


# ---- encrypted blobs, read by ranges --------------------------------------------------------


class BlobFile:
    """A blob as a seekable read-only file, reading ranges from the store on demand (the
    encrypted-blob functions seek to the chunks they need)."""

    def __init__(self, store: BlobStore, key: str) -> None:
        self.store, self.key = store, key
        self.size = store.size(key)
        self._pos = 0

    def seek(self, offset: int, whence: int = 0, /) -> int:
        base = {0: 0, 1: self._pos, 2: self.size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1, /) -> bytes:
        if self._pos >= self.size:
            return b""
        end = self.size if size < 0 else min(self.size, self._pos + size)
        data = self.store.read_range(self.key, self._pos, end)
        self._pos += len(data)
        return data


def encrypted_reader(cell: Cell, owner: uuid.UUID, key: str, name: str) -> tuple[int, Reader]:
    """The plaintext size of an encrypted blob and a function reading plaintext ranges."""
    blob = BlobFile(cell.blobs, key)
    data_key = cell.keys.data_key(owner)

    def read(start: int, end: int) -> bytes:
        return decrypt_blob_range(data_key, owner, name, blob, blob.size, start, end)

    return plain_size(blob.size), read

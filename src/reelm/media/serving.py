"""Serving video files: HTTP range requests, caching, and the signed URLs of protected media.

Public renditions and posters are served at ``/media/v/<video>/<file>`` while the video is in
the public catalog, with ``Cache-Control: public, max-age=300`` and an ETag: a video made private
or deleted leaves shared caches within five minutes.

Followers-only and private videos stay encrypted in the owner's home region. The API hands an
authorised viewer a URL ``/media/p/<region>/<video>/<file>?expires=..&signature=..``, valid for
`PRIVATE_URL_SECONDS` (an HMAC over region, video, file, expiry and the viewer's session, keyed
by the region's secret): it opens the file only for a request of that same session (its cookie
or bearer token), so a URL copied to someone else, or used after logging out, plays nothing.
Every request is also checked against the rules again (``reelm.social.access.decide``), with
the answer remembered `DECISION_SECONDS` per session and video (`Decisions`): a follower who is
removed stops getting bytes within those seconds, not when the URL expires. The region decrypts
only the chunks a range request asks for. Such responses are ``private, no-cache``: no shared
cache keeps them, and the browser asks again (a 304 when it has the bytes) before reusing them,
so the checks run on every play.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from reelm.numbers import natural_or_none, parse_natural
from reelm.regions.cell import Cell
from reelm.storage.blobs import BlobStore
from reelm.storage.crypto import decrypt_blob_range, plain_size

Reader = Callable[[int, int], bytes]

# A protected URL's life. It is bound to a session and access is checked on every request, so
# its life only bounds how long a page may sit before its player asks for fresh URLs (the
# pages' scripts do that when a URL stops working: reelm.js, renewSources).
PRIVATE_URL_SECONDS = 5 * 60
URL_ROUNDING = 60  # expiry rounded up to the minute: a page reloaded in a minute reuses its URLs
DECISION_SECONDS = 5.0  # how long an access decision of a protected file is reused
DECISIONS_KEPT = 4096  # (session, video) decisions remembered per process
PRIVATE_CACHE = "private, no-cache"
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


def _signature(cell: Cell, video_id: uuid.UUID, file: str, expires: int, session: bytes) -> str:
    key = cell.keys.signing_seed("media-url")
    message = (
        f"reelm/media-url/v2\n{cell.region}\n{video_id}\n{file}\n{expires}\n{session.hex()}"
    ).encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def private_url(
    cell: Cell,
    video_id: uuid.UUID,
    file: str,
    session: bytes,
) -> str:
    """A URL of a protected file for the session whose token hash is `session` only, valid
    `PRIVATE_URL_SECONDS` (and at most `URL_ROUNDING` more)."""
    # Rounded up: a page that asks twice in a minute gets the same URL, which the browser can
    # revalidate from its cache.
    later = int(time.time()) + PRIVATE_URL_SECONDS
    expires = -(-later // URL_ROUNDING) * URL_ROUNDING
    signature = _signature(cell, video_id, file, expires, session)
    return f"/media/p/{cell.region}/{video_id}/{file}?expires={expires}&signature={signature}"


def verify_private(
    cell: Cell,
    video_id: uuid.UUID,
    file: str,
    expires: str,
    signature: str,
    session: bytes | None,
) -> int | None:
    """Seconds the URL has left, or None when it is forged, altered, expired, or was made for
    another session than `session` (None: the request has none)."""
    if session is None:
        return None
    when = natural_or_none(expires, digits=EXPIRES_DIGITS)
    if when is None or len(signature) > 100:
        return None
    expected = _signature(cell, video_id, file, when, session)
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return None
    left = when - int(time.time())
    return left if left > 0 else None


class Decisions:
    """Whether a session may watch a protected video, as decided in the last
    `DECISION_SECONDS`: a player asks for dozens of ranges a minute, and each decision costs
    two catalog reads; a removed follower is refused once the remembered answer ages out."""

    def __init__(self, seconds: float = DECISION_SECONDS, kept: int = DECISIONS_KEPT) -> None:
        self._seconds, self._kept = seconds, kept
        self._answers: OrderedDict[tuple[bytes, uuid.UUID], tuple[float, bool]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session: bytes, video_id: uuid.UUID) -> bool | None:
        """The remembered answer, or None when there is none young enough."""
        with self._lock:
            answer = self._answers.get((session, video_id))
            if answer is None or time.monotonic() - answer[0] >= self._seconds:
                return None
            return answer[1]

    def put(self, session: bytes, video_id: uuid.UUID, allowed: bool, at: float) -> None:
        """Remember an answer read from the stores from `at` (time.monotonic()) on: its age
        counts from before the reads."""
        with self._lock:
            self._answers[(session, video_id)] = (at, allowed)
            self._answers.move_to_end((session, video_id))
            while len(self._answers) > self._kept:
                self._answers.popitem(last=False)


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

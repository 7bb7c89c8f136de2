"""Blob stores: one per region. The local default keeps files in a directory; production uses
an S3-compatible bucket (``S3BlobStore``). Both implement ``BlobStore``:

- writes are atomic (a reader sees the old blob or the whole new one, never part of one) and
  streamed (``put_file``, ``put_stream``: a 500 MB upload never sits in memory);
- reads can be ranged (``open_range`` gives the bytes of an HTTP 206 answer, in chunks);
- ``signed_url`` gives a short-lived URL to a private blob: a presigned URL for S3, an
  HMAC-signed path for the local store (checked later with ``LocalBlobStore.verify_signed``).

Keys are relative paths of lowercase segments (``originals/<user id>/<video id>.mp4``): each
segment starts with a letter or digit, so ``..``, ``.``, empty segments, absolute paths and
hidden names are refused with ``ValueError`` before any I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Protocol

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from reelm.numbers import natural_or_none
from reelm.storage.keys import read_or_create_secret

MAX_KEY_LENGTH = 512
# Per segment: a file name (255 bytes on common file systems) with room for the temporary name.
MAX_SEGMENT_LENGTH = 200
READ_CHUNK = 1024 * 1024
# A signed URL lives at most a week: the limit of S3's SigV4 presigned URLs, kept for both.
MAX_URL_SECONDS = 7 * 24 * 3600

_SEGMENT = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_PARTIAL_SEGMENT = re.compile(r"[a-z0-9_.-]*")
# A unix time in the URL's query: ASCII digits (reelm.numbers), 12 of them reach the year 33658.
EXPIRES_DIGITS = 12
_CONTENT_RANGE = re.compile(r"bytes ([0-9]+)-([0-9]+)/([0-9]+)")


class BlobNotFound(FileNotFoundError):
    """No blob under that key (a ``FileNotFoundError``, as the local store always raised)."""


class RangeNotSatisfiable(ValueError):
    """A ranged read starting at or past the end of the blob (HTTP 416)."""

    def __init__(self, key: str, start: int, size: int) -> None:
        super().__init__(
            f"range starting at byte {start} is past the end of blob {key!r} ({size} bytes)"
        )
        self.key = key
        self.start = start
        self.size = size


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_key(key: object) -> str:
    """``key`` if it is a valid blob key, else ValueError (never touching storage)."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"invalid blob key {_shown(key)}: empty or not a string")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"invalid blob key {_shown(key)}: longer than {MAX_KEY_LENGTH}")
    for segment in key.split("/"):
        if not _SEGMENT.fullmatch(segment):
            raise ValueError(
                f"invalid blob key {_shown(key)}: segments are a-z 0-9 _ . - and start with a "
                "letter or digit (no '..', no leading or doubled '/')"
            )
        if len(segment) > MAX_SEGMENT_LENGTH:
            raise ValueError(
                f"invalid blob key {_shown(key)}: a segment is longer than {MAX_SEGMENT_LENGTH}"
            )
    return key


def check_prefix(prefix: object) -> str:
    """A listing prefix: complete segments as in keys, then any start of a segment."""
    if not isinstance(prefix, str) or len(prefix) > MAX_KEY_LENGTH:
        raise ValueError(f"invalid blob prefix {_shown(prefix)}")
    if prefix:
        *whole, last = prefix.split("/")
        if not all(_SEGMENT.fullmatch(s) for s in whole) or not _PARTIAL_SEGMENT.fullmatch(last):
            raise ValueError(f"invalid blob prefix {_shown(prefix)}")
    return prefix


def _check_range(start: int, end: int | None) -> None:
    if start < 0 or (end is not None and end <= start):
        raise ValueError(f"invalid byte range [{start}, {end}): need 0 <= start < end")


def _check_expiry(expires_in: int) -> None:
    if not 1 <= expires_in <= MAX_URL_SECONDS:
        raise ValueError(f"expires_in must be between 1 and {MAX_URL_SECONDS} seconds")


class BlobRange:
    """Bytes [start, stop) of a blob of ``size`` bytes, as an iterator of chunks.

    Close it (or use ``with``) when not reading to the end; it closes itself at the end."""

    def __init__(
        self,
        chunks: Iterator[bytes],
        close: Callable[[], None],
        start: int,
        stop: int,
        size: int,
    ) -> None:
        self._chunks = chunks
        self._close: Callable[[], None] | None = close
        self.start = start
        self.stop = stop
        self.size = size

    @property
    def length(self) -> int:
        return self.stop - self.start

    @property
    def content_range(self) -> str:
        """The HTTP ``Content-Range`` value of this range."""
        return f"bytes {self.start}-{self.stop - 1}/{self.size}"

    def __iter__(self) -> BlobRange:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except StopIteration:
            self.close()
            raise

    def read(self) -> bytes:
        with self:
            return b"".join(self)

    def close(self) -> None:
        close, self._close = self._close, None
        if close is not None:
            close()

    def __enter__(self) -> BlobRange:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


class BlobStore(Protocol):
    """A region's blob store. Every implementation passes ``tests/test_blobs.py``."""

    region: str

    def put(self, key: str, data: bytes) -> None: ...

    def put_file(self, key: str, path: Path) -> int:
        """Store the file at ``path`` (streamed); returns its size."""
        ...

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        """Store the concatenated chunks (streamed); returns the size. If the iterator raises,
        nothing is stored and the error propagates."""
        ...

    def get(self, key: str) -> bytes: ...

    def open_range(
        self, key: str, start: int = 0, end: int | None = None, *, chunk_size: int = READ_CHUNK
    ) -> BlobRange:
        """Bytes [start, end) (end clamped to the size; None: to the end). A start at or past
        the end raises RangeNotSatisfiable; a missing blob BlobNotFound."""
        ...

    def read_range(self, key: str, start: int, end: int | None = None) -> bytes: ...

    def size(self, key: str) -> int: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> bool: ...

    def modified(self, key: str) -> datetime:
        """When the blob was last written (aware, UTC); BlobNotFound when there is none."""
        ...

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with ``prefix``, in lexicographic order."""
        ...

    def signed_url(self, key: str, expires_in: int) -> str:
        """A URL that reads the blob (with Range support) for ``expires_in`` seconds."""
        ...

    def location(self) -> str: ...


# ---- local ----------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalBlobStore:
    """A directory per region. Keys are relative paths; writes are atomic (a temporary file in
    the same directory, fsynced, then renamed into place) and files are private (0600).

    Signed URLs are ``<url_prefix>/<key>?expires=<unix time>&signature=<HMAC-SHA256>``; the
    web app that serves them checks them with ``verify_signed``. The HMAC key is a secret file
    (``url_key_file``; by default a hidden file in the store's directory, which no key can
    name), created on first use."""

    def __init__(
        self,
        region: str,
        root: Path,
        *,
        url_key_file: Path | None = None,
        url_prefix: str | None = None,
    ) -> None:
        self.region = region
        self.root = root
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.url_key_file = url_key_file or root / ".url-signing.key"
        self.url_prefix = (url_prefix or f"/blobs/{region}").rstrip("/")
        self._url_key: bytes | None = None

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    # writing --------------------------------------------------------------------------------
    def _write(self, key: str, fill: Callable[[BinaryIO], int]) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                size = fill(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)  # no half-written leftovers
            raise
        _fsync_dir(path.parent)
        return size

    def put(self, key: str, data: bytes) -> None:
        self.put_stream(key, [data])

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        def fill(f: BinaryIO) -> int:
            total = 0
            for chunk in chunks:
                f.write(chunk)
                total += len(chunk)
            return total

        return self._write(key, fill)

    def put_file(self, key: str, path: Path) -> int:
        with Path(path).open("rb") as source:

            def fill(f: BinaryIO) -> int:
                shutil.copyfileobj(source, f, READ_CHUNK)
                return source.tell()

            return self._write(key, fill)

    # reading --------------------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(f"no blob {key!r} in {self.region}") from None

    def open_range(
        self, key: str, start: int = 0, end: int | None = None, *, chunk_size: int = READ_CHUNK
    ) -> BlobRange:
        _check_range(start, end)
        path = self._path(key)
        try:
            f = path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise BlobNotFound(f"no blob {key!r} in {self.region}") from None
        try:
            size = os.fstat(f.fileno()).st_size  # the open file: a later replace cannot race
            if start >= size:
                raise RangeNotSatisfiable(key, start, size)
            stop = size if end is None else min(end, size)
            f.seek(start)
        except BaseException:
            f.close()
            raise

        def chunks() -> Iterator[bytes]:
            left = stop - start
            while left > 0:
                data = f.read(min(chunk_size, left))
                if not data:
                    raise OSError(f"blob {key!r} ended early")
                left -= len(data)
                yield data

        return BlobRange(chunks(), f.close, start, stop, size)

    def read_range(self, key: str, start: int, end: int | None = None) -> bytes:
        return self.open_range(key, start, end).read()

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise BlobNotFound(f"no blob {key!r} in {self.region}")
        return path.stat().st_size

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def modified(self, key: str) -> datetime:
        try:
            info = self._path(key).stat()
        except (FileNotFoundError, NotADirectoryError):
            info = None
        if info is None or not stat.S_ISREG(info.st_mode):
            raise BlobNotFound(f"no blob {key!r} in {self.region}")
        return datetime.fromtimestamp(info.st_mtime, UTC)

    def delete(self, key: str) -> bool:
        try:
            self._path(key).unlink()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return False
        return True

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)
        directory = prefix.rpartition("/")[0]
        base = self.root / directory if directory else self.root
        keys = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if name.startswith("."):  # writes in progress, the URL key
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        yield from sorted(keys)

    def location(self) -> str:
        return self.root.resolve().as_uri()

    # signed URLs ----------------------------------------------------------------------------
    def _signature(self, key: str, expires: int) -> str:
        if self._url_key is None:
            self._url_key = read_or_create_secret(self.url_key_file)
        message = f"reelm/blob-url/v1\n{self.region}\n{key}\n{expires}".encode()
        digest = hmac.new(self._url_key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def signed_url(self, key: str, expires_in: int) -> str:
        check_key(key)
        _check_expiry(expires_in)
        expires = int(time.time()) + expires_in
        return (
            f"{self.url_prefix}/{key}?expires={expires}&signature={self._signature(key, expires)}"
        )

    def verify_signed(
        self, key: str, expires: int | str, signature: str, *, now: float | None = None
    ) -> bool:
        """True when ``signature`` was made by ``signed_url`` for this region and ``key`` and
        ``expires`` (unix time, as in the URL's query) is still ahead. Never raises on bad
        input: a forged, altered or expired URL is simply refused."""
        try:
            check_key(key)
        except ValueError:
            return False
        if isinstance(expires, str):
            parsed = natural_or_none(expires, digits=EXPIRES_DIGITS)
            if parsed is None:
                return False
            expires = parsed
        if isinstance(expires, bool) or not isinstance(expires, int) or expires < 0:
            return False
        if not isinstance(signature, str):
            return False
        expected = self._signature(key, expires)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            return False
        return (time.time() if now is None else now) < expires


# ---- S3 -------------------------------------------------------------------------------------

_MISSING = {"404", "NoSuchKey", "NotFound"}


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class _ChunkReader(io.RawIOBase):
    """A read-only raw stream over an iterator of byte chunks (wrapped in a BufferedReader
    so that ``read(n)`` returns n bytes until the end, as S3's multipart parts need)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")
        self.total = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks)).cast("B")
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self.total += n
        return n


class S3BlobStore:
    """A bucket (and optional prefix) of an S3-compatible service, through boto3.

    Large writes go through boto3's managed transfers (multipart above ``part_size``; a failed
    upload is aborted, so no half object appears); a stream is buffered at most
    ``part_size * max_concurrency`` bytes. Credentials come from the standard AWS chain
    (environment, shared config and credentials files with ``profile``, instance roles),
    never from reelm's settings. The bucket must exist: reelm does not create it, since where
    it lives is the residency promise."""

    def __init__(
        self,
        region: str,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        profile: str | None = None,
        part_size: int = 8 * 1024 * 1024,
        max_concurrency: int = 4,
        page_size: int = 1000,
    ) -> None:
        prefix = prefix.strip("/")
        if prefix:
            check_key(prefix)
        self.region = region
        self.bucket = bucket
        self.prefix = prefix
        self.page_size = page_size
        if client is None:
            session = boto3.session.Session(profile_name=profile, region_name=region_name)
            client = session.client(
                "s3",
                endpoint_url=endpoint_url,
                config=Config(
                    signature_version="s3v4",
                    # S3-compatible services (MinIO, Ceph, ...) expect path-style addressing.
                    s3={"addressing_style": "path" if endpoint_url else "auto"},
                    retries={"mode": "standard", "max_attempts": 5},
                ),
            )
        self.client = client
        self.transfer_config = TransferConfig(
            multipart_threshold=part_size,
            multipart_chunksize=part_size,
            max_concurrency=max_concurrency,
            use_threads=True,
            preferred_transfer_client="classic",
        )
        # Parts of a non-seekable stream held in memory at once.
        self.transfer_config.max_in_memory_upload_chunks = max_concurrency

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _missing(self, key: str) -> BlobNotFound:
        return BlobNotFound(f"no blob {key!r} in {self.region}")

    # writing --------------------------------------------------------------------------------
    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._name(key), Body=data)

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> int:
        name = self._name(key)
        raw = _ChunkReader(chunks)
        with io.BufferedReader(raw, buffer_size=READ_CHUNK) as stream:
            self.client.upload_fileobj(stream, self.bucket, name, Config=self.transfer_config)
        return raw.total

    def put_file(self, key: str, path: Path) -> int:
        name = self._name(key)
        size = Path(path).stat().st_size
        self.client.upload_file(str(path), self.bucket, name, Config=self.transfer_config)
        return size

    # reading --------------------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._name(key))
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                raise self._missing(key) from None
            raise
        body = answer["Body"]
        try:
            data: bytes = body.read()
        finally:
            body.close()
        return data

    def open_range(
        self, key: str, start: int = 0, end: int | None = None, *, chunk_size: int = READ_CHUNK
    ) -> BlobRange:
        _check_range(start, end)
        name = self._name(key)
        last = "" if end is None else str(end - 1)
        try:
            answer = self.client.get_object(
                Bucket=self.bucket, Key=name, Range=f"bytes={start}-{last}"
            )
        except ClientError as exc:
            code = _error_code(exc)
            if code in _MISSING:
                raise self._missing(key) from None
            if code == "InvalidRange":
                actual = exc.response.get("Error", {}).get("ActualObjectSize")
                size = int(actual) if actual is not None else self.size(key)
                raise RangeNotSatisfiable(key, start, size) from None
            raise
        body = answer["Body"]
        match = _CONTENT_RANGE.fullmatch(answer.get("ContentRange") or "")
        if match is None or int(match.group(1)) != start:
            body.close()
            raise OSError(f"{self.location()}: the server ignored the Range of {key!r}")
        stop, size = int(match.group(2)) + 1, int(match.group(3))
        return BlobRange(body.iter_chunks(chunk_size), body.close, start, stop, size)

    def read_range(self, key: str, start: int, end: int | None = None) -> bytes:
        return self.open_range(key, start, end).read()

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            answer: dict[str, Any] = self.client.head_object(
                Bucket=self.bucket, Key=self._name(key)
            )
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                return None
            raise
        return answer

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise self._missing(key)
        return int(head["ContentLength"])

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def modified(self, key: str) -> datetime:
        head = self._head(key)
        if head is None:
            raise self._missing(key)
        stamp = head["LastModified"]  # botocore parses the header into an aware datetime
        if not isinstance(stamp, datetime):
            raise OSError(f"{self.location()}: no LastModified for {key!r}")
        return stamp.astimezone(UTC)

    def delete(self, key: str) -> bool:
        # S3's DELETE succeeds whether or not the object exists; ask first to tell which.
        existed = self._head(key) is not None
        self.client.delete_object(Bucket=self.bucket, Key=self._name(key))
        return existed

    def iter_keys(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)
        base = f"{self.prefix}/" if self.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket,
            Prefix=base + prefix,
            PaginationConfig={"PageSize": self.page_size},
        )
        for page in pages:
            for item in page.get("Contents", ()):
                yield str(item["Key"])[len(base) :]

    def signed_url(self, key: str, expires_in: int) -> str:
        name = self._name(key)
        _check_expiry(expires_in)
        url: str = self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": name}, ExpiresIn=expires_in
        )
        return url

    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

"""Resumable uploads (service level): staging in the home region, offsets, resumption."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from reelm.accounts.errors import AccountError, NotFound
from reelm.accounts.service import CurrentUser, SignedUp, log_in
from reelm.bootstrap import Platform
from reelm.media import uploads
from reelm.media.uploads import UploadConflict, UploadMeta, UploadTooLarge

from .conftest import PASSWORD
from .tus import run_apart


async def _chunks(
    data: bytes, size: int = 7, fail_after: int | None = None
) -> AsyncIterator[bytes]:
    sent = 0
    for i in range(0, len(data), size):
        if fail_after is not None and sent >= fail_after:
            raise ConnectionResetError("client went away")
        yield data[i : i + size]
        sent += size


def _user(platform: Platform, new_user: Callable[..., SignedUp], market: str) -> CurrentUser:
    signed = new_user(market)
    return log_in(platform, signed.handle, PASSWORD)[1]


def test_upload_resumes_after_an_interruption(
    platform: Platform, new_user: Callable[..., SignedUp]
) -> None:
    user = _user(platform, new_user, "CA")
    data = bytes(range(256)) * 40
    state = uploads.create_upload(
        platform, user, len(data), UploadMeta(caption="  Hello #tus  ", visibility="private")
    )
    path = uploads.staging_path(platform, "ca", state.id)
    assert path.parent == platform.settings.staging_dir("ca")
    with pytest.raises(ConnectionResetError):
        run_apart(uploads.append(platform, user, state.id, 0, _chunks(data, fail_after=700)))
    resumed = uploads.upload_state(platform, user, state.id)
    assert 0 < resumed.offset < len(data)
    with pytest.raises(UploadConflict):
        run_apart(uploads.append(platform, user, state.id, 0, _chunks(data)))
    done = run_apart(
        uploads.append(platform, user, state.id, resumed.offset, _chunks(data[resumed.offset :]))
    )
    assert done.offset == len(data)
    assert path.read_bytes() == data
    assert uploads.upload_meta(platform, user, state.id).caption == "Hello #tus"
    with pytest.raises(UploadConflict):
        run_apart(uploads.append(platform, user, state.id, len(data), _chunks(b"x")))


def test_upload_limits_and_ownership(platform: Platform, new_user: Callable[..., SignedUp]) -> None:
    owner = _user(platform, new_user, "US")
    other = _user(platform, new_user, "US")
    with pytest.raises(UploadTooLarge):
        uploads.create_upload(platform, owner, platform.settings.max_upload_bytes + 1, UploadMeta())
    with pytest.raises(AccountError):
        uploads.create_upload(platform, owner, 0, UploadMeta())
    state = uploads.create_upload(platform, owner, 10, UploadMeta())
    with pytest.raises(NotFound):
        uploads.upload_state(platform, other, state.id)
    with pytest.raises(NotFound):
        uploads.upload_state(platform, owner, uuid.uuid4())
    with pytest.raises(UploadTooLarge):
        run_apart(uploads.append(platform, owner, state.id, 0, _chunks(b"x" * 11)))
    uploads.terminate(platform, owner, state.id)
    assert not uploads.staging_path(platform, "us", state.id).exists()
    with pytest.raises(NotFound):
        uploads.upload_state(platform, owner, state.id)


def test_open_uploads_are_capped(platform: Platform, new_user: Callable[..., SignedUp]) -> None:
    user = _user(platform, new_user, "NZ")
    for _ in range(uploads.MAX_OPEN_UPLOADS):
        uploads.create_upload(platform, user, 100, UploadMeta())
    with pytest.raises(uploads.TooManyUploads):
        uploads.create_upload(platform, user, 100, UploadMeta())


def test_videos_a_day_are_capped(
    platform_factory: Callable[..., Platform], new_user: Callable[..., SignedUp]
) -> None:
    capped = platform_factory(max_uploads_per_day=2)
    signed = new_user("NZ", platform_=capped)
    user = log_in(capped, signed.handle, PASSWORD)[1]
    first = uploads.create_upload(capped, user, 100, UploadMeta())
    uploads.create_upload(capped, user, 100, UploadMeta())
    with pytest.raises(uploads.TooManyUploads, match="2 videos a day"):
        uploads.create_upload(capped, user, 100, UploadMeta())
    uploads.terminate(capped, user, first.id)  # a cancelled upload does not count
    uploads.create_upload(capped, user, 100, UploadMeta())

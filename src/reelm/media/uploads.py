"""Resumable uploads (tus 1.0 core + creation + termination), staged in the home region.

An upload's bytes are appended to a staging file in the uploader's home region only; the row
that tracks it (length, offset, and the caption and settings chosen at upload time, encrypted)
lives in the home region's database. When the last byte arrives the upload is handed to the
video pipeline and its staging file is removed.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, BinaryIO, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, func, select, text
from starlette.concurrency import run_in_threadpool

from reelm.accounts.errors import AccountError, InvalidInput, NotFound, SettingLocked
from reelm.accounts.models import Account
from reelm.accounts.schemas import PrivacySettings, clean_text
from reelm.accounts.service import CurrentUser, now
from reelm.bootstrap import Platform
from reelm.media.models import Upload, Video
from reelm.regions.cell import UserScope
from reelm.regions.fence import UserMoving, hold, is_settled
from reelm.social import access

UPLOAD_TTL = timedelta(hours=24)
MAX_OPEN_UPLOADS = 5
TEEN_COMMENTS = "videos of people under 16 take comments from followers, not everyone"


class UploadConflict(AccountError):
    slug = "upload-offset-mismatch"
    status = 409
    title = "Upload offset does not match"


class UploadTooLarge(AccountError):
    slug = "upload-too-large"
    status = 413
    title = "Upload too large"


class TooManyUploads(AccountError):
    slug = "too-many-uploads"
    status = 429
    title = "Too many uploads in progress"


class UploadMeta(BaseModel):
    """What the uploader chose: kept encrypted until the video exists."""

    model_config = ConfigDict(extra="forbid")

    caption: Annotated[str, Field(max_length=2200)] = ""
    visibility: Literal["public", "followers", "private"] = "public"
    allow_comments: bool = True
    comments_from: Literal["everyone", "followers"] = "everyone"
    filename: Annotated[str, Field(max_length=255)] = ""

    def cleaned(self) -> UploadMeta:
        return self.model_copy(
            update={"caption": clean_text(self.caption), "filename": clean_text(self.filename)}
        )

    def with_defaults(self, privacy: PrivacySettings, teen: bool) -> UploadMeta:
        """The comment settings a new video starts with: those chosen for it, else the
        account's "who can comment on your videos". An under-16's never 'everyone': left
        unsaid, it becomes 'followers'; asked for, it is refused (SettingLocked)."""
        chosen = self.model_fields_set
        update: dict[str, object] = {}
        if "comments_from" not in chosen and privacy.comments != "no_one":
            update["comments_from"] = privacy.comments
        if "allow_comments" not in chosen and privacy.comments == "no_one":
            update["allow_comments"] = False
        meta = self.model_copy(update=update)
        if teen and meta.comments_from == "everyone":
            if "comments_from" in chosen:
                raise SettingLocked(TEEN_COMMENTS, field="comments_from")
            meta = meta.model_copy(update={"comments_from": "followers"})
        return meta


@dataclass(frozen=True)
class UploadState:
    id: uuid.UUID
    length: int
    offset: int
    expires_at: datetime
    video_id: uuid.UUID | None


def staging_path(platform: Platform, region: str, upload_id: uuid.UUID) -> Path:
    directory = platform.settings.staging_dir(region)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    return directory / f"{upload_id}.part"


def _scope(platform: Platform, user: CurrentUser) -> UserScope:
    return platform.cell(user.home_region).for_user(user.user_id, user.home_region)


def create_upload(
    platform: Platform, user: CurrentUser, length: int, meta: UploadMeta
) -> UploadState:
    limit = platform.settings.max_upload_bytes
    if length <= 0:
        raise InvalidInput("the file is empty (0 bytes)", field="upload-length")
    if length > limit:
        raise UploadTooLarge(
            f"videos are limited to {limit // 1_000_000} MB", field="upload-length"
        )
    scope = _scope(platform, user)
    cipher = scope.cipher()
    upload_id = uuid.uuid4()
    teen = access.profile_facts(platform, user.user_id).teen
    with scope.cell.db.transaction() as s:
        hold(s, user.user_id)
        account = s.get(Account, user.user_id)
        if account is None:
            raise NotFound("no such account")
        privacy = PrivacySettings.model_validate_json(
            cipher.decrypt("settings", account.settings_ct)
        )
        meta = meta.with_defaults(privacy, teen)
        # One creation at a time per user, so parallel requests cannot all pass the limits.
        s.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:who, 7))"),
            {"who": str(user.user_id)},
        )
        open_uploads = s.scalar(
            select(func.count())
            .select_from(Upload)
            .where(
                Upload.owner_id == user.user_id,
                Upload.video_id.is_(None),
                Upload.expires_at > now(),
            )
        )
        if (open_uploads or 0) >= MAX_OPEN_UPLOADS:
            raise TooManyUploads(
                f"finish or cancel one of your {MAX_OPEN_UPLOADS} uploads in progress first"
            )
        daily = platform.settings.max_uploads_per_day
        posted = s.scalar(
            select(func.count())
            .select_from(Video)
            .where(Video.owner_id == user.user_id, Video.created_at > now() - timedelta(days=1))
        )
        if (posted or 0) + (open_uploads or 0) >= daily:
            raise TooManyUploads(f"you can post {daily} videos a day: try again in a few hours")
        row = Upload(
            id=upload_id,
            owner_id=user.user_id,
            length=length,
            offset=0,
            metadata_ct=cipher.encrypt("upload_meta", meta.cleaned().model_dump_json()),
            expires_at=now() + UPLOAD_TTL,
        )
        s.add(row)
    staging_path(platform, user.home_region, upload_id).touch(mode=0o600)
    return UploadState(upload_id, length, 0, row.expires_at, None)


def _owned(platform: Platform, user: CurrentUser, upload_id: uuid.UUID) -> Upload:
    scope = _scope(platform, user)
    with scope.cell.db.transaction() as s:
        row = s.get(Upload, upload_id)
    if row is None or row.owner_id != user.user_id or row.expires_at <= now():
        raise NotFound("no such upload")
    return row


def upload_state(platform: Platform, user: CurrentUser, upload_id: uuid.UUID) -> UploadState:
    row = _owned(platform, user, upload_id)
    return UploadState(row.id, row.length, row.offset, row.expires_at, row.video_id)


def upload_meta(platform: Platform, user: CurrentUser, upload_id: uuid.UUID) -> UploadMeta:
    row = _owned(platform, user, upload_id)
    cipher = _scope(platform, user).cipher()
    return UploadMeta.model_validate_json(cipher.decrypt("upload_meta", row.metadata_ct))


async def append(
    platform: Platform,
    user: CurrentUser,
    upload_id: uuid.UUID,
    offset: int,
    chunks: AsyncIterator[bytes],
) -> UploadState:
    """Append a PATCH body at ``offset``. A body that ends early keeps what arrived, so the
    client resumes from the new offset (tus semantics)."""
    row = await run_in_threadpool(_owned, platform, user, upload_id)
    # Moving to another region: no bytes now (the client resumes, against the new home).
    await run_in_threadpool(_settled, platform, user)
    if row.offset == row.length:
        # Every byte is here but the video was not made (the server failed after the last
        # byte): an empty PATCH at the end lets the client ask again.
        async for chunk in chunks:
            if chunk:
                raise UploadConflict("this upload is already complete")
        if offset != row.offset:
            raise UploadConflict("this upload is already complete")
        # Asking again is harmless, also once the video exists (finished by the server after
        # a region migration, say): the answer is the same.
        return upload_state(platform, user, upload_id)
    if offset != row.offset:
        raise UploadConflict(f"the upload is at byte {row.offset}, not {offset}")
    path = staging_path(platform, user.home_region, upload_id)
    written = 0
    f = await run_in_threadpool(_open_at, path, offset)
    try:
        async for chunk in chunks:
            if offset + written + len(chunk) > row.length:
                raise UploadTooLarge("more bytes than the upload's declared length")
            await run_in_threadpool(f.write, chunk)
            written += len(chunk)
    finally:
        # Disk work off the event loop: other requests (video playback) keep flowing.
        await run_in_threadpool(_sync_close, f)
        await run_in_threadpool(_record_offset, platform, user, upload_id, offset, written)
    return upload_state(platform, user, upload_id)


def _settled(platform: Platform, user: CurrentUser) -> None:
    with _scope(platform, user).cell.db.transaction() as s:
        if not is_settled(s, user.user_id):
            raise UserMoving(user.user_id)


def _open_at(path: Path, offset: int) -> BinaryIO:
    f = path.open("r+b")
    f.truncate(offset)  # drop any tail a broken earlier request left unrecorded
    f.seek(offset)
    return f


def _sync_close(f: BinaryIO) -> None:
    try:
        f.flush()
        os.fsync(f.fileno())
    finally:
        f.close()


def _record_offset(
    platform: Platform, user: CurrentUser, upload_id: uuid.UUID, offset: int, written: int
) -> None:
    scope = _scope(platform, user)
    with scope.cell.db.transaction() as s:
        hold(s, user.user_id)
        row = s.get(Upload, upload_id, with_for_update=True)
        if row is None:
            return
        if row.offset != offset:
            # A concurrent PATCH won the race; this request's bytes may be garbage now.
            raise UploadConflict("another request is writing this upload")
        row.offset = offset + written


def terminate(platform: Platform, user: CurrentUser, upload_id: uuid.UUID) -> None:
    """Cancel an upload still receiving bytes. Once every byte is here the file is being
    checked or is a video: that is deleted as a video, not cancelled as an upload."""
    _owned(platform, user, upload_id)
    with _scope(platform, user).cell.db.transaction() as s:
        hold(s, user.user_id)
        row = s.get(Upload, upload_id, with_for_update=True)
        if row is not None and (row.video_id is not None or row.offset == row.length):
            raise UploadConflict("every byte of this upload has arrived: delete the video instead")
        s.execute(delete(Upload).where(Upload.id == upload_id))
    discard(platform, user.home_region, upload_id)


def discard(platform: Platform, region: str, upload_id: uuid.UUID) -> None:
    with platform.cell(region).db.transaction() as s:
        s.execute(delete(Upload).where(Upload.id == upload_id))
    staged = staging_path(platform, region, upload_id)
    staged.unlink(missing_ok=True)
    staged.with_suffix(".src").unlink(missing_ok=True)  # a checked file not yet a video
    # Temporary files a killed process left (".<id>.<random>"; plaintext among them).
    for scratch in staged.parent.glob(f".{upload_id}.*"):
        scratch.unlink(missing_ok=True)


def expire_uploads(platform: Platform, region: str) -> int:
    """Remove uploads abandoned for longer than their time to live (and their bytes)."""
    with platform.cell(region).db.transaction() as s:
        stale = list(
            s.scalars(
                select(Upload.id).where(Upload.expires_at <= now(), Upload.video_id.is_(None))
            )
        )
        # Finished uploads whose video exists: only the row is left to forget.
        s.execute(delete(Upload).where(Upload.expires_at <= now(), Upload.video_id.is_not(None)))
    for upload_id in stale:
        discard(platform, region, upload_id)
    return len(stale)

"""The video pipeline: a finished upload becomes a playable video, in the uploader's home region.

1. ``finish_upload`` (in the request that delivers the last byte): probe the staged file in a
   sandboxed child; a rejected file is removed at once and the client gets the reason. An
   accepted one is encrypted under the owner's data key into the home region's blob store
   (``originals/<owner>/<video>``: it carries GPS and device tags), a ``videos`` row is written
   (status ``queued``) and a ``media.process`` job is deferred on the home region's queue.
   The video id is the upload id, which makes every step safe to repeat.
2. ``process_video`` (the job, on a worker of the home region): transcode into renditions and a
   poster, all metadata stripped. A public video's files go to the public store in the clear
   (``v/<video>/...``) and its public record to the catalog; a followers-only or private
   video's files stay in the home region, encrypted like the original
   (``private/<owner>/<video>/...``), served only through short-lived signed URLs.
3. ``delete_video``: catalog record, then every blob, then the rows. A job still running for a
   deleted video notices when it finishes and removes what it wrote.

Payloads and log lines carry random ids only, never a caption or a file name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from sqlalchemy import delete, exists, func, select, text, update
from sqlalchemy.dialects.postgresql import insert

from reelm.accounts.errors import AccountError, NotFound, SettingLocked
from reelm.accounts.schemas import clean_text
from reelm.accounts.service import CurrentUser
from reelm.bootstrap import Platform
from reelm.media import catalog
from reelm.media.captions import parse_caption
from reelm.media.errors import MediaRejected
from reelm.media.models import PublicVideo, Upload, Video
from reelm.media.probe import MediaLimits, ProbeResult, probe_isolated
from reelm.media.serving import BlobFile
from reelm.media.transcode import Rendition, TranscodeFailed, plan_renditions, transcode
from reelm.media.uploads import TEEN_COMMENTS, UploadMeta, discard, staging_path
from reelm.regions.cell import Cell, UserScope
from reelm.regions.fence import UserMoving, hold, is_settled
from reelm.search.text import video_text
from reelm.social import access, mentions
from reelm.storage.blobs import BlobStore
from reelm.storage.crypto import decrypt_blob, encrypt_blob

log = logging.getLogger("reelm.media")

MEDIA_QUEUE = "media"
PROCESS_TASK = "media.process"
MAX_ATTEMPTS = 3
SWEEP_AFTER = timedelta(minutes=10)
ORIGINAL = "original"

FAILED_GENERIC = (
    "We could not process this video. Try again, or export the video again from your "
    "camera or editing app and upload the new file."
)


class VideoNotReady(AccountError):
    slug = "video-not-retryable"
    status = 409
    title = "The video cannot be retried now"


# ---- where things live ---------------------------------------------------------------------


def original_key(owner: uuid.UUID, video: uuid.UUID) -> str:
    return f"originals/{owner}/{video}"


def private_prefix(owner: uuid.UUID, video: uuid.UUID) -> str:
    return f"private/{owner}/{video}/"


def public_prefix(video: uuid.UUID) -> str:
    return f"v/{video}/"


def source_path(platform: Platform, region: str, video: uuid.UUID) -> Path:
    """The plaintext source a job transcodes: the staged upload, renamed; removed when done."""
    return staging_path(platform, region, video).with_suffix(".src")


def scratch_file(beside: Path) -> Path:
    """A new temporary file next to ``beside``, named ``.<id>.<random>`` so that two callers
    never share one and deleting the video finds it (see ``remove_scratch``)."""
    fd, name = tempfile.mkstemp(prefix=f".{beside.name.split('.')[0]}.", dir=beside.parent)
    os.close(fd)
    return Path(name)


def work_dir(platform: Platform, region: str, video: uuid.UUID) -> Path:
    return staging_path(platform, region, video).with_suffix(".work")


def limits(platform: Platform) -> MediaLimits:
    return MediaLimits(
        max_bytes=platform.settings.max_upload_bytes,
        max_seconds=platform.settings.max_video_seconds,
    )


def is_public(video: Video) -> bool:
    """Public by its owner's choice, and not removed by a moderator."""
    return video.visibility == "public" and video.removed is None


def _scope(platform: Platform, user: CurrentUser) -> UserScope:
    return platform.cell(user.home_region).for_user(user.user_id, user.home_region)


# ---- encrypted blobs ------------------------------------------------------------------------


def put_encrypted(
    cell: Cell, owner: uuid.UUID, key: str, name: str, source: Path, scratch: Path
) -> int:
    """Encrypt ``source`` under the owner's data key and store it at ``key``; returns the
    plaintext size. ``scratch`` is a temporary file in the region's staging area."""
    data_key = cell.keys.data_key(owner)
    try:
        with source.open("rb") as plain, scratch.open("wb") as sealed:
            size = encrypt_blob(data_key, owner, name, plain, sealed)
        cell.blobs.put_file(key, scratch)
    finally:
        scratch.unlink(missing_ok=True)
    return size


def get_encrypted(cell: Cell, owner: uuid.UUID, key: str, name: str, target: Path) -> None:
    """Decrypt the blob at ``key`` into ``target`` (written atomically)."""
    data_key = cell.keys.data_key(owner)
    partial = scratch_file(target)
    try:
        sealed = BlobFile(cell.blobs, key)
        with partial.open("wb") as plain:
            decrypt_blob(data_key, owner, name, sealed, sealed.size, plain)
        partial.rename(target)
    finally:
        partial.unlink(missing_ok=True)


# ---- 1. finishing an upload ------------------------------------------------------------------


def finish_upload(platform: Platform, user: CurrentUser, upload_id: uuid.UUID) -> uuid.UUID:
    """Turn a complete upload into a queued video; raise :class:`MediaRejected` (the upload
    and its bytes gone) when the file is not a video we take. Safe to call again."""
    scope = _scope(platform, user)
    cell, region = scope.cell, user.home_region
    video_id = upload_id
    with cell.db.transaction() as s:
        upload = s.get(Upload, upload_id)
        existing = s.get(Video, video_id)
    if existing is not None:
        return video_id
    if upload is None or upload.owner_id != user.user_id or upload.offset != upload.length:
        raise NotFound("no such complete upload")
    with cell.db.transaction() as s:
        if not is_settled(s, user.user_id):  # moving: finish it in the new home, after
            raise UserMoving(user.user_id)
    staged = staging_path(platform, region, upload_id)
    source = source_path(platform, region, video_id)
    if staged.exists():
        try:
            info = probe_isolated(staged, limits(platform))
        except MediaRejected:
            discard(platform, region, upload_id)
            raise
        staged.rename(source)
    elif source.exists():  # a previous attempt got this far
        info = probe_isolated(source, limits(platform))
    else:
        raise NotFound("no such complete upload")
    cipher = scope.cipher()
    meta = UploadMeta.model_validate_json(cipher.decrypt("upload_meta", upload.metadata_ct))
    key = original_key(user.user_id, video_id)
    with cell.db.transaction() as s:
        # The fence is held while the original is written: a migration freezing the owner
        # waits for it (and copies it), or this finds the owner moving and writes nothing.
        hold(s, user.user_id)
        size = put_encrypted(cell, user.user_id, key, ORIGINAL, source, scratch_file(source))
        # The upload's row, locked: a cancel that came while we checked and encrypted wins.
        if s.get(Upload, upload_id, with_for_update=True) is None:
            cell.blobs.delete(key)
            source.unlink(missing_ok=True)
            raise NotFound("this upload was cancelled")
        s.execute(
            insert(Video)
            .values(
                id=video_id,
                owner_id=user.user_id,
                status="queued",
                progress=0,
                visibility=meta.visibility,
                allow_comments=meta.allow_comments,
                comments_from=meta.comments_from,
                caption_ct=cipher.encrypt("caption", meta.caption),
                original_key=key,
                original_bytes=size,
                duration=info.duration,
                width=info.video.display_width,
                height=info.video.display_height,
                renditions=[],
                attempts=0,
            )
            .on_conflict_do_nothing()
        )
        s.execute(update(Upload).where(Upload.id == upload_id).values(video_id=video_id))
    enqueue(platform, region, video_id)
    return video_id


def ingest(platform: Platform, user: CurrentUser, path: Path, meta: UploadMeta) -> uuid.UUID:
    """Upload a local file as ``user`` (the demo's sample clips, the benchmarks): the same
    staging, checks and job as an upload over HTTP, without the HTTP."""
    from reelm.media.uploads import create_upload

    state = create_upload(platform, user, path.stat().st_size, meta)
    shutil.copyfile(path, staging_path(platform, user.home_region, state.id))
    with platform.cell(user.home_region).db.transaction() as s:
        s.execute(update(Upload).where(Upload.id == state.id).values(offset=state.length))
    return finish_upload(platform, user, state.id)


def enqueue(platform: Platform, region: str, video_id: uuid.UUID) -> None:
    """Defer the processing job; at most one waits per video (procrastinate's queueing lock)."""
    from procrastinate.exceptions import AlreadyEnqueued

    from reelm.jobs import queue_of

    with contextlib.suppress(AlreadyEnqueued):
        queue_of(platform, region).defer(
            PROCESS_TASK, queueing_lock=str(video_id), video_id=str(video_id)
        )


# ---- 2. the job ------------------------------------------------------------------------------


@dataclass
class ProgressWriter:
    """Writes a job's progress to the video row, at most twice a second and per whole percent."""

    cell: Cell
    video_id: uuid.UUID
    echo: Callable[[uuid.UUID, int], None] | None = None
    # The owner, whose migration fence each write holds (a frozen owner stops the job).
    owner: uuid.UUID | None = None
    _last: int = -1
    _at: float = 0.0

    def __call__(self, fraction: float) -> None:
        percent = max(0, min(99, int(fraction * 100)))
        moment = time.monotonic()
        if percent == self._last or (moment - self._at < 0.5 and percent - self._last < 10):
            return
        self._last, self._at = percent, moment
        with self.cell.db.transaction() as s:
            if self.owner is not None:
                hold(s, self.owner)
            found = s.execute(
                update(Video)
                .where(Video.id == self.video_id, Video.status == "processing")
                .values(progress=percent)
                .returning(Video.id)
            ).first()
        if not found:
            raise VideoGone(self.video_id)
        if self.echo is not None:
            self.echo(self.video_id, percent)


class VideoGone(Exception):
    """The video was deleted while a job worked on it."""


def process_video(
    platform: Platform,
    region: str,
    video_id: uuid.UUID,
    *,
    attempt: int = 1,
    final_attempt: bool = True,
    echo: Callable[[uuid.UUID, int], None] | None = None,
) -> str:
    """Make the renditions of one video. Returns the final status. Raises on a failure worth
    retrying unless this is the final attempt (the video is then marked failed)."""
    cell = platform.cell(region)
    with cell.db.transaction() as s:
        video = s.get(Video, video_id, with_for_update=True)
        if video is None:
            # Deleted: whatever an earlier attempt published must not outlive it.
            _remove_prefix(platform.public_blobs, public_prefix(video_id))
            return "gone"
        if video.status in ("ready", "failed"):
            return video.status
        if not is_settled(s, video.owner_id):
            # The owner is moving to another region: the job is made again there.
            return "moved"
        video.status, video.progress, video.attempts = "processing", 0, attempt
        video.failure = None
        owner = video.owner_id
    # An earlier attempt may have stored files (in either store, if the owner changed the
    # visibility since): start clean.
    _remove_renditions(platform, cell, owner, video_id)
    work = work_dir(platform, region, video_id)
    try:
        source = _source(platform, cell, owner, video_id)
        info = probe_isolated(source, limits(platform))
        renditions = _transcode(info, source, work, ProgressWriter(cell, video_id, echo, owner))
        stored = _store(platform, cell, owner, video_id, renditions)
        status = _publish(platform, cell, video_id, stored)
    except VideoGone:
        status = "gone"
    except UserMoving:
        # The owner is being moved to another region: the destination makes the video (the
        # migration queues it there); what this attempt wrote here is purged with the rest.
        log.info("video %s: its owner is moving; left to the new region", video_id)
        shutil.rmtree(work, ignore_errors=True)
        # The decrypted source must not outlive the purge of the owner's data here.
        source = source_path(platform, region, video_id)
        source.unlink(missing_ok=True)
        for scratch in source.parent.glob(f".{video_id}.*"):
            scratch.unlink(missing_ok=True)
        return "moved"
    except MediaRejected as exc:
        status = _fail(cell, video_id, exc.detail)
    except Exception as exc:
        with cell.db.transaction() as s:
            gone = s.get(Video, video_id) is None
        if gone:  # deleted while we worked (its files pulled from under us)
            _remove_blobs(platform, cell, owner, video_id)
            shutil.rmtree(work, ignore_errors=True)
            return "gone"
        if not final_attempt:
            log.warning("video %s attempt %d failed, will retry: %r", video_id, attempt, exc)
            with cell.db.transaction() as s:
                s.execute(
                    update(Video)
                    .where(Video.id == video_id, Video.status == "processing")
                    .values(status="queued", progress=0)
                )
            shutil.rmtree(work, ignore_errors=True)
            raise
        log.exception("video %s failed after %d attempts", video_id, attempt)
        status = _fail(cell, video_id, FAILED_GENERIC)
    shutil.rmtree(work, ignore_errors=True)
    if status != "queued":
        source_path(platform, region, video_id).unlink(missing_ok=True)
    if status == "gone":
        _remove_blobs(platform, cell, owner, video_id)
    elif status == "failed":
        # What a failed attempt stored, public files above all, goes; the original stays for
        # a retry.
        _remove_renditions(platform, cell, owner, video_id)
    elif status == "ready":
        # After the video is ready and committed: a failure here cannot undo it.
        mentions.from_caption(platform, cell, video_id)
    return status


def _source(platform: Platform, cell: Cell, owner: uuid.UUID, video_id: uuid.UUID) -> Path:
    source = source_path(platform, cell.region, video_id)
    if not source.exists():  # another worker's disk, or a retry after cleanup: from the original
        get_encrypted(cell, owner, original_key(owner, video_id), ORIGINAL, source)
    return source


def _transcode(
    info: ProbeResult, source: Path, work: Path, progress: ProgressWriter
) -> list[Rendition]:
    shutil.rmtree(work, ignore_errors=True)
    plan = plan_renditions(
        info.video.display_width,
        info.video.display_height,
        info.audio is not None,
        info.video.average_fps,
    )
    try:
        return transcode(source, work, plan, on_progress=progress)
    except TranscodeFailed as exc:
        # The tail of FFmpeg's output goes to the operator's log only (it names no path).
        log.warning("transcode failed: %s", exc.stderr_tail[-1500:])
        raise


def _store(
    platform: Platform,
    cell: Cell,
    owner: uuid.UUID,
    video_id: uuid.UUID,
    renditions: list[Rendition],
) -> list[dict[str, Any]]:
    # The fence is held while the files are written: a migration freezing the owner waits
    # for them (and copies them), or this finds the owner moving and writes nothing.
    with cell.db.transaction() as s:
        hold(s, owner)
        video = s.get(Video, video_id)
        if video is None:
            raise VideoGone(video_id)
        return _store_files(platform, cell, owner, video, renditions)


def _store_files(
    platform: Platform,
    cell: Cell,
    owner: uuid.UUID,
    video: Video,
    renditions: list[Rendition],
) -> list[dict[str, Any]]:
    video_id = video.id
    stored = []
    for r in renditions:
        if is_public(video):
            key = public_prefix(video_id) + r.path.name
            platform.public_blobs.put_file(key, r.path)
        else:
            key = private_prefix(owner, video_id) + r.path.name
            put_encrypted(cell, owner, key, r.path.name, r.path, scratch_file(r.path))
        stored.append(
            {
                "name": r.name,
                "kind": r.kind,
                "file": r.path.name,
                "key": key,
                "width": r.width,
                "height": r.height,
                "bytes": r.bytes,
                "mime_type": r.mime_type,
            }
        )
    return stored


def _publish(
    platform: Platform, cell: Cell, video_id: uuid.UUID, stored: list[dict[str, Any]]
) -> str:
    with cell.db.transaction() as s:
        video = s.get(Video, video_id, with_for_update=True)
        if video is None:
            raise VideoGone(video_id)
        hold(s, video.owner_id)
        moved_from: list[dict[str, Any]] = []
        if _stored_publicly(stored) != is_public(video):
            # The owner changed the visibility while the job worked: follow it.
            moved_from, stored = stored, _move(platform, cell, video, stored)
        video.status, video.progress = "ready", 100
        video.renditions = stored
        video.poster_key = next(r["key"] for r in stored if r["kind"] == "poster")
        # The catalog before the row commits: if we crash in between, the retry publishes the
        # same record again (same id, nothing duplicated).
        _sync_catalog(platform, cell, video)
    _delete_entries(platform, cell, moved_from)
    with cell.db.transaction() as s:
        s.execute(delete(Upload).where(Upload.id == video_id))
    log.info("video %s ready", video_id)
    return "ready"


def _public_rendition(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in ("name", "file", "key", "width", "height", "bytes", "mime_type")}


def _stored_publicly(entries: list[dict[str, Any]]) -> bool:
    return any(str(r["key"]).startswith("v/") for r in entries)


def _sync_catalog(platform: Platform, cell: Cell, video: Video) -> None:
    """Make the catalog agree with a ready video: its public record while it is public, none
    otherwise. The owner's next pages see it (read-your-writes) when this runs in their
    process; a worker's publication is seen by the owner through their home region."""
    with platform.catalog_write(video.owner_id) as c:
        if not is_public(video):
            c.execute(delete(PublicVideo).where(PublicVideo.id == video.id))
            return
        caption = (
            cell.for_user(video.owner_id, cell.region).cipher().decrypt("caption", video.caption_ct)
        )
        parsed = parse_caption(caption)
        public = {
            "caption": caption,
            "hashtags": list(parsed.hashtags),
            "mentions": list(parsed.mentions),
            "allow_comments": video.allow_comments,
            "comments_from": video.comments_from,
            "renditions": [_public_rendition(r) for r in video.renditions if r["kind"] == "video"],
            "poster_key": video.poster_key,
            "search_text": video_text(caption, list(parsed.hashtags)),
        }
        c.execute(
            insert(PublicVideo)
            .values(
                id=video.id,
                owner_id=video.owner_id,
                duration=video.duration or 0.0,
                width=video.width or 0,
                height=video.height or 0,
                share_count=0,
                **public,
            )
            .on_conflict_do_update(index_elements=[PublicVideo.id], set_=public)
        )
    catalog.note_published(platform)  # committed: this process's feed pools take it at once


def _move(
    platform: Platform, cell: Cell, video: Video, entries: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Copy a video's renditions and poster to where its visibility says they belong (the
    public store in clear, or the home region's store encrypted); returns the new entries. The
    old files are left for the caller to delete once the row points to the new ones."""
    to_public = is_public(video)
    scratch = work_dir(platform, cell.region, video.id)
    scratch.mkdir(parents=True, exist_ok=True)
    moved: list[dict[str, Any]] = []
    try:
        for entry in entries:
            plain = scratch / entry["file"]
            if str(entry["key"]).startswith("v/"):
                with plain.open("wb") as f, platform.public_blobs.open_range(entry["key"]) as r:
                    for piece in r:
                        f.write(piece)
            else:
                get_encrypted(cell, video.owner_id, entry["key"], entry["file"], plain)
            if to_public:
                key = public_prefix(video.id) + entry["file"]
                platform.public_blobs.put_file(key, plain)
            else:
                key = private_prefix(video.owner_id, video.id) + entry["file"]
                put_encrypted(cell, video.owner_id, key, entry["file"], plain, scratch_file(plain))
            plain.unlink()
            moved.append({**entry, "key": key})
    except BaseException:
        _delete_entries(platform, cell, moved)  # no half-moved copies, above all public ones
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return moved


def _delete_entries(platform: Platform, cell: Cell, entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        key = str(entry["key"])
        (platform.public_blobs if key.startswith("v/") else cell.blobs).delete(key)


def _fail(cell: Cell, video_id: uuid.UUID, reason: str) -> str:
    with cell.db.transaction() as s:
        found = s.execute(
            update(Video)
            .where(Video.id == video_id)
            .values(status="failed", progress=0, failure=reason)
            .returning(Video.id)
        ).first()
    return "failed" if found else "gone"


# ---- 3. retry and delete ---------------------------------------------------------------------


def owned_video(platform: Platform, user: CurrentUser, video_id: uuid.UUID) -> Video:
    """The user's own video from their home region, or NotFound (never someone else's)."""
    scope = _scope(platform, user)
    with scope.cell.db.transaction() as s:
        video = s.get(Video, video_id)
    if video is None or video.owner_id != user.user_id:
        raise NotFound("no such video")
    return video


def retry_video(platform: Platform, user: CurrentUser, video_id: uuid.UUID) -> None:
    video = owned_video(platform, user, video_id)
    if video.status != "failed":
        raise VideoNotReady(f"only a failed video can be retried; this one is {video.status}")
    with platform.cell(user.home_region).db.transaction() as s:
        hold(s, user.user_id)
        s.execute(
            update(Video)
            .where(Video.id == video_id, Video.status == "failed")
            .values(status="queued", progress=0, failure=None, attempts=0)
        )
    enqueue(platform, user.home_region, video_id)


class VideoUpdate(BaseModel):
    """What the owner may change after uploading. Absent fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    caption: Annotated[str, Field(max_length=2200), AfterValidator(clean_text)] | None = None
    visibility: Literal["public", "followers", "private"] | None = None
    allow_comments: bool | None = None
    comments_from: Literal["everyone", "followers"] | None = None


def update_video(
    platform: Platform, user: CurrentUser, video_id: uuid.UUID, change: VideoUpdate
) -> None:
    """Change a video's caption, visibility or comment setting. Turning a ready video private
    (or followers-only) takes its files out of the public store and out of the feed at once;
    turning it public publishes them. A video still processing follows the new setting when
    its job publishes it."""
    owned_video(platform, user, video_id)
    if change.comments_from == "everyone" and access.profile_facts(platform, user.user_id).teen:
        raise SettingLocked(TEEN_COMMENTS, field="comments_from")
    scope = _scope(platform, user)
    cell = scope.cell
    with cell.db.transaction() as s:
        hold(s, user.user_id)
        video = s.get(Video, video_id, with_for_update=True)
        if video is None:
            raise NotFound("no such video")
        if change.caption is not None:
            video.caption_ct = scope.cipher().encrypt("caption", change.caption)
        if change.allow_comments is not None:
            video.allow_comments = change.allow_comments
        if change.comments_from is not None:
            video.comments_from = change.comments_from
        if change.visibility is not None:
            video.visibility = change.visibility
        moved_from: list[dict[str, Any]] = []
        if video.status == "ready":
            if _stored_publicly(video.renditions) != is_public(video):
                moved_from = list(video.renditions)
                video.renditions = _move(platform, cell, video, moved_from)
                video.poster_key = next(r["key"] for r in video.renditions if r["kind"] == "poster")
            _sync_catalog(platform, cell, video)
    _delete_entries(platform, cell, moved_from)
    # A new mention, or people who may see the video now: each is told once per video.
    mentions.from_caption(platform, cell, video_id)


def remove_by_moderation(
    platform: Platform, cell: Cell, owner: uuid.UUID, video_id: uuid.UUID, reason: str
) -> None:
    """A moderator's removal: out of the catalog and the public store at once (its files move
    back to the owner's encrypted store, as for a video turned private), and never public
    again, whatever its owner sets. The owner still sees it, marked removed."""
    with cell.db.transaction() as s:
        hold(s, owner)
        video = s.get(Video, video_id, with_for_update=True)
        if video is None or video.owner_id != owner:
            raise NotFound("no such video")
        video.removed = reason
        moved_from: list[dict[str, Any]] = []
        if video.status == "ready":
            if _stored_publicly(video.renditions):
                moved_from = list(video.renditions)
                video.renditions = _move(platform, cell, video, moved_from)
                video.poster_key = next(r["key"] for r in video.renditions if r["kind"] == "poster")
            _sync_catalog(platform, cell, video)
        else:
            with platform.catalog.transaction() as c:
                c.execute(delete(PublicVideo).where(PublicVideo.id == video.id))
    _delete_entries(platform, cell, moved_from)


def delete_video(platform: Platform, user: CurrentUser, video_id: uuid.UUID) -> None:
    video = owned_video(platform, user, video_id)
    remove_video(platform, platform.cell(user.home_region), video)


def remove_video(platform: Platform, cell: Cell, video: Video) -> None:
    """Everything of one video. The video's row stays locked until the end, so a job publishing
    it either finishes first (and what it published is removed here) or finds the row gone (and
    removes what it wrote); a crash rolls the row back and a second delete finishes the work.
    Out of the feed first, then the bytes, then the rows that point to them."""
    with cell.db.transaction() as s:
        hold(s, video.owner_id)
        s.get(Video, video.id, with_for_update=True)
        with platform.catalog.transaction() as c:
            c.execute(delete(PublicVideo).where(PublicVideo.id == video.id))
        # The owner's next pages must not show it (they may read the catalog's replica).
        platform.wrote_catalog(video.owner_id)
        _remove_blobs(platform, cell, video.owner_id, video.id)
        source_path(platform, cell.region, video.id).unlink(missing_ok=True)
        shutil.rmtree(work_dir(platform, cell.region, video.id), ignore_errors=True)
        s.execute(delete(Video).where(Video.id == video.id))
    discard(platform, cell.region, video.id)


def _remove_blobs(platform: Platform, cell: Cell, owner: uuid.UUID, video_id: uuid.UUID) -> None:
    cell.blobs.delete(original_key(owner, video_id))
    _remove_renditions(platform, cell, owner, video_id)


def _remove_renditions(
    platform: Platform, cell: Cell, owner: uuid.UUID, video_id: uuid.UUID
) -> None:
    _remove_prefix(cell.blobs, private_prefix(owner, video_id))
    _remove_prefix(platform.public_blobs, public_prefix(video_id))


def _remove_prefix(store: BlobStore, prefix: str) -> None:
    for key in list(store.iter_keys(prefix)):
        store.delete(key)


def remove_all_videos(platform: Platform, cell: Cell, owner: uuid.UUID) -> int:
    """Every video and upload of one account (its purge)."""
    with cell.db.transaction() as s:
        videos = list(s.scalars(select(Video).where(Video.owner_id == owner)))
        uploads = list(s.scalars(select(Upload.id).where(Upload.owner_id == owner)))
    for video in videos:
        remove_video(platform, cell, video)
    for upload_id in uploads:
        discard(platform, cell.region, upload_id)
    return len(videos)


def sweep(platform: Platform, region: str, *, older_than: timedelta = SWEEP_AFTER) -> int:
    """Requeue videos left ``queued`` with no job (the process died between the commit of the
    video and the deferral of its job); expire abandoned uploads. Returns videos requeued."""
    from reelm.media.uploads import expire_uploads

    expire_uploads(platform, region)
    cell = platform.cell(region)
    with cell.db.transaction() as s:
        orphans = list(
            s.scalars(
                select(Video.id).where(
                    Video.status == "queued",
                    Video.updated_at < func.now() - older_than,
                    ~exists(
                        select(text("1"))
                        .select_from(text("procrastinate_jobs"))
                        .where(
                            text("procrastinate_jobs.status IN ('todo', 'doing')"),
                            text("procrastinate_jobs.args->>'video_id' = videos.id::text"),
                        )
                    ),
                )
            )
        )
    for video_id in orphans:
        log.warning("video %s was queued without a job: requeued", video_id)
        enqueue(platform, region, video_id)
    return len(orphans)


def own_video_count(platform: Platform, user: CurrentUser) -> int:
    scope = _scope(platform, user)
    with scope.cell.db.transaction() as s:
        count = s.scalar(
            select(func.count()).select_from(Video).where(Video.owner_id == user.user_id)
        )
    return count or 0

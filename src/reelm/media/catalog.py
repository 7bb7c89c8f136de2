"""Reading videos: the public feed, a video, a profile's grid and the owner's own list.

Public videos come from the catalog (anyone may see them; their files are in the public store).
A followers-only or private video, and any video not ready yet, is seen only by its owner, read
from the owner's home region with short-lived signed URLs for its files. Followers get access
when following exists; until then "followers" behaves like "private" for everyone but the owner.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, or_, select

from reelm.accounts.errors import InvalidInput, NotFound
from reelm.accounts.lifecycle import Profile
from reelm.accounts.models import DirectoryEntry, PublicProfile
from reelm.accounts.service import CurrentUser
from reelm.bootstrap import Platform
from reelm.media.captions import parse_caption
from reelm.media.models import PublicVideo, Upload, Video
from reelm.media.serving import private_url, public_url
from reelm.media.uploads import UploadMeta
from reelm.regions.cell import Cell

MAX_PAGE = 50


@dataclass(frozen=True, slots=True)
class Source:
    url: str
    mime_type: str
    width: int
    height: int
    label: str  # "1080p"...


@dataclass(frozen=True, slots=True)
class VideoCard:
    id: uuid.UUID
    status: str  # uploading, queued, processing, ready, failed
    progress: int  # percent of the current step
    failure: str | None
    visibility: str
    allow_comments: bool
    caption: str
    hashtags: tuple[str, ...]
    mentions: tuple[str, ...]
    duration: float | None
    width: int | None
    height: int | None
    author_handle: str
    author_name: str
    poster_url: str | None
    sources: tuple[Source, ...]  # largest first
    created_at: datetime
    mine: bool


@dataclass(frozen=True, slots=True)
class Page:
    items: list[VideoCard]
    next_cursor: str | None


# ---- cursors ---------------------------------------------------------------------------------


def _cursor(card: VideoCard) -> str:
    raw = f"{card.created_at.isoformat()}|{card.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _parse_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        if len(cursor) > 200:
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, ident = raw.split("|")
        return datetime.fromisoformat(moment), uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("this cursor is not one we gave out", field="cursor") from None


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    return limit


# ---- public videos ---------------------------------------------------------------------------


def _public_query() -> Select[PublicVideo, PublicProfile]:
    """Public videos whose author is active and not a private account."""
    return (
        select(PublicVideo, PublicProfile)
        .join(PublicProfile, PublicProfile.user_id == PublicVideo.owner_id)
        .join(DirectoryEntry, DirectoryEntry.user_id == PublicVideo.owner_id)
        .where(DirectoryEntry.state == "active", PublicProfile.is_private.is_(False))
    )


def _public_card(
    video: PublicVideo, author: PublicProfile, viewer: CurrentUser | None
) -> VideoCard:
    sources = tuple(
        Source(public_url(video.id, r["file"]), r["mime_type"], r["width"], r["height"], r["name"])
        for r in video.renditions
    )
    return VideoCard(
        id=video.id,
        status="ready",
        progress=100,
        failure=None,
        visibility="public",
        allow_comments=video.allow_comments,
        caption=video.caption,
        hashtags=tuple(video.hashtags),
        mentions=tuple(video.mentions),
        duration=video.duration,
        width=video.width,
        height=video.height,
        author_handle=author.handle,
        author_name=author.display_name,
        poster_url=public_url(video.id, video.poster_key.rsplit("/", 1)[1]),
        sources=sources,
        created_at=video.published_at,
        mine=viewer is not None and viewer.user_id == video.owner_id,
    )


def _page(
    platform: Platform,
    query: Select[PublicVideo, PublicProfile],
    viewer: CurrentUser | None,
    cursor: str | None,
    limit: int,
) -> Page:
    limit = _limit(limit)
    if cursor:
        moment, ident = _parse_cursor(cursor)
        query = query.where(
            or_(
                PublicVideo.published_at < moment,
                and_(PublicVideo.published_at == moment, PublicVideo.id < ident),
            )
        )
    query = query.order_by(PublicVideo.published_at.desc(), PublicVideo.id.desc())
    with platform.catalog.transaction() as c:
        rows = c.execute(query.limit(limit + 1)).all()
    cards = [_public_card(v, p, viewer) for v, p in rows[:limit]]
    return Page(cards, _cursor(cards[-1]) if len(rows) > limit else None)


def feed(
    platform: Platform, viewer: CurrentUser | None, *, cursor: str | None = None, limit: int = 10
) -> Page:
    """Every public ready video, newest first."""
    return _page(platform, _public_query(), viewer, cursor, limit)


def hashtag_feed(
    platform: Platform,
    viewer: CurrentUser | None,
    tag: str,
    *,
    cursor: str | None = None,
    limit: int = 10,
) -> Page:
    query = _public_query().where(PublicVideo.hashtags.contains([tag]))
    return _page(platform, query, viewer, cursor, limit)


def matching(
    platform: Platform,
    viewer: CurrentUser | None,
    pattern: str,
    *,
    cursor: str | None = None,
    limit: int = 10,
) -> Page:
    """Public videos whose folded caption and hashtags match an ILIKE ``pattern`` (see
    reelm.search), newest first; the trigram index on ``search_text`` serves it."""
    query = _public_query().where(PublicVideo.search_text.ilike(pattern, escape="\\"))
    return _page(platform, query, viewer, cursor, limit)


def matching_hashtags(platform: Platform, pattern: str, limit: int) -> list[list[str]]:
    """The hashtags of the most recent ``limit`` public videos matching ``pattern``."""
    query = (
        _public_query()
        .with_only_columns(PublicVideo.hashtags)
        .where(PublicVideo.search_text.ilike(pattern, escape="\\"))
        .order_by(PublicVideo.published_at.desc())
        .limit(limit)
    )
    with platform.catalog.transaction() as c:
        return [list(tags) for tags in c.scalars(query)]


def profile_videos(
    platform: Platform,
    viewer: CurrentUser | None,
    author: Profile,
    *,
    cursor: str | None = None,
    limit: int = 24,
) -> Page:
    """A profile's grid. The owner also sees their own non-public and unfinished videos first
    (on the first page), from their home region."""
    mine = viewer is not None and viewer.user_id == author.user_id
    if author.is_private and not mine:
        return Page([], None)
    query = _public_query().where(PublicVideo.owner_id == author.user_id)
    if mine:
        query = (
            select(PublicVideo, PublicProfile)
            .join(PublicProfile, PublicProfile.user_id == PublicVideo.owner_id)
            .where(PublicVideo.owner_id == author.user_id)
        )
    page = _page(platform, query, viewer, cursor, limit)
    if mine and not cursor and viewer is not None:
        unlisted = [
            c
            for c in own_videos(platform, viewer)
            if c.visibility != "public" or c.status != "ready"
        ]
        return Page(unlisted + page.items, page.next_cursor)
    return page


def is_listed(platform: Platform, video_id: uuid.UUID) -> bool:
    """Whether anyone may watch this public video now (what /media/v/ serves)."""
    with platform.catalog.transaction() as c:
        return c.execute(_public_query().where(PublicVideo.id == video_id)).first() is not None


# ---- one video -------------------------------------------------------------------------------


def get_video(platform: Platform, viewer: CurrentUser | None, video_id: uuid.UUID) -> VideoCard:
    with platform.catalog.transaction() as c:
        row = c.execute(_public_query().where(PublicVideo.id == video_id)).first()
    if row is not None:
        return _public_card(row[0], row[1], viewer)
    if viewer is not None:
        cell = platform.cell(viewer.home_region)
        with cell.db.transaction() as s:
            video = s.get(Video, video_id)
            upload = s.get(Upload, video_id) if video is None else None
        if video is not None and video.owner_id == viewer.user_id:
            return _own_card(platform, cell, viewer, video, _display_name(platform, viewer))
        if upload is not None and upload.owner_id == viewer.user_id and upload.video_id is None:
            return _upload_card(cell, viewer, upload, _display_name(platform, viewer))
    raise NotFound("no such video")


def own_videos(platform: Platform, user: CurrentUser) -> list[VideoCard]:
    """The user's videos in every state, and their uploads in progress, newest first."""
    cell = platform.cell(user.home_region)
    scope = cell.for_user(user.user_id, user.home_region)
    with scope.cell.db.transaction() as s:
        videos = list(
            s.scalars(
                select(Video)
                .where(Video.owner_id == user.user_id)
                .order_by(Video.created_at.desc(), Video.id.desc())
            )
        )
        uploads = list(
            s.scalars(
                select(Upload)
                .where(Upload.owner_id == user.user_id, Upload.video_id.is_(None))
                .order_by(Upload.created_at.desc())
            )
        )
    name = _display_name(platform, user)
    cards = [_upload_card(cell, user, u, name) for u in uploads]
    cards += [_own_card(platform, cell, user, v, name) for v in videos]
    return sorted(cards, key=lambda c: c.created_at, reverse=True)


def _display_name(platform: Platform, user: CurrentUser) -> str:
    with platform.catalog.transaction() as c:
        name = c.scalar(
            select(PublicProfile.display_name).where(PublicProfile.user_id == user.user_id)
        )
    return name or user.handle


def _own_card(
    platform: Platform, cell: Cell, user: CurrentUser, video: Video, name: str
) -> VideoCard:
    cipher = cell.for_user(user.user_id, user.home_region).cipher()
    caption = cipher.decrypt("caption", video.caption_ct)
    parsed = parse_caption(caption)
    ready = video.status == "ready"
    if ready and video.visibility == "public":

        def url(file: str) -> str:
            return public_url(video.id, file)
    else:

        def url(file: str) -> str:
            return private_url(cell, video.id, file)

    sources = tuple(
        Source(url(r["file"]), r["mime_type"], r["width"], r["height"], r["name"])
        for r in video.renditions
        if r["kind"] == "video"
    )
    return VideoCard(
        id=video.id,
        status=video.status,
        progress=video.progress,
        failure=video.failure,
        visibility=video.visibility,
        allow_comments=video.allow_comments,
        caption=caption,
        hashtags=parsed.hashtags,
        mentions=parsed.mentions,
        duration=video.duration,
        width=video.width,
        height=video.height,
        author_handle=user.handle,
        author_name=name,
        poster_url=url(video.poster_key.rsplit("/", 1)[1]) if ready and video.poster_key else None,
        sources=sources if ready else (),
        created_at=video.created_at,
        mine=True,
    )


def _upload_card(cell: Cell, user: CurrentUser, upload: Upload, name: str) -> VideoCard:
    cipher = cell.for_user(user.user_id, user.home_region).cipher()
    meta = UploadMeta.model_validate_json(cipher.decrypt("upload_meta", upload.metadata_ct))
    parsed = parse_caption(meta.caption)
    return VideoCard(
        id=upload.id,
        status="uploading",
        progress=upload.offset * 100 // max(1, upload.length),
        failure=None,
        visibility=meta.visibility,
        allow_comments=meta.allow_comments,
        caption=meta.caption,
        hashtags=parsed.hashtags,
        mentions=parsed.mentions,
        duration=None,
        width=None,
        height=None,
        author_handle=user.handle,
        author_name=name,
        poster_url=None,
        sources=(),
        created_at=upload.created_at,
        mine=True,
    )

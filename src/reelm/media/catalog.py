"""Reading videos: the public feed, a video, a profile's grid and the owner's own list.

Public videos come from the catalog (anyone may see them; their files are in the public store).
A followers-only or private video, and any video not ready yet, is read from the owner's home
region with short-lived signed URLs for its files: private ones by the owner only,
followers-only ones by the owner's approved followers too (on the owner's profile grid).

Who sees what is decided by :mod:`reelm.social.access` only: lists filter with its SQL form
(``listable``), single videos ask ``decide``.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from sqlalchemy import Select, and_, any_, func, or_, select

from reelm.accounts.errors import InvalidInput, NotFound
from reelm.accounts.lifecycle import Profile
from reelm.accounts.models import DirectoryEntry, PublicProfile
from reelm.accounts.service import CurrentUser
from reelm.bootstrap import Platform
from reelm.media.captions import parse_caption
from reelm.media.models import PublicVideo, Upload, Video
from reelm.media.serving import Decisions, private_url, public_url
from reelm.media.uploads import UploadMeta
from reelm.regions.cell import Cell
from reelm.social import access
from reelm.social.models import VideoStats
from reelm.storage.db import Database, uuid_array_param

MAX_PAGE = 50
PUBLISHED = "catalog.published"  # Platform.caches: a new token at each publication here


def note_published(platform: Platform) -> None:
    """Tell this process's readers that a public video was published (or republished): the
    For You pools top up before their next page (reelm.feed.pools) instead of waiting for
    their next look at the catalog. A fresh object each time, so a reader compares identity
    and two threads publishing at once cannot lose a notice."""
    platform.caches[PUBLISHED] = object()


def published_notice(platform: Platform) -> object | None:
    """The token of this process's latest publication (None before any)."""
    return platform.caches.get(PUBLISHED)


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
    owner_id: uuid.UUID | None = None
    comments_from: str = "everyone"
    likes: int = 0
    comments: int = 0
    shares: int = 0
    liked: bool = False  # by the viewer
    removed: str | None = None  # the reason code, when a moderator removed it


@dataclass(frozen=True, slots=True)
class Page:
    items: list[VideoCard]
    next_cursor: str | None


# ---- cursors ---------------------------------------------------------------------------------


def encode_cursor(moment: datetime, ident: uuid.UUID) -> str:
    """A keyset cursor (a timestamp and an id), opaque to clients."""
    raw = f"{moment.isoformat()}|{ident}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        if len(cursor) > 200:
            raise ValueError
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, ident = raw.split("|")
        return datetime.fromisoformat(moment), uuid.UUID(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidInput("this cursor is not one we gave out", field="cursor") from None


def _cursor(card: VideoCard) -> str:
    return encode_cursor(card.created_at, card.id)


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    return limit


# ---- public videos ---------------------------------------------------------------------------


Row = tuple[PublicVideo, PublicProfile, VideoStats | None]


def reads_for(platform: Platform, viewer: CurrentUser | None) -> Database:
    """The catalog this viewer's public reads go to: the local replica, unless it has not
    reached the viewer's own latest write (Platform.catalog_reads)."""
    return platform.catalog_reads(viewer.user_id if viewer else None)


def viewer_of(user: CurrentUser | None, market: str | None = None) -> access.Viewer:
    """Who is looking: a signed-in user is in their account's market."""
    if user is None:
        return access.Viewer(None, market)
    return access.Viewer(user.user_id, user.market)


def _all_public() -> Select[PublicVideo, PublicProfile, VideoStats]:
    return (
        select(PublicVideo, PublicProfile, VideoStats)
        .join(PublicProfile, PublicProfile.user_id == PublicVideo.owner_id)
        .join(DirectoryEntry, DirectoryEntry.user_id == PublicVideo.owner_id)
        .outerjoin(VideoStats, VideoStats.video_id == PublicVideo.id)
    )


def _public_query(
    viewer: access.Viewer | None = None,
) -> Select[PublicVideo, PublicProfile, VideoStats]:
    """Public videos this viewer may see in lists (reelm.social.access.listable)."""
    return access.listable(_all_public(), viewer or access.Viewer(None, None))


def _public_card(
    video: PublicVideo,
    author: PublicProfile,
    viewer: CurrentUser | None,
    stats: VideoStats | None = None,
    liked: bool = False,
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
        owner_id=video.owner_id,
        comments_from=video.comments_from,
        likes=stats.likes if stats else 0,
        comments=stats.comments if stats else 0,
        shares=stats.shares if stats else 0,
        liked=liked,
    )


def _cards(platform: Platform, rows: Sequence[Row], viewer: CurrentUser | None) -> list[VideoCard]:
    from reelm.social import likes

    liked = likes.liked_among(platform, viewer, [v.id for v, _, _ in rows]) if viewer else set()
    return [_public_card(v, p, viewer, st, v.id in liked) for v, p, st in rows]


@lru_cache(maxsize=8)
def _cards_query(
    shape: tuple[bool, bool] | None,
) -> Select[PublicVideo, PublicProfile, VideoStats]:
    """Public videos among parameter `ids`, listable (access.listable_shape `shape`, its
    parameters given when it runs) if a shape is given. Built once: building it cost more than
    running it."""
    query = _all_public().where(PublicVideo.id == any_(uuid_array_param("ids")))
    return query if shape is None else query.where(access.listable_shape(*shape))


def cards_in_order(
    platform: Platform,
    viewer: CurrentUser | None,
    ids: Sequence[uuid.UUID],
    *,
    rules: access.Viewer | None = None,
) -> list[VideoCard]:
    """Cards of these public videos, in this order (ids that are gone are left out, and with
    `rules`, those that viewer may not list)."""
    if not ids:
        return []
    shape = None if rules is None else access.listable_kind(rules)
    values = {} if rules is None else access.listable_values(rules)
    with reads_for(platform, viewer).read() as c:
        rows = c.execute(_cards_query(shape), {"ids": list(ids), **values}).all()
    found = {v.id: (v, p, st) for v, p, st in rows}
    return _cards(platform, [found[i] for i in ids if i in found], viewer)


def _page(
    platform: Platform,
    query: Select[PublicVideo, PublicProfile, VideoStats],
    viewer: CurrentUser | None,
    cursor: str | None,
    limit: int,
    reads: Database | None = None,
) -> Page:
    limit = _limit(limit)
    if cursor:
        moment, ident = parse_cursor(cursor)
        query = query.where(
            or_(
                PublicVideo.published_at < moment,
                and_(PublicVideo.published_at == moment, PublicVideo.id < ident),
            )
        )
    query = query.order_by(PublicVideo.published_at.desc(), PublicVideo.id.desc())
    with (reads or reads_for(platform, viewer)).read() as c:
        rows = [(v, p, st) for v, p, st in c.execute(query.limit(limit + 1)).all()]
    cards = _cards(platform, rows[:limit], viewer)
    return Page(cards, _cursor(cards[-1]) if len(rows) > limit else None)


def feed(
    platform: Platform,
    viewer: CurrentUser | None,
    *,
    cursor: str | None = None,
    limit: int = 10,
    market: str | None = None,
) -> Page:
    """Every public ready video the viewer may see, newest first."""
    return _page(platform, _public_query(viewer_of(viewer, market)), viewer, cursor, limit)


def following_feed(
    platform: Platform, viewer: CurrentUser, *, cursor: str | None = None, limit: int = 10
) -> Page:
    """Videos of the creators the viewer follows (approved), newest first."""
    from reelm.social.models import Follow

    query = _public_query(viewer_of(viewer)).where(
        PublicVideo.owner_id.in_(
            select(Follow.followee_id).where(
                Follow.follower_id == viewer.user_id, Follow.state == "active"
            )
        )
    )
    return _page(platform, query, viewer, cursor, limit)


def hashtag_feed(
    platform: Platform,
    viewer: CurrentUser | None,
    tag: str,
    *,
    cursor: str | None = None,
    limit: int = 10,
    market: str | None = None,
) -> Page:
    query = _public_query(viewer_of(viewer, market)).where(PublicVideo.hashtags.contains([tag]))
    return _page(platform, query, viewer, cursor, limit)


def matching(
    platform: Platform,
    viewer: CurrentUser | None,
    pattern: str,
    *,
    cursor: str | None = None,
    limit: int = 10,
    market: str | None = None,
) -> Page:
    """Public videos whose folded caption and hashtags match an ILIKE ``pattern`` (see
    reelm.search), newest first; the trigram index on ``search_text`` serves it."""
    query = _public_query(viewer_of(viewer, market)).where(
        PublicVideo.search_text.ilike(pattern, escape="\\")
    )
    return _page(platform, query, viewer, cursor, limit)


def matching_hashtags(
    platform: Platform, pattern: str, limit: int, viewer: access.Viewer | None = None
) -> list[list[str]]:
    """The hashtags of the most recent ``limit`` public videos matching ``pattern``."""
    query = (
        _public_query(viewer)
        .with_only_columns(PublicVideo.hashtags)
        .where(PublicVideo.search_text.ilike(pattern, escape="\\"))
        .order_by(PublicVideo.published_at.desc())
        .limit(limit)
    )
    reads = platform.catalog_reads(viewer.user_id if viewer else None)
    with reads.read() as c:
        return [list(tags) for tags in c.scalars(query)]


def profile_videos(
    platform: Platform,
    viewer: CurrentUser | None,
    author: Profile,
    *,
    cursor: str | None = None,
    limit: int = 24,
    market: str | None = None,
) -> Page:
    """A profile's grid. The owner also sees their own non-public and unfinished videos first
    (on the first page), from their home region; approved followers see the followers-only
    ones there too."""
    who = viewer_of(viewer, market)
    mine = viewer is not None and viewer.user_id == author.user_id
    # The owner's own grid from the primary: a video the worker (another process) has just
    # published is in their home region's list, and must not be missing from the catalog's.
    reads = platform.catalog if mine else reads_for(platform, viewer)
    relation = access.relation(platform, who.user_id, author.user_id, reads=reads)
    facts = access.profile_facts(platform, author.user_id, reads=reads)
    if not access.decide_profile(who, "view", facts, relation).allowed:
        return Page([], None)
    query = _public_query(who).where(PublicVideo.owner_id == author.user_id)
    page = _page(platform, query, viewer, cursor, limit, reads)
    if cursor or viewer is None:
        return page
    if mine:
        unlisted = [
            c
            for c in own_videos(platform, viewer)
            if c.visibility != "public" or c.status != "ready"
        ]
        return Page(unlisted + page.items, page.next_cursor)
    if relation.follows and not facts.suspended and platform.is_local(author.home_region):
        # Only the author's home cell holds their followers-only videos: a follower served by
        # another region's cell sees the public grid (docs/architecture.md, known limits).
        return Page(_followers_only(platform, viewer, author) + page.items, page.next_cursor)
    return page


def _followers_only(platform: Platform, viewer: CurrentUser, author: Profile) -> list[VideoCard]:
    """The author's ready followers-only videos, read in the author's home region for one of
    their approved followers (the author chose to show these to them)."""
    cell = platform.cell(author.home_region)
    scope = cell.for_user(author.user_id, author.home_region)
    with scope.cell.db.transaction() as s:
        found = list(
            s.scalars(
                select(Video)
                .where(
                    Video.owner_id == author.user_id,
                    Video.visibility == "followers",
                    Video.status == "ready",
                )
                .order_by(Video.created_at.desc(), Video.id.desc())
                .limit(MAX_PAGE)
            )
        )
    return [
        _stored_card(cell, viewer, author.user_id, author.handle, author.display_name, v)
        for v in found
    ]


def is_listed(platform: Platform, video_id: uuid.UUID, viewer: CurrentUser | None = None) -> bool:
    """Whether this viewer may watch this public video now (what /media/v/ serves). No
    market here: a withheld video's page answers 451, and its files follow the page."""
    with reads_for(platform, viewer).read() as c:
        query = _public_query(viewer_of(viewer)).where(PublicVideo.id == video_id)
        return c.execute(query).first() is not None


def listed_for_anyone(platform: Platform, video_id: uuid.UUID) -> bool:
    """Whether a visitor who is not signed in may watch it (its files may be cached)."""
    return is_listed(platform, video_id, None)


# ---- one video -------------------------------------------------------------------------------


def public_facts(
    platform: Platform, video_id: uuid.UUID, *, reads: Database | None = None
) -> access.VideoFacts | None:
    """What the authorisation function needs to know about a public video (from ``reads``,
    by default the primary: a check before a write)."""
    from reelm.social.models import Suspension, VideoRestriction

    with (reads or platform.catalog).transaction() as c:
        row = c.execute(
            select(
                PublicVideo.owner_id,
                PublicVideo.allow_comments,
                PublicVideo.comments_from,
                PublicProfile.is_private,
                PublicProfile.teen,
                DirectoryEntry.state,
                select(func.count())
                .where(Suspension.user_id == PublicVideo.owner_id)
                .scalar_subquery(),
            )
            .join(PublicProfile, PublicProfile.user_id == PublicVideo.owner_id)
            .join(DirectoryEntry, DirectoryEntry.user_id == PublicVideo.owner_id)
            .where(PublicVideo.id == video_id)
        ).first()
        if row is None:
            return None
        withheld = frozenset(
            c.scalars(select(VideoRestriction.market).where(VideoRestriction.video_id == video_id))
        )
    return access.VideoFacts(
        id=video_id,
        owner_id=row[0],
        visibility="public",
        allow_comments=row[1],
        comments_from=row[2],
        owner_private=row[3],
        owner_teen=row[4],
        owner_active=row[5] == "active",
        owner_suspended=row[6] > 0,
        restricted_in=withheld,
    )


def check(
    platform: Platform,
    viewer: CurrentUser | None,
    action: access.Action,
    video_id: uuid.UUID,
    *,
    market: str | None = None,
    reads: Database | None = None,
) -> access.VideoFacts:
    """Ask the authorisation function about a public video; raise its refusal. From
    ``reads`` (a page's: the replica), by default the primary (a check before a write)."""
    facts = public_facts(platform, video_id, reads=reads)
    if facts is None:
        raise NotFound("no such video")
    who = viewer_of(viewer, market)
    relation = access.relation(platform, who.user_id, facts.owner_id, reads=reads)
    access.decide(who, action, facts, relation).enforce()
    return facts


def get_video(
    platform: Platform,
    viewer: CurrentUser | None,
    video_id: uuid.UUID,
    *,
    market: str | None = None,
    by: Profile | None = None,
) -> VideoCard:
    """One video as this viewer may see it. ``by``: the author, when the link names them
    (the only way to find a followers-only video, which the catalog does not know)."""
    # A video page: from the replica. One the viewer has just published and the replica
    # does not hold yet is found below, in their home region.
    reads = reads_for(platform, viewer)
    facts = public_facts(platform, video_id, reads=reads)
    if facts is not None:
        who = viewer_of(viewer, market)
        relation = access.relation(platform, who.user_id, facts.owner_id, reads=reads)
        access.decide(who, "view", facts, relation).enforce()
        with reads.read() as c:
            row = c.execute(_all_public().where(PublicVideo.id == video_id)).one()
        return _cards(platform, [(row[0], row[1], row[2])], viewer)[0]
    if viewer is not None:
        cell = platform.cell(viewer.home_region)
        with cell.db.transaction() as s:
            video = s.get(Video, video_id)
            upload = s.get(Upload, video_id) if video is None else None
        if video is not None and video.owner_id == viewer.user_id:
            return _own_card(platform, cell, viewer, video, _display_name(platform, viewer))
        if upload is not None and upload.owner_id == viewer.user_id and upload.video_id is None:
            return _upload_card(cell, viewer, upload, _display_name(platform, viewer))
    if by is not None:
        return _followers_video(platform, viewer, video_id, by, market)
    raise NotFound("no such video")


def stored_facts(platform: Platform, video: Video) -> access.VideoFacts:
    """What the authorisation function needs to know about a video the catalog does not
    hold (followers-only or private), from its row in the owner's home region."""
    profile = access.profile_facts(platform, video.owner_id)
    return access.VideoFacts(
        id=video.id,
        owner_id=video.owner_id,
        visibility=video.visibility,
        allow_comments=video.allow_comments,
        comments_from=video.comments_from,
        owner_private=profile.private,
        owner_teen=profile.teen,
        owner_active=profile.active,
        owner_suspended=profile.suspended,
        in_catalog=False,
    )


def _followers_video(
    platform: Platform,
    viewer: CurrentUser | None,
    video_id: uuid.UUID,
    author: Profile,
    market: str | None,
) -> VideoCard:
    cell = platform.cell(author.home_region)
    scope = cell.for_user(author.user_id, author.home_region)
    with scope.cell.db.transaction() as s:
        video = s.get(Video, video_id)
    # Outside the catalog a video is never for a visitor who is not signed in, nor for anyone
    # but its owner once a moderator removed it.
    if viewer is None or video is None or video.owner_id != author.user_id:
        raise NotFound("no such video")
    if video.status != "ready" or video.removed:
        raise NotFound("no such video")
    who = viewer_of(viewer, market)
    relation = access.relation(platform, who.user_id, author.user_id)
    access.decide(who, "view", stored_facts(platform, video), relation).enforce()
    return _stored_card(cell, viewer, author.user_id, author.handle, author.display_name, video)


def may_watch_stored(platform: Platform, viewer: CurrentUser, video: Video) -> bool:
    """Whether `viewer` may watch this video of its home region now (what a protected file's
    every request asks, through serving.Decisions): its owner always; anyone else while it is
    ready, not removed, and `decide` lets them view it (an approved follower, not blocked)."""
    if video.owner_id == viewer.user_id:
        return True
    if video.status != "ready" or video.removed:
        return False
    who = viewer_of(viewer)
    relation = access.relation(platform, who.user_id, video.owner_id)
    return access.decide(who, "view", stored_facts(platform, video), relation).allowed


def protected_rendition(
    platform: Platform, cell: Cell, viewer: CurrentUser, video_id: uuid.UUID, file: str
) -> tuple[uuid.UUID, str]:
    """(owner id, blob key) of a followers-only or private video's file that ``viewer`` may
    watch now, else NotFound. The decision is remembered `serving.DECISION_SECONDS` per session
    and video (`serving.Decisions`): a player asks for dozens of ranges a minute."""
    decided_at = time.monotonic()  # the answer's age counts from before the reads
    with cell.db.transaction() as s:
        video = s.get(Video, video_id)
    entry = next((r for r in (video.renditions if video else []) if r["file"] == file), None)
    if video is None or entry is None or not entry["key"].startswith("private/"):
        raise NotFound("no such file")
    decisions: Decisions = platform.caches.setdefault("media.decisions", Decisions())
    allowed = decisions.get(viewer.token_hash, video_id)
    if allowed is None:
        allowed = may_watch_stored(platform, viewer, video)
        decisions.put(viewer.token_hash, video_id, allowed, decided_at)
    if not allowed:
        raise NotFound("no such file")
    return video.owner_id, entry["key"]


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
    return _stored_card(cell, user, user.user_id, user.handle, name, video)


def _stored_card(
    cell: Cell,
    viewer: CurrentUser,
    owner_id: uuid.UUID,
    handle: str,
    name: str,
    video: Video,
) -> VideoCard:
    """A video as its home region stores it (the owner's, or a followers-only one), with URLs
    of its protected files signed for the viewer's session."""
    cipher = cell.for_user(owner_id, cell.region).cipher()
    caption = cipher.decrypt("caption", video.caption_ct)
    parsed = parse_caption(caption)
    ready = video.status == "ready"
    if ready and video.visibility == "public":

        def url(file: str) -> str:
            return public_url(video.id, file)
    else:

        def url(file: str) -> str:
            return private_url(cell, video.id, file, viewer.token_hash)

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
        author_handle=handle,
        author_name=name,
        poster_url=url(video.poster_key.rsplit("/", 1)[1]) if ready and video.poster_key else None,
        sources=sources if ready else (),
        created_at=video.created_at,
        mine=viewer.user_id == owner_id,
        owner_id=owner_id,
        comments_from=video.comments_from,
        removed=video.removed,
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
        comments_from=meta.comments_from,
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

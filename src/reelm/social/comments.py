"""Comments and replies on public videos (public content, in the catalog).

One level of replies, as short-video apps do: a reply to a reply joins the same thread. The
author deletes their own comments; the video's creator deletes any comment on their video.
Who may comment is the video's setting (everyone, followers, off), decided by
reelm.social.access. Comments of people hidden from the viewer (blocked either way, suspended,
deleted) are left out of what the viewer reads.
"""

from __future__ import annotations

import unicodedata
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, delete, exists, func, or_, select
from sqlalchemy.orm import Session

from reelm.accounts.errors import InvalidInput, NotFound
from reelm.accounts.models import DirectoryEntry, PublicProfile
from reelm.accounts.service import CurrentUser
from reelm.bootstrap import Platform
from reelm.feed import signals
from reelm.media import catalog
from reelm.media.captions import parse_caption
from reelm.media.models import PublicVideo
from reelm.regions.fence import hold
from reelm.social import access, engagement, mentions, notify
from reelm.social.models import Block, Comment, Suspension

MAX_BODY = 500
MAX_PAGE = 50
COMMENT_SCORE = 2.0


@dataclass(frozen=True, slots=True)
class CommentView:
    id: uuid.UUID
    video_id: uuid.UUID
    parent_id: uuid.UUID | None
    body: str
    mentions: tuple[str, ...]
    author_handle: str
    author_name: str
    created_at: datetime
    replies: int
    mine: bool  # the viewer wrote it
    can_delete: bool  # the viewer wrote it, or it is on the viewer's video


@dataclass(frozen=True, slots=True)
class CommentPage:
    items: list[CommentView]
    next_cursor: str | None


def clean_body(text: str) -> str:
    """A comment's text: NFC, trimmed, no control characters but newlines, 1-500 characters."""
    if "\x00" in text:
        raise InvalidInput("a comment cannot contain NUL characters", field="body")
    text = unicodedata.normalize("NFC", text).strip()
    text = "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch) not in ("Cc", "Cs"))
    if not text:
        raise InvalidInput("write something first", field="body")
    if len(text) > MAX_BODY:
        raise InvalidInput(f"a comment is at most {MAX_BODY} characters", field="body")
    return text


def add(
    platform: Platform,
    user: CurrentUser,
    video_id: uuid.UUID,
    body: str,
    *,
    reply_to: uuid.UUID | None = None,
) -> CommentView:
    text = clean_body(body)
    facts = catalog.check(platform, user, "comment", video_id)
    parsed = parse_caption(text)

    def save(c: Session) -> tuple[Comment, datetime, uuid.UUID | None, list[str], float]:
        thread, parent_author = reply_to, None
        if thread is not None:
            parent = c.get(Comment, thread)
            if parent is None or parent.video_id != video_id:
                raise NotFound("no such comment on this video")
            # One level: a reply to a reply joins its thread.
            thread = parent.parent_id or parent.id
            parent_author = parent.author_id
        comment = Comment(
            id=uuid.uuid4(),
            video_id=video_id,
            author_id=user.user_id,
            parent_id=thread,
            body=text,
            mentions=list(parsed.mentions),
        )
        c.add(comment)
        c.flush()
        engagement.count(c, video_id, "comments", 1, market=user.market, score=COMMENT_SCORE)
        hashtags, duration = c.execute(
            select(PublicVideo.hashtags, PublicVideo.duration).where(PublicVideo.id == video_id)
        ).one()
        return comment, comment.created_at, parent_author, list(hashtags), float(duration)

    comment, created, parent_author, hashtags, duration = platform.catalog.retrying(save)
    platform.wrote_catalog(user.user_id)
    reply_to = comment.parent_id
    scope = platform.cell(user.home_region).for_user(user.user_id, user.home_region)
    with scope.cell.db.transaction() as s:
        hold(s, user.user_id)
        signals.add_action(s, scope, video_id, facts.owner_id, hashtags, duration, "commented")
    notify.send(
        platform, facts.owner_id, "comment", user.user_id, video_id=video_id, comment_id=comment.id
    )
    if parent_author is not None and parent_author != facts.owner_id:
        notify.send(
            platform, parent_author, "reply", user.user_id, video_id=video_id, comment_id=comment.id
        )
    people = mentions.mentioned(platform, parsed.mentions)
    mentions.tell(
        platform,
        user.user_id,
        facts,
        people,
        comment_id=comment.id,
        skip=(facts.owner_id, parent_author),
    )
    return CommentView(
        id=comment.id,
        video_id=video_id,
        parent_id=reply_to,
        body=text,
        mentions=parsed.mentions,
        author_handle=user.handle,
        author_name=_name(platform, user.user_id),
        created_at=created,
        replies=0,
        mine=True,
        can_delete=True,
    )


def _name(platform: Platform, user_id: uuid.UUID) -> str:
    with platform.catalog.transaction() as c:
        return (
            c.scalar(select(PublicProfile.display_name).where(PublicProfile.user_id == user_id))
            or ""
        )


def delete_comment(platform: Platform, user: CurrentUser, comment_id: uuid.UUID) -> None:
    """The author, or the video's creator, deletes a comment (and its replies)."""

    def remove(c: Session) -> None:
        found = c.execute(
            select(Comment, PublicVideo.owner_id)
            .join(PublicVideo, PublicVideo.id == Comment.video_id)
            .where(Comment.id == comment_id)
            .with_for_update(of=Comment)
        ).first()
        if found is None:
            raise NotFound("no such comment")
        comment, owner = found
        if user.user_id not in (comment.author_id, owner):
            raise access.Forbidden("only its author or the video's creator can delete a comment")
        replies = c.scalar(select(func.count()).where(Comment.parent_id == comment.id)) or 0
        c.execute(delete(Comment).where(Comment.id == comment.id))
        engagement.count(c, comment.video_id, "comments", -(1 + int(replies)))

    platform.catalog.retrying(remove)
    platform.wrote_catalog(user.user_id)


# ---- reading ---------------------------------------------------------------------------------


def _visible_authors(viewer: CurrentUser | None) -> object:
    clause = and_(
        DirectoryEntry.state == "active", ~exists().where(Suspension.user_id == Comment.author_id)
    )
    if viewer is None:
        return clause
    me = viewer.user_id
    return and_(
        clause,
        ~exists().where(
            or_(
                and_(Block.blocker_id == Comment.author_id, Block.blocked_id == me),
                and_(Block.blocker_id == me, Block.blocked_id == Comment.author_id),
            )
        ),
    )


def _query(viewer: CurrentUser | None) -> Select[Comment, str, str, int]:
    reply = Comment.__table__.alias("reply")
    count = (
        select(func.count()).select_from(reply).where(reply.c.parent_id == Comment.id)
    ).scalar_subquery()
    return (
        select(Comment, PublicProfile.handle, PublicProfile.display_name, count)
        .join(PublicProfile, PublicProfile.user_id == Comment.author_id)
        .join(DirectoryEntry, DirectoryEntry.user_id == Comment.author_id)
        .where(_visible_authors(viewer))  # type: ignore[arg-type]
    )


def _cursor(view: CommentView) -> str:
    return catalog.encode_cursor(view.created_at, view.id)


def list_comments(
    platform: Platform,
    viewer: CurrentUser | None,
    video_id: uuid.UUID,
    *,
    parent: uuid.UUID | None = None,
    cursor: str | None = None,
    limit: int = 20,
    market: str | None = None,
) -> CommentPage:
    """Top-level comments newest first, or one comment's replies oldest first."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    # A page's read: the replica's (the viewer's own comments seen: read-your-writes).
    reads = catalog.reads_for(platform, viewer)
    facts = catalog.check(platform, viewer, "view", video_id, market=market, reads=reads)
    query = _query(viewer).where(Comment.video_id == video_id)
    newest_first = parent is None
    if parent is None:
        query = query.where(Comment.parent_id.is_(None))
    else:
        query = query.where(Comment.parent_id == parent)
    if cursor:
        moment, ident = catalog.parse_cursor(cursor)
        if newest_first:
            query = query.where(
                or_(
                    Comment.created_at < moment,
                    and_(Comment.created_at == moment, Comment.id < ident),
                )
            )
        else:
            query = query.where(
                or_(
                    Comment.created_at > moment,
                    and_(Comment.created_at == moment, Comment.id > ident),
                )
            )
    if newest_first:
        query = query.order_by(Comment.created_at.desc(), Comment.id.desc())
    else:
        query = query.order_by(Comment.created_at, Comment.id)
    with reads.read() as c:
        rows = c.execute(query.limit(limit + 1)).all()
    me = viewer.user_id if viewer else None
    items = [
        CommentView(
            id=cm.id,
            video_id=cm.video_id,
            parent_id=cm.parent_id,
            body=cm.body,
            mentions=tuple(cm.mentions),
            author_handle=handle,
            author_name=name,
            created_at=cm.created_at,
            replies=int(replies),
            mine=me == cm.author_id,
            can_delete=me is not None and me in (cm.author_id, facts.owner_id),
        )
        for cm, handle, name, replies in rows[:limit]
    ]
    return CommentPage(items, _cursor(items[-1]) if len(rows) > limit else None)

"""Social tables.

Catalog (public by nature): follow edges and follow requests (who may see a followers-only
video is decided from them wherever the viewer lives, and follower lists are public on
short-video apps), blocks (they must be enforced in every region), comments on public videos
(public content), and counts keyed by random video ids.

Home region (protected): a user's likes, the signals of what they watched, and the
notifications they receive. These are encrypted with the user's data key, so destroying it
shreds them in every backup; the like lookup is keyed by the user's own data key too (not the
region's index key), for the same reason.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from reelm.storage.db import CatalogBase, RegionBase

FOLLOW_STATES = ("active", "requested")

# ---- catalog ---------------------------------------------------------------------------------


class Follow(CatalogBase):
    """follower -> followee. 'requested' until a private account approves it."""

    __tablename__ = "follows"

    follower_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("directory.user_id", ondelete="CASCADE"), primary_key=True
    )
    followee_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("directory.user_id", ondelete="CASCADE"), primary_key=True
    )
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        CheckConstraint("state IN ('active', 'requested')", name="state"),
        Index("ix_follows_followee", followee_id, state, created_at.desc()),
        Index("ix_follows_follower", follower_id, state, created_at.desc()),
    )


class Block(CatalogBase):
    """blocker no longer sees blocked, and blocked can neither see nor reach blocker."""

    __tablename__ = "blocks"

    blocker_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("directory.user_id", ondelete="CASCADE"), primary_key=True
    )
    blocked_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("directory.user_id", ondelete="CASCADE"), primary_key=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Comment(CatalogBase):
    """A comment on a public video, or a reply to one (one level, as the apps do)."""

    __tablename__ = "comments"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    video_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("public_videos.id", ondelete="CASCADE")
    )
    author_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("directory.user_id", ondelete="CASCADE"), index=True
    )
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID, ForeignKey("comments.id", ondelete="CASCADE")
    )
    body: Mapped[str] = mapped_column(Text)
    mentions: Mapped[list[str]] = mapped_column(ARRAY(String(24)), default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (
        Index("ix_comments_video", video_id, parent_id, created_at.desc(), id.desc()),
        Index("ix_comments_parent", parent_id, created_at, id),
    )


class VideoStats(CatalogBase):
    """Public counts of a public video. Numbers under a random id: no personal data."""

    __tablename__ = "video_stats"

    video_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("public_videos.id", ondelete="CASCADE"), primary_key=True
    )
    likes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    comments: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    shares: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    views: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class MarketEngagement(CatalogBase):
    """How much a video was engaged with in a market on a day (views, completions, likes
    weighted): what "trending in your market" and the cold-start mix rank by. Aggregates only;
    which viewer did what stays in the viewer's home region."""

    __tablename__ = "market_engagement"

    market: Mapped[str] = mapped_column(String(2), primary_key=True)
    day: Mapped[datetime] = mapped_column(Date, primary_key=True)
    video_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("public_videos.id", ondelete="CASCADE"), primary_key=True
    )
    score: Mapped[float] = mapped_column(Float, default=0.0)

    __table_args__ = (
        Index("ix_market_engagement_rank", market, day, score.desc()),
        Index("ix_market_engagement_video", video_id, market, day, postgresql_include=["score"]),
    )


class RegionLikes(CatalogBase):
    """How many likes of a video one region holds (a number under a random id, no liker).
    ``video_stats.likes`` is their sum; each region proves its own row by recounting its likes
    (reelm.social.recount). May be below zero until the first recount after
    an upgrade (likes counted before these rows existed)."""

    __tablename__ = "region_likes"

    video_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("public_videos.id", ondelete="CASCADE"), primary_key=True
    )
    region: Mapped[str] = mapped_column(String(16), primary_key=True)
    likes: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")

    __table_args__ = (Index("ix_region_likes_region", region, video_id),)


class EngagementReceipt(CatalogBase):
    """A region's outbox row that the catalog has applied: a second delivery of the same row
    (the region's delete was lost) is recognised and skipped. Kept while the row may still be
    in the region's outbox; pruned after the region deletes it."""

    __tablename__ = "engagement_receipts"

    region: Mapped[str] = mapped_column(String(16), primary_key=True)
    outbox_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

    __table_args__ = (Index("ix_engagement_receipts_received", received_at),)


# ---- home region -----------------------------------------------------------------------------


class Like(RegionBase):
    """A like. ``lookup`` is an HMAC of the video id under a key derived from the user's data
    key: "have I liked this?" is one index probe, and nothing is left once the key is gone."""

    __tablename__ = "likes"

    user_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    lookup: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    video_ct: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class WatchSignal(RegionBase):
    """One thing the viewer did with a video (watched, completed, replayed, skipped, liked,
    shared, commented), encrypted: the For You ranking reads these, in this region only."""

    __tablename__ = "signals"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID)
    event_ct: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_signals_user", user_id, created_at.desc()),)


class Notification(RegionBase):
    """Something that happened to the user (a follower, a like, a comment, a mention)."""

    __tablename__ = "notifications"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID)
    event_ct: Mapped[bytes] = mapped_column(LargeBinary)
    read: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ix_notifications_user", user_id, created_at.desc()),)


class EngagementOutbox(RegionBase):
    """What a like, a share or a batch of watch signals adds to the catalog's counts, written
    in the same transaction as the region's own rows and applied to the catalog once
    (reelm.social.engagement.drain). Numbers about a video in a market: no user id, and no time
    of its own (only the engagement day), so nothing in it says whose it was."""

    __tablename__ = "engagement_outbox"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    video_id: Mapped[uuid.UUID] = mapped_column(UUID)
    market: Mapped[str] = mapped_column(String(2))
    day: Mapped[date] = mapped_column(Date)
    likes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    shares: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    views: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    score: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


NOTIFICATION_KINDS = ("follow", "follow_request", "follow_accepted", "like", "comment", "mention")
LIKE_FIELD = "liked_video"
SIGNAL_FIELD = "signal"
NOTIFICATION_FIELD = "notification"


class Suspension(CatalogBase):
    """A suspended user: their profile and videos are hidden and they cannot act. Set and
    lifted by moderators; every change is in the user's home region's transparency log."""

    __tablename__ = "suspensions"

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("directory.user_id", ondelete="CASCADE"), primary_key=True
    )
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class VideoRestriction(CatalogBase):
    """A public video withheld in one market (answered with 451 there), by a moderator acting
    on a legal demand."""

    __tablename__ = "video_restrictions"

    video_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("public_videos.id", ondelete="CASCADE"), primary_key=True
    )
    market: Mapped[str] = mapped_column(String(2), primary_key=True)
    reason: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


REPORT_FIELD = "filed_report"
REPORT_NOTE_FIELD = "report_note"


class FiledReport(RegionBase):
    """A report the user filed (target, reason, their note), encrypted in the reporter's home
    region. ``lookup`` (keyed by the user's data key) makes a second identical report a no-op."""

    __tablename__ = "filed_reports"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID)
    lookup: Mapped[bytes] = mapped_column(LargeBinary)
    # "<target>:<id>:<reason>" (what ``lookup`` indexes), and the reporter's note.
    report_ct: Mapped[bytes] = mapped_column(LargeBinary)
    note_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (Index("ux_filed_reports_lookup", user_id, lookup, unique=True),)


class ReportCase(CatalogBase):
    """The moderation queue: reports of one target for one reason, counted, without reporters."""

    __tablename__ = "report_cases"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    target: Mapped[str] = mapped_column(String(16))  # video, comment, user
    target_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(32))
    count: Mapped[int] = mapped_column(BigInteger, default=1)
    state: Mapped[str] = mapped_column(String(16), default="open", server_default="open")
    resolution: Mapped[str | None] = mapped_column(String(16))
    first_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("state IN ('open', 'resolved')", name="state"),
        CheckConstraint("target IN ('video', 'comment', 'user')", name="target"),
        Index(
            "ux_report_cases_open",
            target,
            target_id,
            reason,
            unique=True,
            postgresql_where=state == "open",
        ),
        Index("ix_report_cases_queue", state, count.desc(), first_at),
    )

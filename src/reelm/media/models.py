"""Video tables. A video's record and its original live in the owner's home region; the
catalog gets a public copy of the metadata only once a public video is ready."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from reelm.storage.db import CatalogBase, RegionBase

STATUSES = ("uploading", "queued", "processing", "ready", "failed")
VISIBILITIES = ("public", "followers", "private")


class Upload(RegionBase):
    """A resumable upload in progress (tus 1.0). Its bytes sit in the region's staging area."""

    __tablename__ = "uploads"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(UUID, index=True)
    length: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    # Caption, visibility and settings chosen at upload time, encrypted (drafts are protected).
    metadata_ct: Mapped[bytes] = mapped_column(LargeBinary)
    video_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Video(RegionBase):
    __tablename__ = "videos"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(UUID, index=True)
    status: Mapped[str] = mapped_column(String(16))
    progress: Mapped[int] = mapped_column(SmallInteger, default=0)
    failure: Mapped[str | None] = mapped_column(Text)
    visibility: Mapped[str] = mapped_column(String(16))
    allow_comments: Mapped[bool] = mapped_column(Boolean, default=True)
    # Who may comment when comments are allowed: 'everyone' or 'followers'.
    comments_from: Mapped[str] = mapped_column(
        String(16), default="everyone", server_default="everyone"
    )
    caption_ct: Mapped[bytes] = mapped_column(LargeBinary)
    original_key: Mapped[str | None] = mapped_column(String(200))
    original_bytes: Mapped[int | None] = mapped_column(BigInteger)
    duration: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    renditions: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, default=list)
    poster_key: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # The reason code when a moderator removed it: never public again (reelm.social.moderation).
    removed: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    __table_args__ = (
        CheckConstraint(
            "status IN ('uploading', 'queued', 'processing', 'ready', 'failed')", name="status"
        ),
        CheckConstraint("visibility IN ('public', 'followers', 'private')", name="visibility"),
    )


class PublicVideo(CatalogBase):
    """A ready public video, as anyone may see it. Renditions are in the public blob store.
    Indexes (migration c0004): (published_at, id) for the feed's keyset pages, (owner_id,
    published_at, id) for a profile's grid, GIN on hashtags for hashtag pages."""

    __tablename__ = "public_videos"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    owner_id: Mapped[uuid.UUID] = mapped_column(UUID)
    caption: Mapped[str] = mapped_column(Text, default="")
    hashtags: Mapped[list[str]] = mapped_column(ARRAY(String(100)), default=list)
    mentions: Mapped[list[str]] = mapped_column(ARRAY(String(24)), default=list)
    allow_comments: Mapped[bool] = mapped_column(Boolean, default=True)
    comments_from: Mapped[str] = mapped_column(
        String(16), default="everyone", server_default="everyone"
    )
    duration: Mapped[float] = mapped_column(Float)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    renditions: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    poster_key: Mapped[str] = mapped_column(String(200))
    share_count: Mapped[int] = mapped_column(BigInteger, default=0)
    # Caption and hashtags folded for search (reelm.search.text; trigram index, c0006).
    search_text: Mapped[str] = mapped_column(Text, default="", server_default="")
    published_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

    __table_args__ = (
        Index("ix_public_videos_feed", published_at.desc(), id.desc()),
        Index("ix_public_videos_owner_feed", owner_id, published_at.desc(), id.desc()),
        Index("ix_public_videos_hashtags", hashtags, postgresql_using="gin"),
    )

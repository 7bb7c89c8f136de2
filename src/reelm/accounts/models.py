"""Account tables. Catalog tables hold public data only; region tables hold protected data.

Every protected column is ciphertext (``*_ct``) or a keyed blind index (``*_bidx``). The one
clear-text attribute in a region is ``market``: the residency policy is applied by it, and it
never leaves the home region.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from reelm.storage.db import CatalogBase, RegionBase

# ---- catalog (global, public only) -------------------------------------------------------


class DirectoryEntry(CatalogBase):
    """Random user id -> home region. The epoch fences writes during a region migration."""

    __tablename__ = "directory"

    user_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    home_region: Mapped[str] = mapped_column(String(16))
    epoch: Mapped[int] = mapped_column(Integer, default=1)
    state: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    __table_args__ = (CheckConstraint("state IN ('active', 'deleting', 'deleted')", name="state"),)


class PublicProfile(CatalogBase):
    """What a user chose to publish. Hidden while a deletion is pending."""

    __tablename__ = "profiles"

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("directory.user_id", ondelete="CASCADE"), primary_key=True
    )
    handle: Mapped[str] = mapped_column(String(24), unique=True)
    # The look-alike key (reelm.accounts.handles.handle_key: TR39 skeleton, digits read as
    # letters, separators dropped; up to twice the handle's length): one owner per key. NULL
    # for a handle kept from before c0013 that reads like an older one (see that migration).
    handle_key: Mapped[str | None] = mapped_column(String(48), unique=True)
    display_name: Mapped[str] = mapped_column(String(50))
    bio: Mapped[str] = mapped_column(Text, default="")
    links: Mapped[dict[str, str]] = mapped_column(JSONB, default=dict)
    is_private: Mapped[bool] = mapped_column(default=False)
    # Under 16 (derived from the protected birth date, in the home region): duets, downloads
    # and messages are refused, and the account stays private. Set at sign-up, refreshed when
    # the user reads or changes their settings (reelm.social.access enforces it everywhere).
    teen: Mapped[bool] = mapped_column(default=False, server_default="false")
    # Handle, name and bio folded for search (reelm.search.text; trigram index, c0006).
    search_text: Mapped[str] = mapped_column(Text, default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


# ---- region (protected, home region only) -------------------------------------------------


class IndexEpoch(RegionBase):
    """A blind-index key epoch of the region (see reelm.accounts.indexes): the key itself is
    in the key store; the row is what accounts reference, so it outlives none of them."""

    __tablename__ = "index_epochs"

    epoch: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Account(RegionBase):
    __tablename__ = "accounts"

    user_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    market: Mapped[str] = mapped_column(String(2))
    email_ct: Mapped[bytes] = mapped_column(LargeBinary)
    email_bidx: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    phone_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    phone_bidx: Mapped[bytes | None] = mapped_column(LargeBinary, unique=True)
    # The epoch whose key computed both blind indexes (an epoch is retired, and its key
    # destroyed, only when no row references it).
    index_epoch: Mapped[int] = mapped_column(
        ForeignKey("index_epochs.epoch", ondelete="RESTRICT"), index=True
    )
    birth_date_ct: Mapped[bytes] = mapped_column(LargeBinary)
    password_ct: Mapped[bytes] = mapped_column(LargeBinary)
    settings_ct: Mapped[bytes] = mapped_column(LargeBinary)
    # The user's transparency-log keys (reelm.transparency.pseudonyms.LogKeys), encrypted: the
    # log names the user by pseudonyms derived from them. NULL for an account made before
    # r0009 until its first logged event.
    log_keys_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    deletion_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    purge_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    # Region migration fence (reelm.regions.fence): NULL for a user who lives here;
    # 'incoming' for a copy being made here, 'frozen' while the user's writes pause for the
    # last copy, 'moved' once the directory points elsewhere (until the purge).
    migration: Mapped[str | None] = mapped_column(String(16))

    __table_args__ = (
        CheckConstraint("migration IN ('incoming', 'frozen', 'moved')", name="migration"),
    )


class LoginSession(RegionBase):
    """A signed-in device. Only the SHA-256 of the token is stored."""

    __tablename__ = "sessions"

    token_hash: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("accounts.user_id", ondelete="CASCADE"), index=True
    )
    user_agent_ct: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

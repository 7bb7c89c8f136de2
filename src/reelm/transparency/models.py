"""Tables of a region's transparency log. Entries, nodes and checkpoints are append-only:
triggers in the database refuse UPDATE, DELETE and TRUNCATE (migration r0002)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from reelm.storage.db import CatalogBase, RegionBase


class LogQueue(RegionBase):
    """Events written with the action they record, waiting to be integrated (not the log)."""

    __tablename__ = "tlog_queue"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    entry: Mapped[bytes] = mapped_column(LargeBinary)
    kind: Mapped[str] = mapped_column(String(40))
    subject: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # The start of the batch window the event is published in (its time in the entry).
    batch_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    # A user's page lists their events still waiting (up to an hour of the region's events).
    __table_args__ = (Index("ix_tlog_queue_subject", "subject"),)


class LogEntry(RegionBase):
    __tablename__ = "tlog_entries"

    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary)
    entry: Mapped[bytes] = mapped_column(LargeBinary)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    subject: Mapped[str | None] = mapped_column(String(64), index=True)
    integrated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

    __table_args__ = (Index("ix_tlog_entries_leaf_hash", "leaf_hash"),)


class LogNode(RegionBase):
    """Hash of the complete subtree (level, idx): leaves [idx * 2**level, (idx+1) * 2**level)."""

    __tablename__ = "tlog_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class LogCheckpoint(RegionBase):
    __tablename__ = "tlog_checkpoints"

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary)
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class StaffMember(CatalogBase):
    """Operator staff. A staff member reads protected data only through the access gateway."""

    __tablename__ = "staff_members"

    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("directory.user_id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(String(20))
    granted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

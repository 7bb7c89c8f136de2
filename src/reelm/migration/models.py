"""The migration journal, in the catalog. It names random user ids and regions only: no
personal data, so it may sit beside the directory it changes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from reelm.storage.db import CatalogBase

# A user's way through a migration. Each state is reached by an idempotent step.
USER_STATES = ("planned", "copied", "verified", "switched", "purged", "attested", "failed")
MIGRATION_STATES = ("running", "done", "aborted")


class Migration(CatalogBase):
    __tablename__ = "migrations"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    market: Mapped[str | None] = mapped_column(String(2))
    destination: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="running")
    # What the plan found (users, rows and bytes per source region) and the options it ran with.
    plan: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    report_sha256: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The last signed report (also written to a file by the CLI; served to operators).
    report: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (CheckConstraint("state IN ('running', 'done', 'aborted')", name="state"),)


class MigrationUser(CatalogBase):
    __tablename__ = "migration_users"

    migration_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="planned")
    rows: Mapped[int] = mapped_column(Integer, default=0)
    blobs: Mapped[int] = mapped_column(Integer, default=0)
    blob_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    # SHA-256 over the user's canonical content, equal on both sides once verified.
    digest: Mapped[bytes | None] = mapped_column(LargeBinary)
    error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )

    __table_args__ = (
        CheckConstraint(
            "state IN ('planned', 'copied', 'verified', 'switched', 'purged', 'attested', "
            "'failed')",
            name="state",
        ),
        Index("ix_migration_users_state", "migration_id", "state"),
        Index("ix_migration_users_user", "user_id"),
    )


class MigrationRelease(CatalogBase):
    """The source's consent to a user's switch (reelm.migration.switch): written under the
    source region's role once the user is frozen there, at the directory epoch of that moment;
    the destination's switch (``reelm_switch_home``) flips only users released at that epoch."""

    __tablename__ = "migration_releases"

    migration_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("migrations.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        UUID, ForeignKey("directory.user_id", ondelete="CASCADE"), primary_key=True
    )
    epoch: Mapped[int] = mapped_column(Integer)
    released_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )

"""The inter-cell protocol's tables, in each region's own database (migration r0012)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import UUID, DateTime, LargeBinary, String, func
from sqlalchemy.orm import Mapped, mapped_column

from reelm.storage.db import RegionBase


class Outbox(RegionBase):
    """A delivery to another cell, waiting for its acknowledgement. The body (ids, and the
    public data the kind needs) is sealed under the acting user's data key: what they did is
    their protected activity, shredded with them."""

    __tablename__ = "intercell_outbox"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    to_region: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(40))
    acting_for: Mapped[uuid.UUID] = mapped_column(UUID, index=True)
    body_ct: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    attempts: Mapped[int] = mapped_column(default=0)
    last_status: Mapped[int | None] = mapped_column(default=None)
    # Set when the receiver refused it for good (a 4xx): kept for the operator to look at.
    refused_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), default=None)


class SentCount(RegionBase):
    """Deliveries sent in one hour to one region, of one kind: the transparency log gets one
    ``intercell.sent`` entry with the count once the hour is over."""

    __tablename__ = "intercell_counts"

    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    to_region: Mapped[str] = mapped_column(String(16), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), primary_key=True)
    count: Mapped[int] = mapped_column(default=0)
    logged: Mapped[bool] = mapped_column(default=False)


class Receipt(RegionBase):
    """A delivery this region applied: a retry of it is acknowledged, not applied again; the
    same id with another body is refused."""

    __tablename__ = "intercell_receipts"

    id: Mapped[uuid.UUID] = mapped_column(UUID, primary_key=True)
    from_region: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(40))
    digest: Mapped[bytes] = mapped_column(LargeBinary)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class SeenNonce(RegionBase):
    """A signature's nonce, kept as long as its ``created`` time is within the window."""

    __tablename__ = "intercell_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)

"""Catalog table of the residency policy's changes: where a market's users live now.

The configuration says where each market lives when reelm is installed; a region migration
moves a market and records the move here, so every process (and every later start) sends the
market's new sign-ups to the new home even if the configuration file was not edited."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import DateTime, String, Text, func
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from reelm.storage.db import CatalogBase


class MarketRoute(CatalogBase):
    __tablename__ = "market_routes"

    market: Mapped[str] = mapped_column(String(2), primary_key=True)
    region: Mapped[str] = mapped_column(String(16))
    # The migration that moved the market (none when set by hand).
    migration_id: Mapped[uuid.UUID | None] = mapped_column(UUID)
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CellRole(CatalogBase):
    """Which region a catalog login role acts for: what the catalog's row-level security
    (revision c0014_catalog_rls, ``reelm_role_region()``) limits the role's writes by.
    Written only by the catalog's owner (reelm.storage.provision.grant_catalog_tables)."""

    __tablename__ = "cell_roles"

    role: Mapped[str] = mapped_column(Text, primary_key=True)
    region: Mapped[str] = mapped_column(String(16))

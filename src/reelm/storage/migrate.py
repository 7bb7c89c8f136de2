"""Alembic migrations, one script tree per kind of database (the catalog, a region)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, MetaData

from reelm.storage.db import CATALOG, CatalogBase, RegionBase

_HERE = Path(__file__).parent / "migrations"


def target_metadata(kind: str) -> MetaData:
    # Importing the model modules registers their tables on the bases.
    import reelm.accounts.models
    import reelm.intercell.models
    import reelm.media.models
    import reelm.migration.models
    import reelm.regions.models
    import reelm.social.models
    import reelm.transparency.models  # noqa: F401

    return CatalogBase.metadata if kind == CATALOG else RegionBase.metadata


def alembic_config(kind: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_HERE / kind))
    return config


def upgrade(engine: Engine, kind: str, revision: str = "head") -> None:
    config = alembic_config(kind)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def kind_of(database_name: str) -> str:
    return CATALOG if database_name == CATALOG else "region"

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


class SchemaBehind(RuntimeError):
    """A database's schema is not at this release's head, and this process may not upgrade it."""


def require_head(engine: Engine, kind: str) -> None:
    """Refuse to run against a database whose schema is not this release's (a cell's catalog
    role cannot migrate the catalog: its operator does)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config(kind)).get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current != head:
        raise SchemaBehind(
            f"the {kind} database is at revision {current or 'none'}, this release needs {head}: "
            f"its operator runs `reelm db upgrade --catalog` first"
        )


def kind_of(database_name: str) -> str:
    return CATALOG if database_name == CATALOG else "region"

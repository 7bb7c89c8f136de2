"""Lay out a deployment of cells on one PostgreSQL server we administer: the catalog
operator's configuration and one configuration per region's cell, each holding that region's
secrets and no other's.

This is what ``reelm cells init`` (and the multi-cell demo and its tests) runs. In production
each region's database lives on its own server and each cell's configuration is written by its
operator; the shape of the files is the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w
from sqlalchemy.engine import make_url

from reelm.intercell import identity
from reelm.storage import provision
from reelm.storage.db import CATALOG
from reelm.storage.keys import read_or_create_secret

CONFIG_NAME = "reelm.toml"


@dataclass(frozen=True)
class CellLayout:
    region: str
    data_dir: Path
    config_file: Path
    base_url: str
    # The login role this cell uses on its own database and on the catalog.
    role: str


@dataclass(frozen=True)
class CellsLayout:
    root: Path
    catalog_config: Path
    cells: dict[str, CellLayout]
    # The catalog owner's URL: the catalog operator's, in no cell's configuration.
    catalog_owner_url: str

    def cell_roles(self) -> list[str]:
        return [f"{c.region}={c.role}" for c in self.cells.values()]


def _write(path: Path, values: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tomli_w.dumps(values).encode())
    path.chmod(0o600)


def lay_out(
    admin_url: str,
    root: Path,
    base_urls: dict[str, str],
    *,
    prefix: str = "reelm",
    shared: dict[str, Any] | None = None,
    per_cell: Mapping[str, dict[str, Any]] | None = None,
) -> CellsLayout:
    """Provision one database and role per region plus the catalog on ``admin_url``'s server,
    and write under ``root``: ``catalog/reelm.toml`` (the catalog owner's URL) and
    ``cells/<region>/reelm.toml`` for each region of ``base_urls`` (where that cell answers).
    ``shared``: settings every file gets (markets, limits, public_base_url of the edge...);
    ``per_cell``: settings of one cell's file only (its catalog replica's URL...).
    The role passwords are kept in ``root/operator/`` only, outside every cell's directory."""
    regions = list(base_urls)
    root.mkdir(parents=True, exist_ok=True)
    done = provision.provision(admin_url, prefix, regions, root / "operator" / "roles.json")
    catalog_name = provision.role_name(prefix, CATALOG)
    common = dict(shared or {})
    common["database_prefix"] = prefix
    public_dir = root / "public-blobs"
    public_dir.mkdir(parents=True, exist_ok=True)
    common.setdefault("public_store", {"blob_dir": str(public_dir)})
    # The public store's URL-signing key is the public store's, not a region's: every cell
    # writes public renditions there and links to them.
    public_url_key = read_or_create_secret(root / "operator" / "public-blob-url.key")

    cells: dict[str, CellLayout] = {}
    identities: dict[str, str] = {}
    for region in regions:
        data_dir = root / "cells" / region
        key = identity.load_or_create(data_dir / "secrets" / "identity.key")
        identities[region] = identity.encode_public(key.public_key())
        key_copy = data_dir / "secrets" / "public-blob-url.key"
        if not key_copy.exists():
            key_copy.write_bytes(public_url_key)
            key_copy.chmod(0o600)
        cells[region] = CellLayout(
            region=region,
            data_dir=data_dir,
            config_file=data_dir / CONFIG_NAME,
            base_url=base_urls[region].rstrip("/"),
            role=provision.role_name(prefix, region),
        )
    for region, cell in cells.items():
        own_url = done.region_urls[region]
        catalog_url = make_url(own_url).set(database=catalog_name)
        _write(
            cell.config_file,
            {
                **common,
                "cell": region,
                "data_dir": str(cell.data_dir),
                "catalog_database_url": catalog_url.render_as_string(hide_password=False),
                "regions": {region: {"database_url": own_url}},
                "peers": {
                    other: {"base_url": cells[other].base_url, "public_key": identities[other]}
                    for other in cells
                    if other != region
                },
                **(per_cell or {}).get(region, {}),
            },
        )
    catalog_config = root / "catalog" / CONFIG_NAME
    _write(
        catalog_config,
        {**common, "data_dir": str(root / "catalog"), "catalog_database_url": done.catalog_url},
    )
    return CellsLayout(root, catalog_config, cells, done.catalog_url)


def upgrade_catalog(layout: CellsLayout) -> None:
    """The catalog operator's upgrade: the catalog's migrations as its owner, then the grants
    that let each cell's role use it."""
    upgrade_catalog_at(
        layout.catalog_owner_url, {c.role: region for region, c in layout.cells.items()}
    )


def upgrade_catalog_at(owner_url: str, cell_roles: Mapping[str, str]) -> None:
    """The catalog's migrations as its owner, then the grants of ``cell_roles`` (catalog role
    -> its region: what the catalog's row-level security limits each role's writes by)."""
    from reelm.storage import migrate
    from reelm.storage.db import Database

    db = Database.connect(CATALOG, owner_url)
    try:
        migrate.upgrade(db.engine, CATALOG)
    finally:
        db.dispose()
    if cell_roles:
        provision.grant_catalog_tables(owner_url, cell_roles)


def tear_down(admin_url: str, layout: CellsLayout, prefix: str = "reelm") -> None:
    """Drop the deployment's databases and roles (its files stay, for a look at its logs)."""
    provision.drop(admin_url, prefix, list(layout.cells))


def secrets_of(layout: CellsLayout, region: str) -> Iterable[bytes]:
    """Every secret of ``region`` as bytes (for the tests that look for them elsewhere): its
    role's password, its master key, its identity seed, its CSRF key."""
    cell = layout.cells[region]
    password = make_url(read_config(cell.config_file)["regions"][region]["database_url"]).password
    if password:
        yield str(password).encode()
    for path in [
        cell.data_dir / "keys" / region / "master.key",
        cell.data_dir / "secrets" / "identity.key",
        cell.data_dir / "secret.key",
    ]:
        if path.exists():
            yield path.read_bytes()


def read_config(path: Path) -> dict[str, Any]:
    import tomllib

    with path.open("rb") as f:
        return tomllib.load(f)

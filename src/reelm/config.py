"""Settings: built-in defaults, then ``reelm.toml``, then ``REELM_*`` environment variables.

Settings are data. Every field carries its help text, and ``tests/test_docs.py`` checks that
each one is documented in ``docs/configuration.md``.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_CONFIG_FILE = "reelm.toml"
SECONDS_A_DAY = 86_400
# Where links point when public_base_url is unset and no command filled it in.
DEMO_BASE_URL = "http://localhost:8000"

RegionName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9]{1,15}$")]
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
# A host name, an IPv4 address, or '*.domain' (Starlette's TrustedHostMiddleware compares the
# Host header without its port).
_HOST = re.compile(r"(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*")
_S3_URL = re.compile(
    r"s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])"
    r"(?P<prefix>(/[a-z0-9][a-z0-9_.-]*)*)/?"
)


class ForeignRegion(RuntimeError):
    """A cell was asked for a store of another region: it holds none."""

    def __init__(self, region: str, cell: str) -> None:
        super().__init__(f"the cell of {cell!r} holds no store of region {region!r}")
        self.region = region
        self.cell = cell


class ConfigError(Exception):
    """A configuration file or variable is wrong; the message names the key and the source."""


class BlobStoreSettings(BaseModel):
    """Where a blob store lives: a directory (default) or an S3 bucket."""

    model_config = {"extra": "forbid"}

    blob_dir: Path | None = Field(
        default=None, description="Directory of the blob store. Unset: under data_dir."
    )
    blob_url: str | None = Field(
        default=None,
        description="S3 bucket (and optional prefix) of the blob store, "
        "'s3://bucket/prefix'. Unset: a directory (blob_dir). Credentials come from the "
        "standard AWS chain, never from this file.",
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="Endpoint of an S3-compatible service (MinIO, Ceph, ...), path-style "
        "addressing. Unset: AWS S3.",
    )
    s3_region: str | None = Field(
        default=None,
        description="Region name the S3 requests and presigned URLs are signed for "
        "(e.g. 'ca-central-1'). Unset: from the AWS configuration.",
    )
    s3_profile: str | None = Field(
        default=None,
        description="Named profile of the AWS shared config and credentials files holding "
        "this store's credentials. Unset: the default AWS credential chain.",
    )

    @field_validator("blob_url")
    @classmethod
    def _s3_url(cls, value: str | None) -> str | None:
        if value is not None and not _S3_URL.fullmatch(value):
            raise ValueError(
                "blob_url must be s3://bucket or s3://bucket/prefix (lowercase bucket name; "
                "prefix segments of a-z 0-9 _ . -; no credentials in the URL)"
            )
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("s3_endpoint_url must be an http:// or https:// URL")
            if parts.username or parts.password:
                raise ValueError("s3_endpoint_url must not carry credentials")
        return value

    @model_validator(mode="after")
    def _one_blob_store(self) -> BlobStoreSettings:
        if self.blob_url and self.blob_dir:
            raise ValueError("set blob_dir or blob_url, not both")
        return self

    def s3_location(self) -> tuple[str, str] | None:
        """(bucket, prefix) when the blobs live in S3, else None."""
        if self.blob_url is None:
            return None
        match = _S3_URL.fullmatch(self.blob_url)
        if match is None:  # the validator refuses it; reached only if the field was reassigned
            raise ValueError(f"blob_url {self.blob_url!r} is not s3://bucket[/prefix]")
        return match["bucket"], (match["prefix"] or "").strip("/")


class RegionSettings(BlobStoreSettings):
    """One region: a jurisdiction's database, blob store and key store."""

    label: str = Field(description="Human name of the jurisdiction, shown in reports.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the region's database. Unset: provisioned for you.",
    )
    key_dir: Path | None = Field(
        default=None, description="Directory of the region's key store. Unset: under data_dir."
    )


# What a region's settings may say that reaches its stores: a cell is given these for its own
# region only (everything else about another region, its label, is public).
REGION_SECRET_FIELDS = (
    "database_url",
    "key_dir",
    "blob_dir",
    "blob_url",
    "s3_endpoint_url",
    "s3_region",
    "s3_profile",
)


class PeerSettings(BaseModel):
    """Another region's cell, as this cell knows it: public data only."""

    model_config = {"extra": "forbid"}

    base_url: str = Field(description="Where the peer cell answers (https://sg.cells.example).")
    public_key: str = Field(
        pattern=r"^[A-Za-z0-9_-]{43}$",
        description="The peer cell's Ed25519 identity public key, base64url of its 32 bytes.",
    )

    @field_validator("base_url")
    @classmethod
    def _peer_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.rstrip("/")


class BlockedMarket(BaseModel):
    model_config = {"extra": "forbid"}

    reason: str = Field(description="The legal reason shown with HTTP 451.")
    authority: str = Field(description="Who imposed it (RFC 7725 'blocked-by' link).")


def _default_regions() -> dict[str, RegionSettings]:
    return {
        "us": RegionSettings(label="United States"),
        "ca": RegionSettings(label="Canada"),
        "au": RegionSettings(label="Australia"),
        "nz": RegionSettings(label="New Zealand"),
        "sg": RegionSettings(label="Singapore (default for every other open market)"),
    }


def _default_blocked() -> dict[str, BlockedMarket]:
    return {
        "IN": BlockedMarket(
            reason=(
                "Blocked in India since June 2020 by order of the Ministry of Electronics and "
                "Information Technology under section 69A of the Information Technology Act, "
                "2000."
            ),
            authority="Ministry of Electronics and Information Technology, Government of India",
        ),
        "CN": BlockedMarket(
            reason=(
                "Not served in mainland China: only a separate domestic service operates there "
                "under Chinese law."
            ),
            authority="Operator policy",
        ),
    }


class Settings(BaseSettings):
    """Everything an operator can set. Nested keys in the environment use ``__``:
    ``REELM_REGIONS__US__DATABASE_URL``."""

    model_config = SettingsConfigDict(
        env_prefix="REELM_", env_nested_delimiter="__", extra="forbid", toml_file=None
    )

    data_dir: Path = Field(
        default=Path("reelm-data"),
        description="Where the embedded database, blobs and key files live.",
    )
    admin_database_url: str | None = Field(
        default=None,
        description=(
            "A superuser URL of a PostgreSQL server on which reelm creates one database and one "
            "role per region plus the catalog. Unset and no per-region URLs: embedded PostgreSQL."
        ),
    )
    database_prefix: str = Field(
        default="reelm",
        pattern=r"^[a-z][a-z0-9_]{0,30}$",
        description="Prefix of the databases and roles reelm provisions.",
    )
    catalog_database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the catalog database (its primary: writes), when configured. "
            "A cell reaches it with its own region's catalog role."
        ),
    )
    catalog_replica_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of a local replica of the catalog, for reads. Unset: none.",
    )
    cell: RegionName | None = Field(
        default=None,
        description=(
            "Run as the cell of this region: the configuration holds that region's secrets "
            "only. Unset: the single-machine mode, one process holding every region."
        ),
    )
    identity_key_file: Path | None = Field(
        default=None,
        description=(
            "This cell's Ed25519 identity key (signs inter-cell requests). Unset: "
            "data_dir/secrets/identity.key, made on first start."
        ),
    )
    peers: dict[RegionName, PeerSettings] = Field(
        default_factory=dict,
        description="The other regions' cells: base URL and identity public key, by region.",
    )
    regions: dict[RegionName, RegionSettings] = Field(
        default_factory=_default_regions, description="The regions, by name."
    )
    default_region: RegionName = Field(
        default="sg", description="Home region of every open market not listed in markets."
    )
    markets: dict[CountryCode, RegionName] = Field(
        default_factory=lambda: {"US": "us", "CA": "ca", "AU": "au", "NZ": "nz"},
        description="Market (ISO 3166-1 alpha-2) to home region.",
    )
    blocked_markets: dict[CountryCode, BlockedMarket] = Field(
        default_factory=_default_blocked,
        description="Markets that get HTTP 451, with the legal reason.",
    )
    public_store: BlobStoreSettings = Field(
        default_factory=BlobStoreSettings,
        description="The public blob store: renditions and posters of public videos, which "
        "anyone may watch (put a CDN in front of it in production). Protected media never "
        "goes there.",
    )
    country_header: str = Field(
        default="CF-IPCountry",
        description="Request header, set by the operator's edge, giving an anonymous visitor's "
        "market.",
    )
    market_picker: bool = Field(
        default=False,
        description="Let anonymous visitors pick their market (demo only: trusts the visitor).",
    )
    log_origin: str = Field(
        default="reelm.localhost",
        pattern=r"^[a-z0-9.-]+(/[a-z0-9._-]+)*$",
        description="Public name of this deployment's transparency logs; a region's log is "
        "'<log_origin>/<region>' (the C2SP checkpoint origin and key name).",
    )
    log_batch_seconds: int = Field(
        default=3600,
        ge=1,
        le=SECONDS_A_DAY,
        description="Transparency log batch window in seconds (dividing a day evenly): an "
        "entry's time is its window's start and a window is published once it has closed, its "
        "entries in hash order.",
    )
    public_base_url: str | None = Field(
        default=None,
        description="The address people reach this deployment at, e.g. 'https://reelm.example'. "
        "Canonical, Open Graph and share links are built from it, never from the request's "
        "Host header. Unset: the address 'reelm demo' or 'reelm serve' listens on "
        "(http://localhost:<port>).",
    )
    trusted_hosts: list[str] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1"],
        description="Host header values answered, besides the host of public_base_url "
        "('*.example.com' matches subdomains). Any other Host gets HTTP 400.",
    )
    forwarded_allow_ips: list[str] = Field(
        default_factory=list,
        description="Addresses or networks of the reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto headers are believed. Empty: none; the client is the TCP peer.",
    )
    cookie_secure: bool = Field(default=True, description="Mark cookies Secure.")
    session_days: int = Field(default=30, ge=1, le=365, description="Session lifetime in days.")
    deletion_grace_days: int = Field(
        default=30, ge=0, le=365, description="Days between a deletion request and the purge."
    )
    signup_rate: str = Field(
        default="10/hour", description="Sign-ups allowed per client address ('limits' syntax)."
    )
    login_rate: str = Field(
        default="10/minute",
        description="Log-in attempts allowed per client address, and per device the account "
        "knows; also the 'email already registered' answers of sign-up per client address.",
    )
    login_free_attempts: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Log-in attempts on one account, in a day, from clients the account does "
        "not know (no session or device cookie of it) before each further attempt waits.",
    )
    login_backoff_max_seconds: int = Field(
        default=300,
        ge=2,
        le=3600,
        description="Longest wait between two log-in attempts on one account from clients it "
        "does not know (the wait starts at 2 s and doubles).",
    )
    search_rate: str = Field(
        default="60/minute",
        description="Searches allowed per client address (pages and API together).",
    )
    argon2_time_cost: int = Field(default=3, ge=1, le=20, description="argon2id passes.")
    argon2_memory_kib: int = Field(
        default=65536, ge=1024, le=4 * 1024 * 1024, description="argon2id memory in KiB."
    )
    max_upload_bytes: int = Field(
        default=500_000_000, ge=1_000, description="Largest video upload, in bytes."
    )
    max_video_seconds: float = Field(
        default=600, gt=0, le=3600, description="Longest video accepted, in seconds."
    )
    max_uploads_per_day: int = Field(
        default=50, ge=1, le=100_000, description="Videos one account may post in 24 hours."
    )
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1024, description="Largest accepted form or JSON body."
    )
    job_stall_seconds: float = Field(
        default=30,
        ge=1,
        le=3600,
        description="A job whose worker has not signalled life for this long (a killed worker, "
        "a lost machine) is run again by another worker.",
    )
    secret_key_file: Path | None = Field(
        default=None,
        description="File holding the key that signs CSRF tokens. Unset: under data_dir.",
    )

    @field_validator("log_batch_seconds")
    @classmethod
    def _whole_days(cls, value: int) -> int:
        """Windows must never straddle a UTC midnight: an entry's pseudonym is named for the
        month of its window, and the user's page looks for it from the month they joined."""
        if SECONDS_A_DAY % value:
            raise ValueError(f"must divide a day ({SECONDS_A_DAY} s) evenly, e.g. 600 or 3600")
        return value

    @field_validator("public_base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("public_base_url must be an http:// or https:// URL")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError("public_base_url must be a scheme, a host and a path, nothing more")
        return value.rstrip("/")

    @field_validator("trusted_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            if not _HOST.fullmatch(host):
                raise ValueError(
                    f"trusted_hosts: {host!r} is not a host name, an address or '*.domain'"
                )
        return value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for proxy in value:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ValueError(
                    f"forwarded_allow_ips: {proxy!r} is not an address or a network"
                ) from None
        return value

    @field_validator("markets", "blocked_markets", mode="before")
    @classmethod
    def _upper_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {str(k).upper(): v for k, v in value.items()}
        return value

    @field_validator("regions", mode="before")
    @classmethod
    def _merge_regions(cls, value: Any) -> Any:
        """A file or variable names only the regions it changes or adds; defaults stay."""
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = {k: v.model_dump() for k, v in _default_regions().items()}
        for name, region in value.items():
            if isinstance(region, dict) and name in merged:
                merged[name] = {**merged[name], **region}
            else:
                merged[name] = region
        return merged

    @field_validator("blocked_markets", mode="before")
    @classmethod
    def _keep_default_blocks(cls, value: Any) -> Any:
        """Adding a blocked market must never silently unblock the default ones."""
        if not isinstance(value, dict):
            return value
        defaults: dict[str, Any] = {k: v.model_dump() for k, v in _default_blocked().items()}
        return {**defaults, **{str(k).upper(): v for k, v in value.items()}}

    @model_validator(mode="after")
    def _coherent(self) -> Settings:
        if self.default_region not in self.regions:
            raise ValueError(f"default_region {self.default_region!r} is not a region")
        for market, region in self.markets.items():
            if region not in self.regions:
                raise ValueError(f"markets.{market} points to unknown region {region!r}")
            if market in self.blocked_markets:
                raise ValueError(f"market {market} is both served and blocked")
        for region in self.peers:
            if region not in self.regions:
                raise ValueError(f"peers.{region} is not a region")
        if self.cell is not None:
            self._check_cell(self.cell)
        return self

    def _check_cell(self, cell: str) -> None:
        """A cell is given its own region's secrets and nothing else: refuse any other."""
        if cell not in self.regions:
            raise ValueError(f"cell {cell!r} is not a region")
        foreign = {
            region: [name for name in REGION_SECRET_FIELDS if getattr(config, name) is not None]
            for region, config in self.regions.items()
            if region != cell
        }
        for region, names in foreign.items():
            if names:
                raise ValueError(
                    f"the cell of {cell!r} is given region {region!r}'s "
                    f"{', '.join(names)}: a cell holds its own region's secrets only "
                    f"(another region may be listed with its label alone)"
                )
        if self.admin_database_url is not None:
            raise ValueError(
                "a cell is not given admin_database_url: a superuser reaches every region's "
                "database. Give it its own region's database_url and its catalog role's URL"
            )
        if self.catalog_database_url is None:
            raise ValueError("a cell needs catalog_database_url (the catalog primary)")
        if self.regions[cell].database_url is None:
            raise ValueError(f"a cell needs regions.{cell}.database_url")
        if cell in self.peers:
            raise ValueError(f"peers.{cell} is this cell itself")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _CONFIG_FILE_IN_USE.get("path")
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    # Paths derived from data_dir -----------------------------------------------------------
    def _own(self, region: str) -> None:
        """A cell derives no path of another region's stores (it has none)."""
        if self.cell is not None and region != self.cell:
            raise ForeignRegion(region, self.cell)

    def blob_dir(self, region: str) -> Path:
        self._own(region)
        return self.regions[region].blob_dir or self.data_dir / "blobs" / region

    def public_blob_dir(self) -> Path:
        return self.public_store.blob_dir or self.data_dir / "public-blobs"

    def key_dir(self, region: str) -> Path:
        self._own(region)
        return self.regions[region].key_dir or self.data_dir / "keys" / region

    def staging_dir(self, region: str) -> Path:
        """Where uploads in progress wait, inside the region (removed once processed)."""
        self._own(region)
        return self.data_dir / "staging" / region

    def base_url(self) -> str:
        """Where links point: public_base_url, else the demo's address."""
        return self.public_base_url or DEMO_BASE_URL

    def allowed_hosts(self) -> list[str]:
        """The Host header values answered: trusted_hosts and the public address's host."""
        public = urlsplit(self.base_url()).hostname
        return [*self.trusted_hosts, *([public] if public else [])]

    def csrf_key_file(self) -> Path:
        return self.secret_key_file or self.data_dir / "secret.key"

    def identity_key_path(self) -> Path:
        return self.identity_key_file or self.data_dir / "secrets" / "identity.key"

    @property
    def local_regions(self) -> list[str]:
        """The regions whose stores this process holds: its cell's, or every one."""
        return [self.cell] if self.cell is not None else list(self.regions)

    @property
    def uses_embedded_database(self) -> bool:
        if self.cell is not None:
            return False
        configured = self.catalog_database_url and all(
            r.database_url for r in self.regions.values()
        )
        return not configured and self.admin_database_url is None


# The TOML source is chosen per call of load_settings; pydantic-settings reads it at init.
_CONFIG_FILE_IN_USE: dict[str, Path | None] = {"path": None}


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Load settings; a bad file or variable raises ConfigError naming the key and the source."""
    path = config_file
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = Path(DEFAULT_CONFIG_FILE)
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"{path}: no such configuration file")
        try:
            with path.open("rb") as f:
                tomllib.load(f)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    _CONFIG_FILE_IN_USE["path"] = path
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        source = f"{path}" if path else "environment (REELM_*)"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: "
            f"{err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise ConfigError(f"{source}: {problems}") from exc
    finally:
        _CONFIG_FILE_IN_USE["path"] = None

"""Release statements: which code, with which configuration, served a region.

At every start of a long-running process (``reelm serve``, ``reelm worker``, ``reelm demo``)
each of its local cells appends a ``release.started`` entry to its transparency log: the reelm
version, a digest of the files of the ``reelm`` package the process imported, and a digest of
its configuration with every secret taken out. An auditor recomputes the package digest from a
checkout or a wheel (``reelm audit release-digest``) and compares it with the log.

The package digest is the SHA-256 of a manifest in ``sha256sum`` format: one line
``<hex SHA-256 of the file>  <path>\\n`` per file under the package directory (paths relative to
it, ``/``-separated, in byte order; ``__pycache__`` and compiled ``.pyc``/``.pyo`` left out).
So coreutils recompute it too (docs/transparency.md).

The configuration is the process's ``Settings`` walked field by field through an allow list:
a field's value goes into the digest as it is only when its name is in ``PUBLIC``; a
connection URL (``URLS``) loses its password and every query value not known to be harmless;
anything else, ``SECRET`` or a field nobody classified yet, is replaced by a marker. Nothing
is read from the files the settings name (key files, the CSRF key): only their paths count.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rfc8785
from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from reelm.transparency.auditor import RELEASE_KIND

if TYPE_CHECKING:
    from reelm.bootstrap import Platform
    from reelm.config import Settings

KIND = RELEASE_KIND
# What replaces a value withheld from the configuration digest.
WITHHELD = "<withheld>"
# Settings fields (of Settings and the models it holds) whose values are no secret: they go into
# the digest as they are. Paths of key files are here; the files' contents are never read.
PUBLIC = frozenset(
    {
        # Settings
        "data_dir",
        "database_prefix",
        "regions",
        "default_region",
        "markets",
        "blocked_markets",
        "public_store",
        "country_header",
        "market_picker",
        "log_origin",
        "log_batch_seconds",
        "public_base_url",
        "trusted_hosts",
        "forwarded_allow_ips",
        "cookie_secure",
        "session_days",
        "deletion_grace_days",
        "signup_rate",
        "login_rate",
        "login_free_attempts",
        "login_backoff_max_seconds",
        "search_rate",
        "argon2_time_cost",
        "argon2_memory_kib",
        "max_upload_bytes",
        "max_video_seconds",
        "max_uploads_per_day",
        "max_body_bytes",
        "job_stall_seconds",
        "secret_key_file",
        # Cell mode (docs/architecture.md): the region served, the private identity key's
        # path, and the other cells' public keys and addresses.
        "cell",
        "identity_key_file",
        "peers",
        "base_url",
        "public_key",
        # RegionSettings and BlobStoreSettings (blob_url and s3_endpoint_url refuse
        # credentials at validation)
        "label",
        "key_dir",
        "blob_dir",
        "blob_url",
        "s3_endpoint_url",
        "s3_region",
        # BlockedMarket
        "reason",
        "authority",
    }
)
# Database URLs: scheme, user, host, port and database stay; the password goes.
URLS = frozenset(
    {"admin_database_url", "catalog_database_url", "catalog_replica_url", "database_url"}
)
# Withheld whatever they hold. An S3 profile names an entry of the operator's credentials file.
SECRET = frozenset({"s3_profile"})
# libpq query parameters that say how to connect, never with what (no password, no passfile,
# no key material): the rest are withheld.
HARMLESS_QUERY = frozenset(
    {
        "sslmode",
        "connect_timeout",
        "application_name",
        "target_session_attrs",
        "gssencmode",
        "channel_binding",
        "load_balance_hosts",
    }
)


def reelm_version() -> str:
    try:
        return importlib.metadata.version("reelm")
    except importlib.metadata.PackageNotFoundError:  # run from a tree that is not installed
        return "0+unknown"


def package_dir() -> Path:
    """The directory of the ``reelm`` package this process imported."""
    import reelm

    return Path(reelm.__file__).resolve().parent


def _skipped(relative: str) -> bool:
    parts = relative.split("/")
    return "__pycache__" in parts or relative.endswith((".pyc", ".pyo"))


def manifest(root: Path) -> bytes:
    """``sha256sum`` lines of every file under ``root``, by path in byte order."""
    paths: list[tuple[bytes, Path]] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            path = Path(folder, name)
            relative = path.relative_to(root).as_posix()
            if not _skipped(relative) and path.is_file():
                paths.append((relative.encode(), path))
    paths.sort()
    lines = [
        hashlib.sha256(path.read_bytes()).hexdigest().encode() + b"  " + relative + b"\n"
        for relative, path in paths
    ]
    return b"".join(lines)


def tree_digest(root: Path) -> str:
    """``sha256:<hex>`` of the manifest of ``root`` (a package directory, e.g. ``src/reelm``)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    return "sha256:" + hashlib.sha256(manifest(root)).hexdigest()


@functools.cache
def package_digest() -> str:
    """The digest of the installed package, computed once per process (the files do not change
    under a running process, and if they do, it still runs the code it loaded at start)."""
    return tree_digest(package_dir())


def _url(value: str) -> str:
    try:
        url = make_url(value)
    except ArgumentError:
        return WITHHELD  # not a URL: it could be anything
    query = {k: v if k in HARMLESS_QUERY else WITHHELD for k, v in url.query.items()}
    if url.password is not None:
        url = url.set(password=WITHHELD)
    return url.set(query=query).render_as_string(hide_password=False)


def _value(name: str, value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, BaseModel):
        return public_config(value)
    if name not in PUBLIC and name not in URLS:
        return WITHHELD
    if isinstance(value, dict):
        return {str(k): _value(name, v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_value(name, v) for v in value]
    if name in URLS:
        return _url(str(value))
    return to_jsonable_python(value)


def public_config(settings: BaseModel) -> dict[str, Any]:
    """The settings as JSON values, every secret replaced by ``WITHHELD`` (module docstring)."""
    out: dict[str, Any] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if name in SECRET:
            out[name] = None if value is None else WITHHELD
        else:
            out[name] = _value(name, value)
    return out


def config_dump(settings: Settings) -> bytes:
    """The RFC 8785 canonical JSON the configuration digest is taken over."""
    return bytes(rfc8785.dumps(public_config(settings)))


def config_digest(settings: Settings) -> str:
    return "sha256:" + hashlib.sha256(config_dump(settings)).hexdigest()


@dataclass(frozen=True)
class Release:
    version: str
    package_digest: str
    config_digest: str
    regions: tuple[str, ...]
    process: str

    def details(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "package_digest": self.package_digest,
            "config_digest": self.config_digest,
            "regions": list(self.regions),
            "process": self.process,
        }


def statement(platform: Platform, process: str) -> Release:
    """This process's release: its code, its configuration, the regions it serves (its local
    cells: every region in single-machine mode, one in a cell)."""
    return Release(
        version=reelm_version(),
        package_digest=package_digest(),
        config_digest=config_digest(platform.settings),
        regions=tuple(sorted(platform.cells)),
        process=process,
    )


def record(platform: Platform, process: str) -> Release:
    """Append the release entry to each local cell's log (published with its batch window)."""
    release = statement(platform, process)
    for cell in platform.cells.values():
        cell.log.append_now(KIND, None, release.details())
    return release

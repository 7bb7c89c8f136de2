"""The boundary between a migration's coordinator and its two sides.

The coordinator (journal, phases, switch) talks to the source cell's exporter and the
destination cell's importer only through a ``Transport``: ``transport.source`` and
``transport.destination`` answer one request each per call, every argument and answer a
plain value or a ``messages`` dataclass (JSON), and every call idempotent (named by the
migration and the users it is about, so a retried call does the same thing again). Bytes
(blobs, staged uploads) go from the exporter straight to the importer, streamed
(``copy_blob``, ``copy_staged``), never through the coordinator.

``LocalTransport`` holds both sides in this process (the single-machine mode, and a
migration run where both regions are local), each given a platform that holds its own cell
only. Between cell processes, a transport over the inter-cell protocol (``reelm.intercell``)
plugs in here: the same two Protocols as signed HTTP requests to each cell's migration
endpoints, the exporter posting the byte streams to the importer's."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any, Protocol

from reelm.bootstrap import Platform
from reelm.migration.common import Fault, no_fault
from reelm.migration.exporter import Exporter
from reelm.migration.importer import Importer
from reelm.migration.messages import (
    BlobCheck,
    Digests,
    ExportBatch,
    ImportReceipt,
    Stamp,
    Survey,
)


class Source(Protocol):
    """What the source cell's exporter answers (reelm.migration.exporter)."""

    region: str

    def survey(
        self, market: str | None, user_ids: list[uuid.UUID] | None, exclude: list[uuid.UUID]
    ) -> Survey: ...
    def log_started(self, migration_id: uuid.UUID, details: dict[str, Any]) -> None: ...
    def present(self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]) -> list[uuid.UUID]: ...
    def freeze(self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]) -> None: ...
    def export_batch(self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]) -> ExportBatch: ...
    def blob_inventory(
        self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, dict[str, Stamp]]: ...
    def blob_stamps(self, migration_id: uuid.UUID, keys: list[str]) -> dict[str, Stamp]: ...
    def digests(
        self,
        migration_id: uuid.UUID,
        user_ids: list[uuid.UUID],
        hashed: dict[str, tuple[str, int]],
    ) -> Digests: ...
    def thaw(self, migration_id: uuid.UUID, user_id: uuid.UUID) -> None: ...
    def mark_moved(self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]) -> None: ...
    def purge_files(self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]) -> None: ...
    def destroy_keys(
        self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]
    ) -> list[uuid.UUID]: ...
    def purge_rows(
        self,
        migration_id: uuid.UUID,
        user_ids: list[uuid.UUID],
        to: str,
        digests_by_user: dict[uuid.UUID, bytes],
        subjects: dict[uuid.UUID, bytes | None],
    ) -> None: ...
    def integrate_log(self, migration_id: uuid.UUID) -> None: ...
    def rotate_index(self, migration_id: uuid.UUID) -> None: ...


class Destination(Protocol):
    """What the destination cell's importer answers (reelm.migration.importer)."""

    region: str

    def log_started(self, migration_id: uuid.UUID, details: dict[str, Any]) -> None: ...
    def sweep_scratch(self, migration_id: uuid.UUID) -> None: ...
    def create_keys(self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]) -> None: ...
    def held_blobs(
        self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, list[str]]: ...
    def prune_blobs(self, migration_id: uuid.UUID, user_id: uuid.UUID, keep: list[str]) -> None: ...
    def import_batch(
        self, migration_id: uuid.UUID, user_ids: list[uuid.UUID], batch: ExportBatch
    ) -> ImportReceipt: ...
    def digests(
        self,
        migration_id: uuid.UUID,
        user_ids: list[uuid.UUID],
        hashed: dict[str, tuple[str, int]],
    ) -> Digests: ...
    def remove_copy(self, migration_id: uuid.UUID, user_id: uuid.UUID) -> None: ...
    def activate(
        self,
        migration_id: uuid.UUID,
        user_ids: list[uuid.UUID],
        source: str,
        digests_by_user: dict[uuid.UUID, bytes],
    ) -> None: ...
    def resume_work(self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]) -> None: ...
    def subjects(
        self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, bytes | None]: ...
    def unreadable(
        self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, list[str]]: ...
    def integrate_log(self, migration_id: uuid.UUID) -> None: ...


class Transport(Protocol):
    source: Source
    destination: Destination

    def copy_blob(self, migration_id: uuid.UUID, user_id: uuid.UUID, key: str) -> BlobCheck:
        """The source streams one blob's plaintext to the destination, which seals it under
        the user's new key; both hash what they handled."""
        ...

    def copy_staged(self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]) -> None:
        """The source streams the users' staged uploads (bytes so far) to the destination."""
        ...


def confined(platform: Platform, region: str) -> Platform:
    """The platform as the cell of ``region`` alone would hold it: that region's stores only
    (``cell()`` of any other raises NotInThisCell, its settings derive no other region's
    paths). What each side of a migration is given, so it cannot reach the other region."""
    return dataclasses.replace(
        platform,
        cells={region: platform.cell(region)},
        settings=platform.settings.model_copy(update={"cell": region}),
    )


class LocalTransport:
    """Both sides in this process, each holding its own region only."""

    def __init__(self, source: Exporter, destination: Importer) -> None:
        self.source: Source = source
        self.destination: Destination = destination
        self._exporter = source
        self._importer = destination

    @classmethod
    def between(
        cls, platform: Platform, source: str, destination: str, fault: Fault = no_fault
    ) -> LocalTransport:
        return cls(
            Exporter(confined(platform, source), source, fault),
            Importer(confined(platform, destination), destination, fault),
        )

    def copy_blob(self, migration_id: uuid.UUID, user_id: uuid.UUID, key: str) -> BlobCheck:
        return self._exporter.send_blob(migration_id, user_id, key, self._importer)

    def copy_staged(self, migration_id: uuid.UUID, user_ids: list[uuid.UUID]) -> None:
        self._exporter.send_staged(migration_id, user_ids, self._importer)

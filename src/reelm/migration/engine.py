"""The migration engine's former single module, kept so that callers and scripts importing
``reelm.migration.engine`` go on working. The engine is split by side:

- ``coordinator.py``: the run (journal, phases, fences, switch, purge, attest), which talks
  to the two sides only through ``transport.py``;
- ``exporter.py``: the source cell's side; ``importer.py``: the destination cell's side;
- ``plan.py``: who moves; ``status.py``: runs in the background, status, overview."""

from __future__ import annotations

from reelm.migration.common import (
    BEFORE_SWITCH,
    DEFAULT_BATCH,
    DONE,
    FAULT_ENV,
    FAULT_POINTS,
    RUN_LOCK_SPACE,
    Faults,
    MigrationError,
)
from reelm.migration.coordinator import Outcome, Progress, Runner
from reelm.migration.messages import BlobCheck
from reelm.migration.plan import Plan, make_plan, start
from reelm.migration.side import blob_digest as _blob_digest
from reelm.migration.status import (
    being_run,
    in_transit,
    last_migration,
    overview,
    run_in_background,
    running_in_background,
    running_migration,
    status,
    stored_report,
)

__all__ = [
    "BEFORE_SWITCH",
    "DEFAULT_BATCH",
    "DONE",
    "FAULT_ENV",
    "FAULT_POINTS",
    "RUN_LOCK_SPACE",
    "BlobCheck",
    "Faults",
    "MigrationError",
    "Outcome",
    "Plan",
    "Progress",
    "Runner",
    "_blob_digest",
    "being_run",
    "in_transit",
    "last_migration",
    "make_plan",
    "overview",
    "run_in_background",
    "running_in_background",
    "running_migration",
    "start",
    "status",
    "stored_report",
]

"""/api/v1/staff/migrations: region migrations for operators (staff with the admin role).

The same engine as ``reelm migrate``: a dry run answers with the plan; a real one is started
and runs in a background thread of this server (202 + Location), its progress readable at
the migration's URL. A server that stops mid-way leaves the journal: resume it here or with
``reelm migrate --resume``."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from reelm.accounts.service import CurrentUser
from reelm.api.deps import CurrentUserDep, PlatformDep
from reelm.api.problems import problem_responses
from reelm.bootstrap import Platform
from reelm.migration import engine
from reelm.transparency.gateway import NotStaff, staff_role

router = APIRouter(prefix="/api/v1/staff/migrations", tags=["staff"])
ERRORS = problem_responses(401, 403, 404, 409, 422)
MAX_LISTED_USERS = 100_000


class MigrationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: Annotated[str, Field(min_length=1, max_length=16, pattern=r"^[a-z][a-z0-9_]*$")]
    market: Annotated[str | None, Field(min_length=2, max_length=2)] = None
    users: Annotated[list[uuid.UUID] | None, Field(max_length=MAX_LISTED_USERS)] = None
    dry_run: bool = False
    batch_size: Annotated[int, Field(ge=1, le=5000)] = engine.DEFAULT_BATCH


def _admin(platform: Platform, user: CurrentUser) -> None:
    if staff_role(platform, user.user_id) != "admin":
        raise NotStaff("region migrations are for staff with the admin role")


def _status(platform: Platform, migration_id: uuid.UUID) -> dict[str, Any]:
    found = engine.status(platform, migration_id)
    found["running_here"] = engine.running_in_background(migration_id)
    return found


@router.post("", status_code=status.HTTP_202_ACCEPTED, responses=ERRORS)
def start_migration(
    body: MigrationIn, user: CurrentUserDep, platform: PlatformDep, response: Response
) -> dict[str, Any]:
    """Plan a migration (``dry_run``: the plan only) or start one; it runs in the background.
    Admin staff only. The answer's ``Location`` is where its progress is read."""
    _admin(platform, user)
    plan = engine.make_plan(platform, body.to, market=body.market, user_ids=body.users)
    if body.dry_run:
        response.status_code = status.HTTP_200_OK
        return {"plan": plan.as_dict()}
    migration_id = engine.start(platform, plan, batch_size=body.batch_size)
    engine.run_in_background(platform, migration_id)
    response.headers["Location"] = f"/api/v1/staff/migrations/{migration_id}"
    return {"plan": plan.as_dict(), **_status(platform, migration_id)}


@router.get("/{migration_id}", responses=ERRORS)
def migration_status(
    migration_id: uuid.UUID, user: CurrentUserDep, platform: PlatformDep
) -> dict[str, Any]:
    """State, users per step, and (once done) the report's SHA-256."""
    _admin(platform, user)
    return _status(platform, migration_id)


@router.post("/{migration_id}/resume", status_code=status.HTTP_202_ACCEPTED, responses=ERRORS)
def resume_migration(
    migration_id: uuid.UUID, user: CurrentUserDep, platform: PlatformDep
) -> dict[str, Any]:
    """Finish a migration a crash interrupted, or retry its users who stayed."""
    _admin(platform, user)
    if _status(platform, migration_id)["state"] != "running":
        raise engine.MigrationError(f"migration {migration_id} is not running")
    if engine.being_run(platform, migration_id):
        raise engine.MigrationError(f"migration {migration_id} is being run already")
    engine.run_in_background(platform, migration_id)
    return _status(platform, migration_id)


@router.post("/{migration_id}/abort", responses=ERRORS)
def abort_migration(
    migration_id: uuid.UUID, user: CurrentUserDep, platform: PlatformDep
) -> dict[str, Any]:
    """Stop: users not yet switched stay where they are; switched ones finish moving."""
    _admin(platform, user)
    engine.Runner(platform, migration_id).abort()
    return _status(platform, migration_id)


@router.get("/{migration_id}/report", responses=ERRORS)
def migration_report(
    migration_id: uuid.UUID, user: CurrentUserDep, platform: PlatformDep
) -> JSONResponse:
    """The signed report (check it with ``reelm audit verify-migration``)."""
    _admin(platform, user)
    return JSONResponse(engine.stored_report(platform, migration_id))

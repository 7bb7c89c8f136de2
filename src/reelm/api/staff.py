"""/api/v1/staff: the access gateway. Staff read protected data here, justified and logged."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict

from reelm.api.deps import CurrentUserDep, PlatformDep
from reelm.api.problems import problem_responses
from reelm.transparency.gateway import Justification, staff_read

router = APIRouter(prefix="/api/v1/staff", tags=["staff"])


class AccessRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: uuid.UUID
    justification: Justification | None = None


class AccessOut(BaseModel):
    user_id: uuid.UUID
    home_region: str
    email: str
    phone: str | None
    birth_date: date
    market: str
    deletion_due: datetime | None
    logged: bool = True


@router.post("/access", responses=problem_responses(401, 403, 404, 422))
def access(body: AccessRequest, user: CurrentUserDep, platform: PlatformDep) -> AccessOut:
    """Read a user's protected data. Needs a staff account and a justification (ticket id and
    reason code); the read is written to the user's home region log before it happens, and the
    user sees it in their settings."""
    view = staff_read(platform, user.user_id, body.user_id, body.justification)
    return AccessOut(
        user_id=view.user_id,
        home_region=view.home_region,
        email=view.email,
        phone=view.phone,
        birth_date=view.birth_date,
        market=view.market,
        deletion_due=view.deletion_due,
    )

"""/api/v1/reports and /api/v1/staff/moderation: reports by users, the moderation queue and
moderators' actions (reelm.social.moderation; every action is in the public log)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from reelm.api.deps import CurrentUserDep, PlatformDep
from reelm.api.problems import problem_responses
from reelm.social import moderation

router = APIRouter(prefix="/api/v1", tags=["moderation"])


class Filed(BaseModel):
    counted: bool


class ReasonOut(BaseModel):
    code: str
    label: str


@router.get("/reports/reasons", summary="The reasons a report can give")
def reasons() -> list[ReasonOut]:
    return [ReasonOut(code=k, label=v) for k, v in moderation.REASONS.items()]


@router.post(
    "/reports",
    status_code=201,
    responses=problem_responses(401, 403, 404, 422, 451),
    summary="Report a video, a comment or an account (your report stays in your home region)",
)
def file_report(platform: PlatformDep, user: CurrentUserDep, body: moderation.ReportIn) -> Filed:
    return Filed(counted=moderation.report(platform, user, body))


class CaseOut(BaseModel):
    id: uuid.UUID
    target: str
    target_id: str
    reason: str
    count: int
    first_at: datetime
    last_at: datetime
    summary: str
    owner_handle: str | None


@router.get(
    "/staff/moderation/queue",
    responses=problem_responses(401, 403),
    summary="Open report cases, most reported first (moderators)",
)
def moderation_queue(
    platform: PlatformDep,
    user: CurrentUserDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[CaseOut]:
    return [
        CaseOut(
            id=i.id,
            target=i.target,
            target_id=i.target_id,
            reason=i.reason,
            count=i.count,
            first_at=i.first_at,
            last_at=i.last_at,
            summary=i.summary,
            owner_handle=i.owner_handle,
        )
        for i in moderation.queue(platform, user, limit=limit)
    ]


class Done(BaseModel):
    done: str


@router.post(
    "/staff/moderation/actions",
    responses=problem_responses(401, 403, 404, 422),
    summary="Remove, withhold in a market, suspend, reinstate or dismiss (logged publicly)",
)
def moderation_action(
    platform: PlatformDep, user: CurrentUserDep, body: moderation.Decision
) -> Done:
    return Done(done=moderation.act(platform, user, body))

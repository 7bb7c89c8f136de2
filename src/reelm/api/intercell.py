"""The inter-cell endpoints, ``/cell/v1/``: other cells' signed deliveries (not part of the
public API, and not in its OpenAPI document). Refusals are problem+json: 401 a signature that
does not verify (or is stale, or replayed), 403 a request from the wrong cell or for a user not
homed there, 409 a delivery id reused with another body, 400 a body not understood."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from reelm.api.problems import problem
from reelm.intercell.receiver import receive
from reelm.intercell.signing import Refused
from reelm.regions.fence import UserMoving

router = APIRouter(prefix="/cell/v1", include_in_schema=False)

SLUGS = {
    400: "cell-bad-delivery",
    401: "cell-unauthenticated",
    403: "cell-forbidden",
    409: "cell-conflict",
}
# How long a sender waits before retrying a delivery to a user being moved.
MOVING_RETRY_SECONDS = "5"


@router.put("/deliveries/{delivery_id}")
async def put_delivery(delivery_id: str, request: Request) -> Response:
    """Apply a delivery once; a retry of one applied before is acknowledged (200) again."""
    raw = await request.body()
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
    try:
        answer = await run_in_threadpool(
            receive,
            request.app.state.platform,
            delivery_id,
            request.method,
            str(request.url),
            headers,
            raw,
        )
    except Refused as refusal:
        return problem(
            SLUGS.get(refusal.status, "cell-forbidden"),
            refusal.detail,
            status=refusal.status,
            reason=refusal.reason,
        )
    except UserMoving:
        # Not the moving header: MovingRetry would hold the sender's connection; it retries.
        return problem(
            "busy",
            "the user is moving to another region: retry later",
            headers={"Retry-After": MOVING_RETRY_SECONDS},
        )
    return JSONResponse({"id": delivery_id, "applied": answer.applied})

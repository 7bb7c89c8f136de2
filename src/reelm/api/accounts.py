"""/api/v1: accounts, sessions, the signed-in user, public profiles."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Request, Response, status
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from reelm.accounts import lifecycle, service
from reelm.accounts.schemas import PrivacySettings, PrivacyUpdate, ProfileUpdate, SignUp
from reelm.api.deps import (
    ClientAddress,
    CurrentUserDep,
    LoginVisitor,
    OptionalUserDep,
    PlatformDep,
    remember_device,
)
from reelm.api.problems import problem_responses
from reelm.transparency.pseudonyms import month_start

router = APIRouter(prefix="/api/v1", tags=["accounts"])

# Every route can meet the market gate (451); routes with a body, the body checks.
BODY = (413, 415, 422)


class AccountCreated(BaseModel):
    id: uuid.UUID
    handle: str
    home_region: str


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("cannot contain NUL characters")
    return value


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    identifier: Annotated[str, Field(min_length=1, max_length=254), AfterValidator(_no_nul)]
    password: Annotated[str, Field(min_length=1, max_length=256), AfterValidator(_no_nul)]


class SessionOut(BaseModel):
    token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    user: AccountCreated


class PublicProfileOut(BaseModel):
    """What anyone may see. No internal id: it is the subject of the user's log entries, and
    publishing it beside the handle would link the handle to them."""

    handle: str
    display_name: str
    bio: str
    links: dict[str, str]
    is_private: bool
    home_region: str
    # To the month only: a precise sign-up time beside the handle ties the handle to the
    # sign-up's entry in the public log (docs/transparency.md).
    created_at: datetime = Field(description="When the account was made, to the month (UTC).")

    @classmethod
    def of(cls, p: lifecycle.Profile) -> PublicProfileOut:
        return cls(
            handle=p.handle,
            display_name=p.display_name,
            bio=p.bio,
            links=p.links,
            is_private=p.is_private,
            home_region=p.home_region,
            created_at=month_start(p.created_at),
        )


class ProfileOut(PublicProfileOut):
    """The owner's own view, with the account id."""

    id: uuid.UUID

    @classmethod
    def of(cls, p: lifecycle.Profile) -> ProfileOut:
        return cls(id=p.user_id, **PublicProfileOut.of(p).model_dump())


class MeOut(BaseModel):
    profile: ProfileOut
    email: str
    phone: str | None
    birth_date: date
    market: str
    privacy: PrivacySettings
    privacy_locked: bool
    deletion_due: datetime | None


class MeUpdate(ProfileUpdate):
    privacy: PrivacyUpdate | None = None


class DeletionOut(BaseModel):
    deletion_due: datetime
    detail: str


def _me_out(me: lifecycle.Me) -> MeOut:
    return MeOut(
        profile=ProfileOut.of(me.profile),
        email=me.email,
        phone=me.phone,
        birth_date=me.birth_date,
        market=me.market,
        privacy=me.privacy,
        privacy_locked=me.privacy_locked,
        deletion_due=me.deletion_due,
    )


@router.post(
    "/accounts",
    status_code=status.HTTP_201_CREATED,
    response_model=AccountCreated,
    responses=problem_responses(403, 409, *BODY, 429, 451),
)
def create_account(
    body: SignUp, platform: PlatformDep, client: ClientAddress
) -> AccountCreated | Response:
    """Sign up. Protected fields are stored encrypted in the market's home region only."""
    platform.rate_limits.hit("signup", client)
    done = service.sign_up_from(platform, body, client)
    return AccountCreated(id=done.user_id, handle=done.handle, home_region=done.home_region)


@router.post(
    "/session",
    status_code=status.HTTP_201_CREATED,
    responses=problem_responses(401, *BODY, 429, 451),
)
def create_session(
    body: LoginIn,
    platform: PlatformDep,
    visitor: LoginVisitor,
    request: Request,
    response: Response,
) -> SessionOut:
    """Log in with a handle or an email; returns a bearer token.

    The answer also sets a device cookie: a client that keeps cookies and sends it back (or
    logs in with a live bearer token of the account) is not slowed down by strangers' failed
    attempts on the account."""
    platform.rate_limits.hit("login", visitor.address)
    token, user = service.log_in(
        platform, body.identifier, body.password, user_agent="api", visitor=visitor
    )
    remember_device(request, response, user.user_id)
    return SessionOut(
        token=token,
        user=AccountCreated(id=user.user_id, handle=user.handle, home_region=user.home_region),
    )


@router.delete(
    "/session",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problem_responses(401, 451),
)
def delete_session(user: CurrentUserDep, platform: PlatformDep) -> Response:
    service.log_out(platform, user)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", responses=problem_responses(401, 451))
def read_me(user: CurrentUserDep, platform: PlatformDep) -> MeOut:
    """Your account, decrypted in your home region."""
    return _me_out(lifecycle.get_me(platform, user))


@router.patch("/me", responses=problem_responses(401, 403, *BODY, 451))
def update_me(body: MeUpdate, user: CurrentUserDep, platform: PlatformDep) -> MeOut:
    """Change profile fields and privacy settings; omitted fields stay as they are."""
    if body.privacy is not None:
        lifecycle.update_privacy(platform, user, body.privacy)
    lifecycle.update_profile(platform, user, body)
    return _me_out(lifecycle.get_me(platform, user))


@router.delete(
    "/me",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(401, 451),
)
def delete_me(user: CurrentUserDep, platform: PlatformDep) -> DeletionOut:
    """Schedule deletion. Logging in within the grace period cancels it."""
    due = lifecycle.request_deletion(platform, user)
    return DeletionOut(
        deletion_due=due,
        detail="your account is hidden and will be purged then; log in before to cancel",
    )


@router.get("/users/{handle}", responses=problem_responses(404, 422, 451))
async def read_user(
    handle: Annotated[str, Field(max_length=100)], platform: PlatformDep, viewer: OptionalUserDep
) -> PublicProfileOut:
    """A public profile."""

    def read() -> lifecycle.Profile:
        # From the catalog's local replica, the viewer's own writes seen (Platform.catalog_reads).
        reads = platform.catalog_reads(viewer.user_id if viewer else None)
        return lifecycle.public_profile(platform, handle, reads=reads)

    return PublicProfileOut.of(await run_in_threadpool(read))

"""Typed dependencies: routes read like documentation."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from reelm.accounts.errors import NotAuthenticated
from reelm.accounts.service import CurrentUser
from reelm.bootstrap import Platform


def get_platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


BEARER_SCHEME = "bearer"
# Documents the bearer token in the OpenAPI (the gate has already resolved the session; a page's
# script may use the session cookie instead, so a missing header is not an error here).
_bearer = HTTPBearer(
    scheme_name=BEARER_SCHEME,
    description="The token of POST /api/v1/session",
    auto_error=False,
)


def get_current_user(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> CurrentUser:
    user: CurrentUser | None = getattr(request.state, "user", None)
    if user is None:
        raise NotAuthenticated("sign in first: send 'Authorization: Bearer <token>'")
    return user


def get_optional_user(request: Request) -> CurrentUser | None:
    return getattr(request.state, "user", None)


def get_market(request: Request) -> str | None:
    """The visitor's market, as the gate worked it out (account, edge header, demo cookie)."""
    market: str | None = getattr(request.state, "market", None)
    return market


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


PlatformDep = Annotated[Platform, Depends(get_platform)]
CurrentUserDep = Annotated[CurrentUser, Depends(get_current_user)]
OptionalUserDep = Annotated[CurrentUser | None, Depends(get_optional_user)]
ClientAddress = Annotated[str, Depends(client_address)]
MarketDep = Annotated[str | None, Depends(get_market)]

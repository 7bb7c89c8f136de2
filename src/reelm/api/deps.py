"""Typed dependencies: routes read like documentation."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from reelm.accounts.errors import NotAuthenticated
from reelm.accounts.service import CurrentUser
from reelm.accounts.throttle import DEVICE_COOKIE, DEVICE_SECONDS, DeviceCookies, Visitor
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
    """The TCP peer, or the client a trusted proxy names (`forwarded_allow_ips`, applied by
    `reelm.api.proxies.CellFront`)."""
    return request.client.host if request.client else "unknown"


def login_visitor(request: Request) -> Visitor:
    """Who is trying to log in, for `reelm.accounts.throttle`: the address, and the accounts
    this browser or client is known to (a live session, a device cookie we signed)."""
    known: set[uuid.UUID] = set()
    device = ""
    user: CurrentUser | None = getattr(request.state, "user", None)
    if user is not None:
        known.add(user.user_id)
        device = "session:" + user.token_hash.hex()
    devices: DeviceCookies = request.app.state.devices
    remembered = devices.read(request.cookies.get(DEVICE_COOKIE))
    if remembered is not None:
        known.add(remembered[0])
        device = "cookie:" + remembered[1]
    return Visitor(client_address(request), frozenset(known), device)


def remember_device(request: Request, response: Response, user_id: uuid.UUID) -> None:
    """After a log-in: the device cookie that lets this browser in while strangers are slowed
    down on the account. SameSite=Strict: only our own log-in form needs it."""
    devices: DeviceCookies = request.app.state.devices
    platform = get_platform(request)
    response.set_cookie(
        DEVICE_COOKIE,
        devices.issue(user_id),
        max_age=DEVICE_SECONDS,
        httponly=True,
        samesite="strict",
        secure=platform.settings.cookie_secure,
        path="/",
    )


PlatformDep = Annotated[Platform, Depends(get_platform)]
CurrentUserDep = Annotated[CurrentUser, Depends(get_current_user)]
OptionalUserDep = Annotated[CurrentUser | None, Depends(get_optional_user)]
ClientAddress = Annotated[str, Depends(client_address)]
LoginVisitor = Annotated[Visitor, Depends(login_visitor)]
MarketDep = Annotated[str | None, Depends(get_market)]

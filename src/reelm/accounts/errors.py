"""Errors of the accounts domain. Each has a stable slug: the API turns it into problem+json."""

from __future__ import annotations

from reelm.regions.cell import NotInThisCell


class AccountError(Exception):
    slug = "account-error"
    status = 400
    title = "Account request refused"

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.field = field


class InvalidInput(AccountError):
    slug = "invalid-input"
    status = 422
    title = "Invalid input"


class HandleTaken(AccountError):
    slug = "handle-taken"
    status = 409
    title = "Handle already taken"


class EmailTaken(AccountError):
    slug = "email-taken"
    status = 409
    title = "Email already registered"


class PhoneTaken(AccountError):
    slug = "phone-taken"
    status = 409
    title = "Phone number already registered"


class AgeRestricted(AccountError):
    slug = "age-restricted"
    status = 403
    title = "Not allowed at this age"


class SettingLocked(AccountError):
    slug = "setting-locked"
    status = 403
    title = "Setting locked for this account"


class BadCredentials(AccountError):
    slug = "bad-credentials"
    status = 401
    title = "Wrong handle, email or password"


class NotAuthenticated(AccountError):
    slug = "not-authenticated"
    status = 401
    title = "Sign-in required"


class NotFound(AccountError):
    slug = "not-found"
    status = 404
    title = "Not found"


class RateLimited(AccountError):
    slug = "rate-limited"
    status = 429
    title = "Too many attempts"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class SessionElsewhere(NotInThisCell):
    """A session token of a region this process does not hold. Nothing was looked up or
    decrypted: the request belongs to that region's cell (a page is redirected there, an API
    client gets 421 naming the region)."""

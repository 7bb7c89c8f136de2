"""The staff access gateway: the only way staff read a user's protected data.

Every read needs a justification (a ticket id and a reason code) and is committed to the user's
home region log before anything is decrypted, so no read can happen without its entry.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert

from reelm.accounts.errors import AccountError, NotFound
from reelm.accounts.lifecycle import read_protected
from reelm.accounts.logsubject import subject as log_subject
from reelm.accounts.models import DirectoryEntry
from reelm.bootstrap import Platform
from reelm.transparency.models import StaffMember
from reelm.transparency.views import ProvenEvent, events_about

ReasonCode = Literal[
    "user_request",
    "legal_request",
    "safety_investigation",
    "fraud_investigation",
    "data_subject_request",
    "incident_response",
]
REASON_CODES: tuple[str, ...] = ReasonCode.__args__  # type: ignore[attr-defined]
Role = Literal["support", "moderator", "admin"]
FIELDS_READ = ["email", "phone", "birth_date", "market", "privacy", "deletion_due"]


class NotStaff(AccountError):
    slug = "not-staff"
    status = 403
    title = "Staff only"


class JustificationRequired(AccountError):
    slug = "justification-required"
    status = 422
    title = "A justification is required"


class Justification(BaseModel):
    """Why a staff member needs to read a user's protected data. No personal data allowed:
    a ticket id is letters, digits and one dash (``SUP-1234``)."""

    model_config = ConfigDict(extra="forbid")

    ticket: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9]{1,9}-[0-9]{1,10}$")]
    reason_code: ReasonCode


@dataclass(frozen=True)
class StaffView:
    user_id: uuid.UUID
    home_region: str
    email: str
    phone: str | None
    birth_date: date
    market: str
    deletion_due: datetime | None


def staff_role(platform: Platform, user_id: uuid.UUID) -> str | None:
    with platform.catalog.transaction() as s:
        return s.scalar(select(StaffMember.role).where(StaffMember.user_id == user_id))


def _home(platform: Platform, user_id: uuid.UUID) -> str:
    with platform.catalog.transaction() as s:
        entry = s.get(DirectoryEntry, user_id)
    if entry is None or entry.state == "deleted":
        raise NotFound("no such account")
    return entry.home_region


def grant(platform: Platform, user_id: uuid.UUID, role: Role) -> None:
    """Logged before it takes effect, like a staff read: a crash in between leaves a logged
    grant that did not happen (run it again), never a staff member the log does not show.
    Staff are named by their account id, in the clear, here and in the entries of what they
    do: accountability for an official role (docs/transparency.md)."""
    home = _home(platform, user_id)
    platform.cell(home).log.append_now("staff.granted", str(user_id), {"role": role})
    with platform.catalog.transaction() as s:
        s.execute(
            insert(StaffMember)
            .values(user_id=user_id, role=role)
            .on_conflict_do_update(index_elements=["user_id"], set_={"role": role})
        )


def revoke(platform: Platform, user_id: uuid.UUID) -> bool:
    home = _home(platform, user_id)
    with platform.catalog.transaction() as s:
        gone = s.scalar(
            delete(StaffMember).where(StaffMember.user_id == user_id).returning(StaffMember.user_id)
        )
    if gone is not None:
        platform.cell(home).log.append_now("staff.revoked", str(user_id), {})
    return gone is not None


def staff_read(
    platform: Platform,
    staff_id: uuid.UUID,
    subject: uuid.UUID,
    justification: Justification | None,
) -> StaffView:
    """Log, then read. Refused for non-staff and without a justification."""
    if staff_role(platform, staff_id) is None:
        raise NotStaff("only staff may read another user's protected data")
    if justification is None:
        raise JustificationRequired(
            "give a ticket id and a reason code; every staff read is logged publicly",
            field="justification",
        )
    home = _home(platform, subject)
    cell = platform.cell(home)
    scope = cell.for_user(subject, home)
    # Committed before the read: a read without its log entry cannot happen. The user is
    # named by their pseudonym: only they can tie the entry to their account.
    with cell.db.transaction() as s:
        cell.log.append(
            s,
            "staff.read",
            log_subject(s, scope),
            {
                "staff": str(staff_id),
                "ticket": justification.ticket,
                "reason_code": justification.reason_code,
                "fields": FIELDS_READ,
            },
        )
    record = read_protected(platform, scope)
    return StaffView(
        user_id=subject,
        home_region=home,
        email=record.email,
        phone=record.phone,
        birth_date=record.birth_date,
        market=record.market,
        deletion_due=record.deletion_due,
    )


LegalKind = Literal["court_order", "subpoena", "government_request", "preservation", "other"]
LegalOutcome = Literal["pending", "disclosed", "partially_disclosed", "rejected"]


class LegalRequest(BaseModel):
    """A legal request the operator received, as recorded in the public log. The reference is
    the authority's own case number; names and personal data do not belong here."""

    model_config = ConfigDict(extra="forbid")

    authority: Annotated[str, Field(min_length=2, max_length=120, pattern=r"^[^\x00-\x1f]+$")]
    kind: LegalKind
    reference: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ./:_-]{0,63}$")]
    outcome: LegalOutcome = "pending"


def record_legal_request(
    platform: Platform, request: LegalRequest, *, region: str, subject: uuid.UUID | None
) -> str:
    """Log a legal request in the subject's home region (or the given region), naming the
    user by their pseudonym (they see it; no one else can tie it to them). Returns the region."""
    home = _home(platform, subject) if subject is not None else region
    if home not in platform.cells:
        raise NotFound(f"no region {home!r}")
    cell = platform.cell(home)
    with cell.db.transaction() as s:
        named = log_subject(s, cell.for_user(subject, home)) if subject is not None else None
        cell.log.append(s, "legal.request", named, request.model_dump())
    return home


def entries_under_legal_request(
    platform: Platform, request: LegalRequest, subject: uuid.UUID
) -> list[ProvenEvent]:
    """The one way for the operator to tie log entries to an account: the legal request is
    logged first (the user sees it on their own page), then the user's entries are found as
    their own page finds them."""
    record_legal_request(platform, request, region="", subject=subject)
    return events_about(platform, subject)

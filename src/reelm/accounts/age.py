"""Age rules, computed from the birth date on the day they are applied."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from reelm.accounts.errors import AgeRestricted, InvalidInput

MINIMUM_AGE = 13
ADULT_AGE = 18
LOCKED_UNTIL = 16
OLDEST = 130


def age_on(birth: date, today: date) -> int:
    years = today.year - birth.year
    if (today.month, today.day) < (birth.month, birth.day):
        years -= 1
    return years


@dataclass(frozen=True)
class AgeRules:
    """What an account may do at its holder's age."""

    age: int

    @property
    def is_minor(self) -> bool:
        return self.age < ADULT_AGE

    @property
    def privacy_locked(self) -> bool:
        """13-15: private account and no direct messages, and the user cannot change that."""
        return self.age < LOCKED_UNTIL

    @property
    def private_by_default(self) -> bool:
        return self.is_minor

    @property
    def direct_messages_allowed(self) -> bool:
        return not self.privacy_locked


def rules_for(birth: date, today: date) -> AgeRules:
    if birth > today:
        raise InvalidInput("the birth date is in the future", field="birth_date")
    age = age_on(birth, today)
    if age > OLDEST:
        raise InvalidInput("the birth date is not plausible", field="birth_date")
    if age < MINIMUM_AGE:
        raise AgeRestricted(
            f"you must be at least {MINIMUM_AGE} years old to use reelm", field="birth_date"
        )
    return AgeRules(age)

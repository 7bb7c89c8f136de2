"""Where a market's new users live: the configuration, unless a region migration moved the
market (recorded in the catalog's ``market_routes``, read by every process)."""

from __future__ import annotations

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from reelm.bootstrap import Platform
from reelm.regions.models import MarketRoute


def routes(platform: Platform) -> dict[str, str]:
    with platform.catalog.transaction() as c:
        return dict(c.execute(select(MarketRoute.market, MarketRoute.region)).all())


# First key of the advisory lock on a market's route: a sign-up holds it shared from reading
# the route until its account is committed; a migration moving the market takes it exclusive
# to change the route, so every sign-up that read the old route has committed by then (and
# the migration's straggler scan finds it), and every later one reads the new route.
ROUTE_LOCK_SPACE = 0x726D  # "rm"


def lock_market(session: Session, market: str, *, exclusive: bool) -> None:
    kind = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    session.execute(
        text(f"SELECT {kind}(:space, hashtext(:market))"),
        {"space": ROUTE_LOCK_SPACE, "market": market},
    )


def home_region(platform: Platform, market: str, session: Session | None = None) -> str:
    """The home region of a new user of ``market`` (raises MarketBlocked / UnknownMarket).
    ``session``: read within this catalog transaction (a sign-up's, holding the route lock)."""
    code = platform.policy.check_open(market)
    query = select(MarketRoute.region).where(MarketRoute.market == code)
    if session is not None:
        routed = session.scalar(query)
    else:
        # A read only: nothing to commit.
        with platform.catalog.engine.connect() as conn:
            routed = conn.scalar(query)
    if routed is not None and routed in platform.regions:
        return routed
    return platform.policy.home_region(code)

"""Where a market's new users live: the configuration, unless a region migration moved the
market (recorded in the catalog's ``market_routes``, read by every process)."""

from __future__ import annotations

from sqlalchemy import select

from reelm.bootstrap import Platform
from reelm.regions.models import MarketRoute


def routes(platform: Platform) -> dict[str, str]:
    with platform.catalog.transaction() as c:
        return dict(c.execute(select(MarketRoute.market, MarketRoute.region)).all())


def home_region(platform: Platform, market: str) -> str:
    """The home region of a new user of ``market`` (raises MarketBlocked / UnknownMarket)."""
    code = platform.policy.check_open(market)
    # A read only: nothing to commit (a sign-up's own catalog transaction comes after).
    with platform.catalog.engine.connect() as conn:
        routed = conn.scalar(select(MarketRoute.region).where(MarketRoute.market == code))
    if routed is not None and routed in platform.cells:
        return routed
    return platform.policy.home_region(code)

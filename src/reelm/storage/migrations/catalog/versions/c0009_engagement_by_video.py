"""market engagement by video: popularity lookups and cascading deletes without a scan

Revision ID: c0009
Revises: c0008
Create Date: 2026-12-01 22:00:00

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "c0009"
down_revision: str | Sequence[str] | None = "c0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The primary key (market, day, video_id) serves "the market's week"; a list of videos
    # (popularity of given videos, a removed video's rows) scanned the whole week without this.
    op.create_index(
        "ix_market_engagement_video",
        "market_engagement",
        ["video_id", "market", "day"],
        postgresql_include=["score"],
    )


def downgrade() -> None:
    op.drop_index("ix_market_engagement_video", table_name="market_engagement")

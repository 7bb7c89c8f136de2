"""feed indexes: newest-first keyset pages, hashtag pages, a profile's grid

Revision ID: c0004
Revises: c0003
Create Date: 2026-12-01 13:20:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "c0004"
down_revision: str | Sequence[str] | None = "c0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The feed's order and its cursor (published_at, id), read backwards by one index scan.
    op.create_index(
        "ix_public_videos_feed", "public_videos", [sa.text("published_at DESC"), sa.text("id DESC")]
    )
    # A profile's grid: one author's videos, newest first.
    op.create_index(
        "ix_public_videos_owner_feed",
        "public_videos",
        ["owner_id", sa.text("published_at DESC"), sa.text("id DESC")],
    )
    op.drop_index("ix_public_videos_owner_id", table_name="public_videos")
    op.drop_index("ix_public_videos_published_at", table_name="public_videos")
    # Hashtag pages: hashtags @> ARRAY['tag'].
    op.create_index(
        "ix_public_videos_hashtags", "public_videos", ["hashtags"], postgresql_using="gin"
    )


def downgrade() -> None:
    op.drop_index("ix_public_videos_hashtags", table_name="public_videos")
    op.create_index("ix_public_videos_published_at", "public_videos", ["published_at"])
    op.create_index("ix_public_videos_owner_id", "public_videos", ["owner_id"])
    op.drop_index("ix_public_videos_owner_feed", table_name="public_videos")
    op.drop_index("ix_public_videos_feed", table_name="public_videos")

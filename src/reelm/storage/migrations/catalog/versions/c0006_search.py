"""search: folded text of profiles and public videos, trigram indexes

Revision ID: c0006
Revises: c0005
Create Date: 2026-12-01 15:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "c0006"
down_revision: str | Sequence[str] | None = "c0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    from reelm.search.text import profile_text, video_text

    # pg_trgm is a trusted extension (PostgreSQL 13+): the database's owner may create it.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for table in ("profiles", "public_videos"):
        op.add_column(table, sa.Column("search_text", sa.Text(), server_default="", nullable=False))
    bind = op.get_bind()
    for user_id, handle, name, bio in bind.execute(
        sa.text("SELECT user_id, handle, display_name, bio FROM profiles")
    ).all():
        bind.execute(
            sa.text("UPDATE profiles SET search_text = :t WHERE user_id = :u"),
            {"t": profile_text(handle, name, bio or ""), "u": user_id},
        )
    for video_id, caption, hashtags in bind.execute(
        sa.text("SELECT id, caption, hashtags FROM public_videos")
    ).all():
        bind.execute(
            sa.text("UPDATE public_videos SET search_text = :t WHERE id = :v"),
            {"t": video_text(caption or "", list(hashtags or [])), "v": video_id},
        )
    op.execute("CREATE INDEX ix_profiles_search ON profiles USING gin (search_text gin_trgm_ops)")
    op.execute(
        "CREATE INDEX ix_public_videos_search ON public_videos USING gin (search_text gin_trgm_ops)"
    )


def downgrade() -> None:
    op.drop_index("ix_public_videos_search", table_name="public_videos")
    op.drop_index("ix_profiles_search", table_name="profiles")
    for table in ("profiles", "public_videos"):
        op.drop_column(table, "search_text")

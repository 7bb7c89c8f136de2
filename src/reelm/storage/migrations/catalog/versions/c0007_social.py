"""social: follows, blocks, comments, counts, market engagement, suspensions, restrictions

Revision ID: c0007
Revises: c0006
Create Date: 2026-12-01 18:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "c0007"
down_revision: str | Sequence[str] | None = "c0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("now()")


def _user(name: str, **kw: object) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        name,
        sa.UUID(),
        sa.ForeignKey("directory.user_id", ondelete="CASCADE"),
        nullable=False,
        **kw,  # type: ignore[arg-type]
    )


def _video(name: str = "video_id") -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        name, sa.UUID(), sa.ForeignKey("public_videos.id", ondelete="CASCADE"), nullable=False
    )


def _created() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("created_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False)


def upgrade() -> None:
    op.create_table(
        "follows",
        _user("follower_id"),
        _user("followee_id"),
        sa.Column("state", sa.String(16), nullable=False),
        _created(),
        sa.CheckConstraint("state IN ('active', 'requested')", name=op.f("ck_follows_state")),
        sa.PrimaryKeyConstraint("follower_id", "followee_id", name=op.f("pk_follows")),
    )
    op.create_index(
        "ix_follows_followee", "follows", ["followee_id", "state", sa.text("created_at DESC")]
    )
    op.create_index(
        "ix_follows_follower", "follows", ["follower_id", "state", sa.text("created_at DESC")]
    )
    op.create_table(
        "blocks",
        _user("blocker_id"),
        _user("blocked_id"),
        _created(),
        sa.PrimaryKeyConstraint("blocker_id", "blocked_id", name=op.f("pk_blocks")),
    )
    op.create_index("ix_blocks_blocked_id", "blocks", ["blocked_id"])
    op.create_table(
        "comments",
        sa.Column("id", sa.UUID(), nullable=False),
        _video(),
        _user("author_id"),
        sa.Column(
            "parent_id", sa.UUID(), sa.ForeignKey("comments.id", ondelete="CASCADE"), nullable=True
        ),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("mentions", postgresql.ARRAY(sa.String(24)), nullable=False),
        _created(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_comments")),
    )
    op.create_index(
        "ix_comments_video",
        "comments",
        ["video_id", "parent_id", sa.text("created_at DESC"), sa.text("id DESC")],
    )
    op.create_index("ix_comments_parent", "comments", ["parent_id", "created_at", "id"])
    op.create_index("ix_comments_author_id", "comments", ["author_id"])
    op.create_table(
        "video_stats",
        _video(),
        *(
            sa.Column(name, sa.BigInteger(), server_default="0", nullable=False)
            for name in ("likes", "comments", "shares", "views")
        ),
        sa.PrimaryKeyConstraint("video_id", name=op.f("pk_video_stats")),
    )
    op.create_table(
        "market_engagement",
        sa.Column("market", sa.String(2), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        _video(),
        sa.Column("score", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("market", "day", "video_id", name=op.f("pk_market_engagement")),
    )
    op.create_index(
        "ix_market_engagement_rank",
        "market_engagement",
        ["market", "day", sa.text("score DESC")],
    )
    op.create_table(
        "suspensions",
        _user("user_id"),
        sa.Column("reason", sa.String(32), nullable=False),
        _created(),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_suspensions")),
    )
    op.create_table(
        "video_restrictions",
        _video(),
        sa.Column("market", sa.String(2), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        _created(),
        sa.PrimaryKeyConstraint("video_id", "market", name=op.f("pk_video_restrictions")),
    )
    op.add_column(
        "profiles", sa.Column("teen", sa.Boolean(), server_default="false", nullable=False)
    )
    op.add_column(
        "public_videos",
        sa.Column("comments_from", sa.String(16), server_default="everyone", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("public_videos", "comments_from")
    op.drop_column("profiles", "teen")
    for table in (
        "video_restrictions",
        "suspensions",
        "market_engagement",
        "video_stats",
        "comments",
        "blocks",
        "follows",
    ):
        op.drop_table(table)

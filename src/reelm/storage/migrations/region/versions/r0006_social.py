"""social: likes, watch signals and notifications (encrypted, home region only)

Revision ID: r0006
Revises: r0005
Create Date: 2026-12-01 18:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "r0006"
down_revision: str | Sequence[str] | None = "r0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _created() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "likes",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("lookup", sa.LargeBinary(), nullable=False),
        sa.Column("video_ct", sa.LargeBinary(), nullable=False),
        _created(),
        sa.PrimaryKeyConstraint("user_id", "lookup", name=op.f("pk_likes")),
    )
    op.create_table(
        "signals",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("event_ct", sa.LargeBinary(), nullable=False),
        _created(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signals")),
    )
    op.create_index("ix_signals_user", "signals", ["user_id", sa.text("created_at DESC")])
    op.create_table(
        "notifications",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("event_ct", sa.LargeBinary(), nullable=False),
        sa.Column("read", sa.Boolean(), nullable=False),
        _created(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index(
        "ix_notifications_user", "notifications", ["user_id", sa.text("created_at DESC")]
    )
    op.add_column(
        "videos",
        sa.Column("comments_from", sa.String(16), server_default="everyone", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("videos", "comments_from")
    for table in ("notifications", "signals", "likes"):
        op.drop_table(table)

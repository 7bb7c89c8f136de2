"""engagement counts: likes per video per region, receipts of applied outbox rows

Revision ID: c0010
Revises: c0009
Create Date: 2026-12-03 14:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "c0010"
down_revision: str | Sequence[str] | None = "c0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Filled by the regions' recounts (`reelm social reconcile`, and hourly by each worker):
    # the likes counted before this revision have no region yet.
    op.create_table(
        "region_likes",
        sa.Column("video_id", sa.UUID(), nullable=False),
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("likes", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["video_id"],
            ["public_videos.id"],
            name=op.f("fk_region_likes_video_id_public_videos"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("video_id", "region", name=op.f("pk_region_likes")),
    )
    op.create_index("ix_region_likes_region", "region_likes", ["region", "video_id"])
    op.create_table(
        "engagement_receipts",
        sa.Column("region", sa.String(16), nullable=False),
        sa.Column("outbox_id", sa.UUID(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("region", "outbox_id", name=op.f("pk_engagement_receipts")),
    )
    op.create_index("ix_engagement_receipts_received", "engagement_receipts", ["received_at"])


def downgrade() -> None:
    op.drop_table("engagement_receipts")
    op.drop_table("region_likes")

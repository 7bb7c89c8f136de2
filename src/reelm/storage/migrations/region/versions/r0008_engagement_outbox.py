"""engagement outbox: counts owed to the catalog, written with the likes and signals they count

Revision ID: r0008
Revises: r0007
Create Date: 2026-12-03 14:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "r0008"
down_revision: str | Sequence[str] | None = "r0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "engagement_outbox",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("video_id", sa.UUID(), nullable=False),
        sa.Column("market", sa.String(2), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("likes", sa.Integer(), server_default="0", nullable=False),
        sa.Column("shares", sa.Integer(), server_default="0", nullable=False),
        sa.Column("views", sa.Integer(), server_default="0", nullable=False),
        sa.Column("score", sa.Float(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_engagement_outbox")),
    )


def downgrade() -> None:
    op.drop_table("engagement_outbox")

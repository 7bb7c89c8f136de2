"""moderation: reports users filed (encrypted), videos removed by moderation

Revision ID: r0007
Revises: r0006
Create Date: 2026-12-01 19:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "r0007"
down_revision: str | Sequence[str] | None = "r0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "filed_reports",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("lookup", sa.LargeBinary(), nullable=False),
        sa.Column("report_ct", sa.LargeBinary(), nullable=False),
        sa.Column("note_ct", sa.LargeBinary(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_filed_reports")),
    )
    op.create_index("ux_filed_reports_lookup", "filed_reports", ["user_id", "lookup"], unique=True)
    # A video removed by a moderator: never public again; the reason code, for its owner.
    op.add_column("videos", sa.Column("removed", sa.String(32), nullable=True))


def downgrade() -> None:
    op.drop_column("videos", "removed")
    op.drop_table("filed_reports")

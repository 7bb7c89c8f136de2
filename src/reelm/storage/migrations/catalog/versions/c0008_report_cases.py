"""moderation queue: report cases (counts per target and reason, no reporters)

Revision ID: c0008
Revises: c0007
Create Date: 2026-12-01 19:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "c0008"
down_revision: str | Sequence[str] | None = "c0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOW = sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "report_cases",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("target", sa.String(16), nullable=False),
        sa.Column("target_id", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(16), server_default="open", nullable=False),
        sa.Column("resolution", sa.String(16), nullable=True),
        sa.Column("first_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), server_default=NOW, nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('open', 'resolved')", name=op.f("ck_report_cases_state")),
        sa.CheckConstraint(
            "target IN ('video', 'comment', 'user')", name=op.f("ck_report_cases_target")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_cases")),
    )
    op.create_index(
        "ux_report_cases_open",
        "report_cases",
        ["target", "target_id", "reason"],
        unique=True,
        postgresql_where=sa.text("state = 'open'"),
    )
    op.create_index(
        "ix_report_cases_queue", "report_cases", ["state", sa.text("count DESC"), "first_at"]
    )


def downgrade() -> None:
    op.drop_table("report_cases")

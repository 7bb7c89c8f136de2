"""inter-cell protocol: outbox, receipts, nonces and counts of each region

Revision ID: r0012
Revises: r0010
Create Date: 2026-12-03 17:30:00

The sender's side: ``intercell_outbox`` (a delivery waiting for its acknowledgement, its body
sealed under the acting user's key) and ``intercell_counts`` (deliveries sent per hour,
destination and kind, logged once the hour is over). The receiver's side:
``intercell_receipts`` (a delivery applied once, acknowledged again when retried) and
``intercell_nonces`` (signatures seen within the freshness window: a replay is refused).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "r0012"
down_revision: str | Sequence[str] | None = "r0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "intercell_outbox",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("to_region", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("acting_for", sa.UUID(), nullable=False),
        sa.Column("body_ct", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("refused_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intercell_outbox")),
    )
    op.create_index("ix_intercell_outbox_acting_for", "intercell_outbox", ["acting_for"])
    op.create_table(
        "intercell_counts",
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("to_region", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("logged", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint(
            "period_start", "to_region", "kind", name=op.f("pk_intercell_counts")
        ),
    )
    op.create_table(
        "intercell_receipts",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("from_region", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("digest", sa.LargeBinary(), nullable=False),
        sa.Column(
            "received_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intercell_receipts")),
    )
    op.create_table(
        "intercell_nonces",
        sa.Column("nonce", sa.String(64), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("nonce", name=op.f("pk_intercell_nonces")),
    )
    op.create_index("ix_intercell_nonces_seen_at", "intercell_nonces", ["seen_at"])


def downgrade() -> None:
    op.drop_table("intercell_nonces")
    op.drop_table("intercell_receipts")
    op.drop_table("intercell_counts")
    op.drop_table("intercell_outbox")

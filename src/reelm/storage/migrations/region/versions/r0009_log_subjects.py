"""log subjects: each account's transparency-log keys; the batch window of queued events, and
their subjects indexed (a user's page lists their waiting events)

Revision ID: r0009
Revises: r0008
Create Date: 2026-12-03 14:30:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "r0009"
down_revision: str | Sequence[str] | None = "r0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Encrypted under the user's data key: it cannot be filled here (no keys in a migration);
    # an existing account gets its log keys with its first logged event.
    op.add_column("accounts", sa.Column("log_keys_ct", sa.LargeBinary(), nullable=True))
    op.add_column(
        "tlog_queue",
        sa.Column(
            "batch_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )
    op.create_index("ix_tlog_queue_subject", "tlog_queue", ["subject"])


def downgrade() -> None:
    op.drop_index("ix_tlog_queue_subject", table_name="tlog_queue")
    op.drop_column("tlog_queue", "batch_at")
    op.drop_column("accounts", "log_keys_ct")

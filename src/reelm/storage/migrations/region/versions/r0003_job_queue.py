"""job queue: procrastinate's tables in each region's database

Revision ID: r0003
Revises: r0002
Create Date: 2026-11-22 23:40:00

"""

from collections.abc import Sequence

from alembic import op

revision: str = "r0003"
down_revision: str | Sequence[str] | None = "r0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The schema of the procrastinate release pinned in pyproject.toml; a later release's own
    # migrations come as later revisions here.
    from reelm.jobs import schema_sql

    op.execute(schema_sql())


def downgrade() -> None:
    raise NotImplementedError("the job queue schema is not removed by a downgrade")

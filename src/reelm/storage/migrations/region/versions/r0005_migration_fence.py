"""region migration fence on accounts

Revision ID: r0005
Revises: r0004
Create Date: 2026-12-01 14:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "r0005"
down_revision: str | Sequence[str] | None = "r0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("migration", sa.String(length=16), nullable=True))
    op.create_check_constraint(
        "migration", "accounts", "migration IN ('incoming', 'frozen', 'moved')"
    )


def downgrade() -> None:
    op.drop_constraint("ck_accounts_migration", "accounts", type_="check")
    op.drop_column("accounts", "migration")

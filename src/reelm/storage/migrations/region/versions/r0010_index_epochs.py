"""region blind-index key epochs: index_epochs, accounts.index_epoch

Revision ID: r0010
Revises: r0009
Create Date: 2026-12-03 14:40:00

Each account's email and phone blind indexes are computed under one epoch's key; the epoch's
row is referenced by the account (ON DELETE RESTRICT), so an epoch is retired only once no row
uses it. A database that already has accounts keeps them under epoch 0, the key derived from
the master key before this revision (``LocalKeyStore.index_key(0)``); an empty one starts with
no epoch (the first sign-up makes epoch 1, a random key of its own).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "r0010"
down_revision: str | Sequence[str] | None = "r0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "index_epochs",
        sa.Column("epoch", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("epoch", name=op.f("pk_index_epochs")),
    )
    op.execute("INSERT INTO index_epochs (epoch) SELECT 0 WHERE EXISTS (SELECT 1 FROM accounts)")
    op.add_column(
        "accounts",
        sa.Column("index_epoch", sa.Integer(), server_default="0", nullable=False),
    )
    op.alter_column("accounts", "index_epoch", server_default=None)
    op.create_foreign_key(
        op.f("fk_accounts_index_epoch_index_epochs"),
        "accounts",
        "index_epochs",
        ["index_epoch"],
        ["epoch"],
        ondelete="RESTRICT",
    )
    op.create_index(op.f("ix_accounts_index_epoch"), "accounts", ["index_epoch"])


def downgrade() -> None:
    op.drop_index(op.f("ix_accounts_index_epoch"), table_name="accounts")
    op.drop_constraint(op.f("fk_accounts_index_epoch_index_epochs"), "accounts", type_="foreignkey")
    op.drop_column("accounts", "index_epoch")
    op.drop_table("index_epochs")

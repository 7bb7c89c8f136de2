"""region migrations: the journal and the market routes they change

Revision ID: c0005
Revises: c0004
Create Date: 2026-12-01 14:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "c0005"
down_revision: str | Sequence[str] | None = "c0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "market_routes",
        sa.Column("market", sa.String(length=2), nullable=False),
        sa.Column("region", sa.String(length=16), nullable=False),
        sa.Column("migration_id", sa.UUID(), nullable=True),
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("market", name=op.f("pk_market_routes")),
    )
    op.create_table(
        "migrations",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("market", sa.String(length=2), nullable=True),
        sa.Column("destination", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("plan", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("report_sha256", sa.LargeBinary(), nullable=True),
        sa.Column("report", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('running', 'done', 'aborted')", name=op.f("ck_migrations_state")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_migrations")),
    )
    op.create_table(
        "migration_users",
        sa.Column("migration_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("blobs", sa.Integer(), nullable=False),
        sa.Column("blob_bytes", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.LargeBinary(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "state IN ('planned', 'copied', 'verified', 'switched', 'purged', 'attested', "
            "'failed')",
            name=op.f("ck_migration_users_state"),
        ),
        sa.PrimaryKeyConstraint("migration_id", "user_id", name=op.f("pk_migration_users")),
    )
    op.create_index(
        "ix_migration_users_state", "migration_users", ["migration_id", "state"], unique=False
    )
    op.create_index("ix_migration_users_user", "migration_users", ["user_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_migration_users_user", table_name="migration_users")
    op.drop_index("ix_migration_users_state", table_name="migration_users")
    op.drop_table("migration_users")
    op.drop_table("migrations")
    op.drop_table("market_routes")

"""handle skeletons: the look-alike key folds separators and digits; handles unique as written

Revision ID: c0013
Revises: c0010
Create Date: 2026-12-03 15:00:00

The key (``profiles.handle_key``) was a small skeleton (0/o, 1/l, rn/m, vv/w) and let
``maya_skates``, ``mayaskates`` and ``maya.5kates`` sit beside ``maya.skates``. It becomes
``reelm.accounts.handles.handle_key`` (ICU's TR39 skeleton, digits read as letters, separators
dropped), up to 48 characters, recomputed here for every profile.

Existing handles that now share a key are not renamed (their links, mentions and log-ins keep
working): the oldest account keeps the key, and each later one keeps its handle with a NULL
key, found by its exact handle (now unique by itself). No new account can take a key that is
held. Reserved names already taken stay with their accounts; docs/architecture.md says how an
operator lists both kinds.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "c0013"
down_revision: str | Sequence[str] | None = "c0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 1000


def _old_key(handle: str) -> str:
    """The key before this revision (kept here as it was, for the downgrade)."""
    key = handle.translate(str.maketrans("01", "ol"))
    for seq, replacement in (("rn", "m"), ("vv", "w")):
        key = key.replace(seq, replacement)
    return key


def _rekey(keys: dict[object, str | None]) -> None:
    bind = op.get_bind()
    rows = [{"u": user_id, "k": key} for user_id, key in keys.items()]
    for start in range(0, len(rows), BATCH):
        bind.execute(
            sa.text("UPDATE profiles SET handle_key = :k WHERE user_id = :u"),
            rows[start : start + BATCH],
        )


def upgrade() -> None:
    from reelm.accounts.handles import handle_key

    # The key's values change under a unique constraint: drop it while they do.
    op.drop_constraint("uq_profiles_handle_key", "profiles", type_="unique")
    op.alter_column(
        "profiles",
        "handle_key",
        type_=sa.String(length=48),
        existing_type=sa.String(length=24),
        nullable=True,
    )
    bind = op.get_bind()
    held: set[str] = set()
    keys: dict[object, str | None] = {}
    for user_id, handle in bind.execute(
        sa.text("SELECT user_id, handle FROM profiles ORDER BY created_at, user_id")
    ).all():
        key = handle_key(handle)
        keys[user_id] = None if key in held else key
        held.add(key)
    _rekey(keys)
    op.create_unique_constraint("uq_profiles_handle_key", "profiles", ["handle_key"])
    op.create_unique_constraint("uq_profiles_handle", "profiles", ["handle"])


def downgrade() -> None:
    op.drop_constraint("uq_profiles_handle", "profiles", type_="unique")
    op.drop_constraint("uq_profiles_handle_key", "profiles", type_="unique")
    bind = op.get_bind()
    _rekey(
        {
            user_id: _old_key(handle)
            for user_id, handle in bind.execute(sa.text("SELECT user_id, handle FROM profiles"))
        }
    )
    op.alter_column(
        "profiles",
        "handle_key",
        type_=sa.String(length=24),
        existing_type=sa.String(length=48),
        nullable=False,
    )
    op.create_unique_constraint("uq_profiles_handle_key", "profiles", ["handle_key"])

"""Alembic environment of the catalog database. The connection comes from reelm.storage.migrate."""

from alembic import context

from reelm.storage.migrate import target_metadata

connection = context.config.attributes["connection"]


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    # procrastinate's tables are created from its own schema (revision r0003), not our models.
    return not (name or "").startswith("procrastinate")


context.configure(
    connection=connection,
    target_metadata=target_metadata("catalog"),
    include_object=include_object,
)
with context.begin_transaction():
    context.run_migrations()

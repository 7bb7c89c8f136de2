"""Alembic environment of the catalog database. The connection comes from reelm.storage.migrate."""

from alembic import context

from reelm.storage.migrate import target_metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=target_metadata("catalog"))
with context.begin_transaction():
    context.run_migrations()

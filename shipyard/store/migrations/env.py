"""Alembic environment: Shipyard runs migrations itself, on a connection it passes in."""

from alembic import context

from shipyard.store._schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only the `alembic` command line reaches here
    raise SystemExit("run migrations with `shipyard migrate` (or Store.migrate()), not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()

"""Alembic environment: runs migrations on the connection `warden.store.migrate` hands over."""

from __future__ import annotations

from alembic import context

from warden.store.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only the programmatic path is supported
    raise RuntimeError("run migrations through `warden.store.migrate.upgrade`")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()

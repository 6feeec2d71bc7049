"""Durable state: the schema, the database engines, migrations and repositories."""

from warden.store.database import Database
from warden.store.migrate import current_revision, head_revision, upgrade

__all__ = ["Database", "current_revision", "head_revision", "upgrade"]

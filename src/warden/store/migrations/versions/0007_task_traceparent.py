"""Tasks remember the W3C trace context of the request that submitted them, so the worker's
spans continue the API's trace.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column without a default: a metadata-only change on PostgreSQL and SQLite.
    op.add_column("tasks", sa.Column("traceparent", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("traceparent")

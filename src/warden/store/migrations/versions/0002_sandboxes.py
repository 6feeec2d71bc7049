"""Sandboxes and their snapshots.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "sandboxes",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id")),
        sa.Column("session_id", sa.String(40)),
        sa.Column("template", sa.String(64), nullable=False),
        sa.Column("backend", sa.String(32), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("workspace", sa.Text, nullable=False),
        sa.Column("image_path", sa.Text),
        sa.Column("metadata", Json, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("last_used_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float),
    )
    op.create_index("ix_sandboxes_tenant_id", "sandboxes", ["tenant_id"])
    op.create_index("ix_sandboxes_template_state", "sandboxes", ["template", "state"])
    op.create_index("ix_sandboxes_session_id", "sandboxes", ["session_id"])
    op.create_table(
        "snapshots",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("sandbox_id", sa.String(40), nullable=False),
        sa.Column("tenant_id", sa.String(40), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("template", sa.String(64), nullable=False),
        sa.Column("image_path", sa.Text, nullable=False),
        sa.Column("workspace_copy", sa.Text, nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_snapshots_tenant_id", "snapshots", ["tenant_id"])


def downgrade() -> None:
    op.drop_table("snapshots")
    op.drop_table("sandboxes")

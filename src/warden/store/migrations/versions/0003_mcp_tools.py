"""MCP servers' negotiated eras and their tools' pins.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "mcp_servers",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("era", sa.String(16)),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "mcp_tools",
        sa.Column("server", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("definition", Json, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("flags", Json, nullable=False),
        sa.Column("approved_definition", Json),
        sa.Column("approved_sha256", sa.String(64)),
        sa.Column("approved_by", sa.String(200)),
        sa.Column("approved_at", sa.Float),
        sa.Column("first_seen_at", sa.Float, nullable=False),
        sa.Column("last_seen_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("mcp_tools")
    op.drop_table("mcp_servers")

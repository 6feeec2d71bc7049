"""Human approvals of tool calls a policy answered `ask`.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False),
        sa.Column("task_id", sa.String(40), sa.ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
        sa.Column("session_id", sa.String(40)),
        sa.Column("agent_name", sa.String(64), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("call_key", sa.String(64), nullable=False),
        sa.Column("call_id", sa.String(200), nullable=False),
        sa.Column("tool", sa.String(255), nullable=False),
        sa.Column("arguments", Json, nullable=False),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("default_decision", sa.String(16), nullable=False),
        sa.Column("decision_reason", sa.Text),
        sa.Column("edited_arguments", Json),
        sa.Column("decided_by", sa.String(200)),
        sa.Column("decided_at", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float),
        sa.UniqueConstraint("task_id", "call_key", name="uq_approvals_task_call"),
    )
    op.create_index("ix_approvals_tenant_status", "approvals", ["tenant_id", "status", "created_at"])
    op.create_index("ix_approvals_pending_expiry", "approvals", ["status", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_approvals_pending_expiry", table_name="approvals")
    op.drop_index("ix_approvals_tenant_status", table_name="approvals")
    op.drop_table("approvals")

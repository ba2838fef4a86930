"""Initial schema: studies and trials (as first shipped, created by ``create_all``).

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "studies",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("error", sa.Text),
        sa.Column("result", sa.JSON),
        sa.Column("dashboard_url", sa.String(500)),
        sa.Column("driver_pid", sa.Integer),
        sa.Column("idempotency_key", sa.String(200), unique=True),
    )
    op.create_index("ix_studies_status", "studies", ["status"])
    op.create_table(
        "trials",
        sa.Column("study_id", sa.String(36), sa.ForeignKey("studies.id"), primary_key=True),
        sa.Column("trial_id", sa.String(64), primary_key=True),
        sa.Column("budget_steps", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("error", sa.Text),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("trials")
    op.drop_index("ix_studies_status", "studies")
    op.drop_table("studies")

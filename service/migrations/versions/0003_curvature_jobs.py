"""Curvature jobs: Hessian-spectrum estimates requested on their own (POST /v1/curvature).

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "phitune_curvature_jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("error", sa.Text),
        sa.Column("report", sa.JSON),
        sa.Column("suggestions", sa.JSON),
        sa.Column("timeline", sa.JSON),
        sa.Column("driver_pid", sa.Integer),
    )


def downgrade() -> None:
    op.drop_table("phitune_curvature_jobs")

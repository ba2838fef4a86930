"""Recommendation jobs: a ``POST /v1/recommendations`` that has to measure curvature is queued
and run by its own driver (the lifecycle columns of studies and curvature jobs).

Revision ID: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "phitune_recommendation_jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("error", sa.Text),
        sa.Column("result", sa.JSON),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("driver_pid", sa.Integer),
        sa.Column("driver_start", sa.String(64)),
        sa.Column("driver_job_id", sa.String(200)),
        sa.Column("launches", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_table("phitune_recommendation_jobs")

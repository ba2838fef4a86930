"""Queue and driver identity: the driver's process start time beside its pid (a reused pid is
not taken for the driver), and the study lifecycle columns on curvature jobs (queue claim time,
launches for the relaunch cap, Ray Job id).

Revision ID: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("phitune_studies") as batch:
        batch.add_column(sa.Column("driver_start", sa.String(64)))
    with op.batch_alter_table("phitune_curvature_jobs") as batch:
        batch.add_column(sa.Column("started_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("driver_start", sa.String(64)))
        batch.add_column(sa.Column("driver_job_id", sa.String(200)))
        batch.add_column(sa.Column("launches", sa.Integer, nullable=False,
                                   server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("phitune_curvature_jobs") as batch:
        for name in ("launches", "driver_job_id", "driver_start", "started_at"):
            batch.drop_column(name)
    with op.batch_alter_table("phitune_studies") as batch:
        batch.drop_column("driver_start")

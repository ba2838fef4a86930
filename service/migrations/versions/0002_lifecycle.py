"""Lifecycle columns: driver launches (relaunch cap), Ray Job id, trial node, list index.

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("launches", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("driver_job_id", sa.String(200)))
    op.create_index("ix_studies_created_at", "studies", ["created_at"])
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("node_ip", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("node_ip")
    op.drop_index("ix_studies_created_at", "studies")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("driver_job_id")
        batch.drop_column("launches")

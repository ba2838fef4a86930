"""Library mode: a library study's last sign of life (its process's heartbeat or trial record),
so the server can fail a study whose process died (``kill -9``, a lost machine) instead of
showing it ``running`` forever.

Revision ID: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("phitune_studies", sa.Column("heartbeat_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    with op.batch_alter_table("phitune_studies") as batch:
        batch.drop_column("heartbeat_at")

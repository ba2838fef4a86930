"""Per-update gradient norms of finished trials (refinement's input, Defazio et al. 2023),
in their own table so the trial reads never load them.

Revision ID: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "phitune_trial_grad_norms",
        sa.Column("study_id", sa.String(36), sa.ForeignKey("phitune_studies.id"),
                  primary_key=True),
        sa.Column("trial_id", sa.String(64), primary_key=True),
        sa.Column("norm", sa.String(2), nullable=False),
        sa.Column("total_steps", sa.Integer, nullable=False),
        sa.Column("stride", sa.Integer, nullable=False),
        sa.Column("values", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("phitune_trial_grad_norms")

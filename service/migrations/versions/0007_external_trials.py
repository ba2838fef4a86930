"""Agent mode: external trials (offered by a study's proxy trials, trained by agents) and
the leases agents claim them with.

Revision ID: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "phitune_external_trials",
        sa.Column("study_id", sa.String(36), sa.ForeignKey("phitune_studies.id"),
                  primary_key=True),
        sa.Column("trial_id", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("lease_id", sa.String(64)),
        sa.Column("lease_holder", sa.String(300)),
        sa.Column("expires_at", sa.DateTime(timezone=True)),
        sa.Column("metrics", sa.JSON),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_phitune_external_trials_claim", "phitune_external_trials",
                    ["study_id", "status", "created_at"])
    op.create_table(
        "phitune_leases",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("study_id", sa.String(36), nullable=False, index=True),
        sa.Column("trial_id", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(300), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("phitune_leases")
    op.drop_index("ix_phitune_external_trials_claim", table_name="phitune_external_trials")
    op.drop_table("phitune_external_trials")

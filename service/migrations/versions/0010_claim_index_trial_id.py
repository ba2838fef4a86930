"""Agent mode: the claim index gains ``trial_id``, the claim's tie-break, so the claim's seeks
(the oldest ``pending`` trial of a study, else the oldest expired ``leased`` one) read the
index in claim order with no sort (``service.store.external``).

Revision ID: 0010
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TABLE = "phitune_external_trials"
INDEX = "ix_phitune_external_trials_claim"


def upgrade() -> None:
    op.drop_index(INDEX, table_name=TABLE)
    op.create_index(INDEX, TABLE, ["study_id", "status", "created_at", "trial_id"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name=TABLE)
    op.create_index(INDEX, TABLE, ["study_id", "status", "created_at"])

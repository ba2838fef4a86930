"""Prefix phitune's tables: ``studies``/``trials`` → ``phitune_studies``/``phitune_trials``.

Optuna's RDB storage has tables named ``studies`` and ``trials`` too; keeping Optuna's search
state in the same database (so a killed driver resumes the searcher and ``optuna-dashboard
<db-url>`` opens it) needs distinct names.

Revision ID: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = {ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes("studies")}
    for name in ("ix_studies_status", "ix_studies_created_at"):
        if name in existing:
            op.drop_index(name, "studies")
    op.rename_table("studies", "phitune_studies")
    # the trials → studies foreign key follows the rename (PostgreSQL by OID, SQLite ≥ 3.26
    # rewrites references); tests/service/test_store.py checks it on both
    op.rename_table("trials", "phitune_trials")
    op.create_index("ix_phitune_studies_status", "phitune_studies", ["status"])
    op.create_index("ix_phitune_studies_created_at", "phitune_studies", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_phitune_studies_created_at", "phitune_studies")
    op.drop_index("ix_phitune_studies_status", "phitune_studies")
    op.rename_table("phitune_trials", "trials")
    op.rename_table("phitune_studies", "studies")
    op.create_index("ix_studies_status", "studies", ["status"])
    op.create_index("ix_studies_created_at", "studies", ["created_at"])

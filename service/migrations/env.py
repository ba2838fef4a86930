"""Alembic environment for phitune's own tables (run programmatically by ``service.store``).

The version lives in ``phitune_alembic_version``, not Alembic's default ``alembic_version``:
Optuna's RDB storage keeps *its* Alembic version in ``alembic_version`` of the same database
(we put Optuna studies next to ours so ``optuna-dashboard <db-url>`` shows them).
"""

from __future__ import annotations

from alembic import context

from service.store import VERSION_TABLE, Base

# the caller (service.store.upgrade_schema) holds the migration lock on this connection
connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()

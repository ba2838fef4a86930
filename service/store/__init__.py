"""The store: studies, trials and curvature jobs in one SQL database (SQLite or PostgreSQL).

``db`` holds the tables, the :class:`Store` facade and schema migration; ``curvature_jobs``
the second kind of job; ``history`` reads finished studies back as φ-recommendation data.
The API owns migrations (``Store.open`` upgrades); drivers only read and write rows.
"""

from service.store.db import (
    LIBRARY_TRAINER,
    MIGRATIONS,
    VERSION_TABLE,
    Base,
    QueueFullError,
    QueueLimit,
    Store,
    StudyRow,
    TrialRow,
    TrialSummary,
    head_revision,
    is_library_study,
    schema_revision,
    upgrade_schema,
    utcnow,
)

__all__ = [
    "LIBRARY_TRAINER", "MIGRATIONS", "VERSION_TABLE", "Base", "QueueFullError", "QueueLimit", "Store", "StudyRow", "TrialRow", "TrialSummary",
    "head_revision", "is_library_study", "schema_revision", "upgrade_schema", "utcnow",
]

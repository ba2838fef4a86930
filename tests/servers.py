"""Real servers the tests share: a phitune API (``phitune serve``, uvicorn, from the project's
venv) whose SQLite store holds one study that ended before it ran. No study runs, so no Ray
starts; a test reads the study through the client, the CLI or an installed wheel."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def api_with_one_cancelled_study(data_dir: Path, spec: dict[str, Any],
                                 name: str) -> Iterator[tuple[str, str]]:
    """Serve ``data_dir``'s store with one ``cancelled`` study of ``spec``; yield the API's
    URL and the study's id, stop the server after."""
    from service.cli.demo import _stop, start_api
    from service.schemas import StudyCreate
    from service.store import Store

    db_url = f"sqlite:///{data_dir / 'phitune.db'}"
    store = Store(db_url)
    row, _ = store.create_study(StudyCreate.model_validate(spec).model_dump(mode="json"), name)
    store.finish_study(row.id, "cancelled", error="cancelled before it ran")
    proc, url = start_api(data_dir, None, data_dir / "api.log",
                          extra_env={"PHITUNE_DATABASE_URL": db_url,
                                     "PHITUNE_LOCAL_RAY": "per-study"})
    try:
        yield url, row.id
    finally:
        _stop(proc)

"""Real servers the tests share.

* :func:`api_with_one_cancelled_study`: a phitune API (``phitune serve``, uvicorn, from the
  project's venv) whose SQLite store holds one study that ended before it ran. No study runs,
  so no Ray starts; a test reads the study through the client, the CLI or an installed wheel.
* :func:`app_with_the_only_slot_held`: the in-process app (TestClient) whose only study slot is
  held by a running study whose "driver" is a ``sleep`` process, so new studies stay queued
  and a test can watch the queue or run a driver itself.
"""

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


@contextmanager
def app_with_the_only_slot_held(settings: Any, spec: dict[str, Any]
                                ) -> Iterator[tuple[Any, Any, str]]:
    """Yield ``(TestClient, Store, id of the running study)`` for ``settings`` (which should
    say ``max_concurrent_studies=1``); the ``sleep`` driver holding the slot is killed after."""
    import subprocess

    from fastapi.testclient import TestClient

    from service.api.main import create_app
    from service.launch.runner import process_start
    from service.store import Store

    blocker = subprocess.Popen(["sleep", "300"], start_new_session=True)
    store = Store(settings.sqlalchemy_url)
    row, _ = store.create_study(spec, "holds the only slot")
    store.update_study(row.id, status="running")
    store.record_launch(row.id, pid=blocker.pid, driver_start=process_start(blocker.pid))
    try:
        with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
            yield client, store, row.id
    finally:
        blocker.kill()
        blocker.wait()

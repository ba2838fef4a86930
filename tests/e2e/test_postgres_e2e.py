"""A real study with PostgreSQL as the store: the API migrates the schema, the driver process
writes progress and the result over psycopg, the API serves them (real server, driver, Ray)."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from service.cli.demo import _stop, start_api
from service.client import PhiTuneClient
from service.store import Store, head_revision, schema_revision
from tests.service.pg import fresh_database, throwaway_postgres

pytestmark = pytest.mark.e2e

SPEC = {
    "model": "mlp", "dataset": "digits",
    "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.9}, "batch_size": 64,
    "budget": {"steps": 60}, "num_trials": 2, "max_concurrent_trials": 2,
    "search": {"phi": {"min": 0.5, "max": 20.0}, "phases": {"min": 1, "max": 1}},
    "eval_every": 20, "early_stopping": False, "seed": 7,
}


@pytest.fixture(scope="module")
def database_url():
    url = os.environ.get("PHITUNE_TEST_POSTGRES_URL")
    if url:
        yield fresh_database(url)
        return
    with throwaway_postgres() as server:
        yield fresh_database(server)


def test_study_on_postgres(database_url, tmp_path):
    env = {"PHITUNE_DATABASE_URL": database_url, "PHITUNE_RAY_NUM_CPUS": "2",
           "PHITUNE_RAY_DASHBOARD": "false", "PHITUNE_RECONCILE_INTERVAL_S": "0",
           "PHITUNE_DATASET_DIR": os.environ.get("PHITUNE_DATASET_DIR", str(tmp_path / "data"))}
    proc, url = start_api(tmp_path, None, tmp_path / "api.log", extra_env=env)
    try:
        with PhiTuneClient(url) as client:
            study = client.submit(SPEC, idempotency_key="pg-e2e")
            final = client.wait(study.id, timeout=400, poll=1.0)
            log = tmp_path / "logs" / f"{study.id}.log"
            assert final.status == "succeeded", (final.error, log.read_text()[-3000:])
            trials = client.trials(study.id).data
            best = client.best(study.id)
    finally:
        _stop(proc)
    assert not (tmp_path / "phitune.db").exists(), "nothing went to the SQLite default"
    store = Store(database_url, migrate=False)
    assert schema_revision(store.engine) == head_revision()
    assert sa.inspect(store.engine).get_table_names()  # the tables live in PostgreSQL
    row = store.get_study(study.id)
    assert row.status == "succeeded" and row.result["best"]["phi"] == best.phi
    assert len(trials) == 2 and {t.trial_id for t in store.list_trials(study.id)} == {
        t.trial_id for t in trials}
    assert all(t.node_ip for t in store.list_trials(study.id)), "Tune reports each node"

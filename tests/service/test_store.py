"""The store on SQLite (default) and on a real PostgreSQL server, with its versioned schema."""

from __future__ import annotations

import pickle
import threading

import pytest
import sqlalchemy as sa

from service.store import VERSION_TABLE, Store, head_revision, schema_revision

HEAD = head_revision()


def test_migrations_form_one_ordered_chain():
    from alembic.script import ScriptDirectory

    from service.store import MIGRATIONS

    script = ScriptDirectory(str(MIGRATIONS))
    assert len(script.get_heads()) == 1, "two migrations branch from the same parent"
    revisions = [r.revision for r in script.walk_revisions("base", "heads")][::-1]
    assert revisions[:2] == ["0001", "0002"] and revisions[-1] == HEAD


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'phitune.db'}"
    return request.getfixturevalue("postgres_url")


def test_the_migrations_build_the_schema_the_orm_declares(url):
    """The migrated database has every table, column and index of the ORM models and no
    other (alembic's autogenerate comparison finds nothing to add or drop), so a model change
    without its migration, or a migration the models do not know, fails here."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import service.store.curvature_jobs  # noqa: F401 - every model module registers its table
    import service.store.external  # noqa: F401
    import service.store.grad_norms  # noqa: F401
    import service.store.recommendation_jobs  # noqa: F401
    from service.store.db import Base

    store = Store(url)
    with store.engine.connect() as conn:
        diffs = [d for d in compare_metadata(MigrationContext.configure(conn), Base.metadata)
                 if not (d[0] == "remove_table" and d[1].name == VERSION_TABLE)]
    store.engine.dispose()
    assert not diffs, diffs


def test_study_lifecycle(url):
    store = Store(url)
    assert schema_revision(store.engine) == HEAD
    row, created = store.create_study({"model": "mlp"}, "a", idempotency_key="k1")
    again, created2 = store.create_study({"model": "other"}, "b", idempotency_key="k1")
    assert created and not created2 and again.id == row.id
    assert store.find_by_idempotency_key("k1").id == row.id
    assert store.find_by_idempotency_key("nope") is None
    assert store.get_study(row.id).created_at.tzinfo is not None

    assert store.record_launch(row.id, pid=123) == 1
    assert store.record_launch(row.id, job_id="raysubmit_x") == 2
    got = store.get_study(row.id)
    assert (got.driver_pid, got.driver_job_id, got.launches) == (None, "raysubmit_x", 2)
    assert store.count_active() == 1

    # a cancel wins over a driver that reports success a moment later
    assert store.finish_study(row.id, "cancelled", error="cancelled by user")
    assert not store.finish_study(row.id, "succeeded", result={"x": 1})
    got = store.get_study(row.id)
    assert got.status == "cancelled" and got.result is None and got.finished_at is not None
    assert store.count_active() == 0


def test_list_filters_and_pagination(url):
    store = Store(url)
    ids = [store.create_study({"i": i}, f"s{i}")[0].id for i in range(5)]
    store.finish_study(ids[0], "failed", error="x")
    rows, total = store.list_studies(limit=2)
    assert total == 5 and [r.id for r in rows] == ids[::-1][:2]  # newest first
    rows, total = store.list_studies(limit=2, offset=4)
    assert total == 5 and [r.id for r in rows] == [ids[0]]
    rows, total = store.list_studies(status="failed")
    assert total == 1 and rows[0].id == ids[0]


def test_trials_upsert_filter_and_node(url):
    store = Store(url)
    sid = store.create_study({}, None)[0].id
    for i, (budget, status) in enumerate([(50, "terminated"), (50, "error"), (100, "running")]):
        store.upsert_trial(sid, f"t{i}", budget_steps=budget, status=status, params={"phi": i},
                           step=10 * i, metrics={"val_accuracy": 0.5}, value=0.5,
                           node_ip=f"10.0.0.{i}", error="boom" if status == "error" else None)
    store.upsert_trial(sid, "t2", status="terminated", step=100)
    assert store.count_trials(sid) == 3
    assert [t.trial_id for t in store.list_trials(sid, budget_steps=50)] == ["t0", "t1"]
    assert [t.trial_id for t in store.list_trials(sid, status="terminated")] == ["t0", "t2"]
    assert [t.trial_id for t in store.list_trials(sid, limit=1, offset=1)] == ["t1"]
    t2 = store.list_trials(sid, budget_steps=100)[0]
    assert (t2.status, t2.step, t2.node_ip, t2.params) == ("terminated", 100, "10.0.0.2",
                                                           {"phi": 2})
    assert store.list_trials(sid, status="error")[0].error == "boom"


def test_a_terminated_trial_row_is_final(url):
    # a relaunched driver whose Tune snapshot predates a trial's finish resumes it from its
    # final checkpoint: it reports running, then evaluates again without train metrics
    store = Store(url)
    sid = store.create_study({}, None)[0].id
    store.upsert_trial(sid, "t", budget_steps=50, status="running", step=10, params={},
                       metrics={})
    store.upsert_trial(sid, "t", status="terminated", step=50,
                       metrics={"val_accuracy": 0.9, "train_loss": 0.3})
    (done,) = store.list_trials(sid)
    store.upsert_trial(sid, "t", status="running", step=50)
    store.upsert_trial(sid, "t", status="terminated", step=50, metrics={"val_accuracy": 0.9})
    (after,) = store.list_trials(sid)
    assert (after.status, after.metrics, after.updated_at) == (
        "terminated", {"val_accuracy": 0.9, "train_loss": 0.3}, done.updated_at)
    # an errored trial is not final: a restored retry runs and finishes it
    store.upsert_trial(sid, "e", budget_steps=50, status="error", error="lost",
                       params={}, metrics={})
    store.upsert_trial(sid, "e", status="running", step=20)
    assert store.list_trials(sid, status="running")[0].trial_id == "e"


def test_store_pickles_as_its_url_without_migrating(url):
    store = Store(url)
    clone = pickle.loads(pickle.dumps(store))
    assert clone.url == url
    clone.ping()


def test_legacy_database_is_stamped_and_upgraded(url):
    """A database created by the first release (``create_all``, no version table) keeps its
    rows and gains the new columns."""
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    sa.Table("studies", meta, sa.Column("id", sa.String(36), primary_key=True),
             sa.Column("name", sa.String(200)),
             sa.Column("status", sa.String(16), index=True),
             sa.Column("spec", sa.JSON), sa.Column("created_at", sa.DateTime(timezone=True)),
             sa.Column("started_at", sa.DateTime(timezone=True)),
             sa.Column("finished_at", sa.DateTime(timezone=True)), sa.Column("error", sa.Text),
             sa.Column("result", sa.JSON), sa.Column("dashboard_url", sa.String(500)),
             sa.Column("driver_pid", sa.Integer),
             sa.Column("idempotency_key", sa.String(200), unique=True))
    sa.Table("trials", meta, sa.Column("study_id", sa.String(36), sa.ForeignKey("studies.id"),
                                       primary_key=True),
             sa.Column("trial_id", sa.String(64), primary_key=True),
             sa.Column("budget_steps", sa.Integer), sa.Column("status", sa.String(16)),
             sa.Column("params", sa.JSON), sa.Column("step", sa.Integer),
             sa.Column("metrics", sa.JSON), sa.Column("value", sa.Float),
             sa.Column("error", sa.Text), sa.Column("updated_at", sa.DateTime(timezone=True)))
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO studies (id, status, spec, created_at) VALUES "
                             "('old', 'succeeded', '{}', '2025-01-01 00:00:00')"))
    engine.dispose()

    store = Store(url)
    assert schema_revision(store.engine) == HEAD
    old = store.get_study("old")
    assert old.status == "succeeded" and old.launches == 0
    inspector = sa.inspect(store.engine)
    assert "node_ip" in {c["name"] for c in inspector.get_columns("phitune_trials")}
    assert {"phitune_studies", "phitune_trials", VERSION_TABLE} <= set(
        inspector.get_table_names())
    assert not {"studies", "trials"} & set(inspector.get_table_names())
    fks = inspector.get_foreign_keys("phitune_trials")
    assert [fk["referred_table"] for fk in fks] == ["phitune_studies"]


def test_optuna_search_state_lives_in_the_same_database(url):
    """OptunaSearch with ``RDBStorage(<store url>)``: Optuna's tables (``studies``, ``trials``,
    ``alembic_version``) sit next to phitune's, both schemas at their heads, and the searcher's
    history survives a new process (a restarted driver) under ``<study id>-<budget>``."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    store = Store(url)
    sid = store.create_study({"model": "mlp"}, "with optuna")[0].id
    space = {"phi": optuna.distributions.FloatDistribution(0.1, 10, log=True)}
    search = OptunaSearch(space=space, metric="val_accuracy", mode="max",
                          storage=optuna.storages.RDBStorage(url), study_name=f"{sid}-120",
                          sampler=optuna.samplers.TPESampler(seed=0))
    for i in range(3):
        config = search.suggest(f"t{i}")
        search.on_trial_complete(f"t{i}", {"val_accuracy": 0.5 + i / 10, **config})

    # what optuna-dashboard <url> reads
    assert f"{sid}-120" in optuna.get_all_study_names(url)
    study = optuna.load_study(study_name=f"{sid}-120", storage=url)
    assert [round(t.value, 6) for t in study.trials] == [0.5, 0.6, 0.7]
    tables = set(sa.inspect(store.engine).get_table_names())
    assert {"studies", "trials", "alembic_version", "phitune_studies", VERSION_TABLE} <= tables
    # phitune's rows and schema are untouched; a restart neither re-stamps nor fails
    assert Store(url).get_study(sid).name == "with optuna"
    assert schema_revision(store.engine) == HEAD


def test_concurrent_startups_migrate_once(url):
    """API replicas starting together: both end at head, neither fails."""
    errors: list[BaseException] = []

    def start() -> None:
        try:
            Store(url).ping()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert schema_revision(Store(url).engine) == HEAD


def test_idempotency_key_race_creates_one_study(url):
    """Concurrent POSTs with the same new key: one study, every caller gets it."""
    store = Store(url)
    results: list[tuple[str, bool]] = []
    barrier = threading.Barrier(6)

    def submit() -> None:
        barrier.wait()
        row, created = store.create_study({"model": "mlp"}, "race", idempotency_key="same")
        results.append((row.id, created))

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6
    assert len({r[0] for r in results}) == 1 and sum(r[1] for r in results) == 1
    assert store.list_studies()[1] == 1


def test_queue_claims_respect_the_cap_under_concurrency(url):
    """Two "API replicas" (two Store objects) and several threads each claim at once: exactly
    ``cap`` jobs run, the oldest ones, and the rest stay queued in order."""
    from service.store import StudyRow

    stores = [Store(url), Store(url, migrate=False)]
    ids = [stores[0].create_study({"i": i}, f"q{i}")[0].id for i in range(8)]
    claimed: list[str] = []
    barrier = threading.Barrier(8)

    def claim(store: Store) -> None:
        barrier.wait()
        while (job := store.claim_next(StudyRow, 3)) is not None:
            claimed.append(job)

    threads = [threading.Thread(target=claim, args=(stores[i % 2],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids[:3]), "the three oldest, each claimed once"
    assert stores[0].count_status(StudyRow, "running") == 3
    assert [r.id for r in stores[0].rows_with_status(StudyRow, "queued")] == ids[3:]
    assert all(stores[0].get_study(i).started_at is not None for i in ids[:3])

    # a slot frees: the next in submission order starts, and only one
    assert stores[1].finish_study(ids[0], "succeeded")
    assert stores[1].claim_next(StudyRow, 3) == ids[3]
    assert stores[0].claim_next(StudyRow, 3) is None


def test_cancel_races_and_trial_finalisation(url):
    """A driver cannot mark a cancelled study running; unfinished trials get their final
    status, finished ones keep theirs; reconcile finds studies that ended with running trials."""
    from service.store import StudyRow

    store = Store(url)
    sid = store.create_study({"model": "mlp"}, "c")[0].id
    assert store.claim_next(StudyRow, 1) == sid
    for trial, status in (("a", "terminated"), ("b", "running"), ("c", "pending")):
        store.upsert_trial(sid, trial, budget_steps=10, status=status, params={}, step=1,
                           metrics={})
    assert store.finish_study(sid, "cancelled", error="cancelled by user")
    assert not store.mark_running(StudyRow, sid)
    assert store.studies_with_unfinished_trials(("cancelled",)) == [sid]
    assert store.finalize_trials(sid, "cancelled", "study cancelled") == 2
    assert {t.trial_id: t.status for t in store.list_trials(sid)} == {
        "a": "terminated", "b": "cancelled", "c": "cancelled"}
    assert store.studies_with_unfinished_trials(("cancelled",)) == []
    assert store.get_study(sid).status == "cancelled"

"""The search engine's Optuna side, without Ray: seeded proposals, the grid preset, BOHB's model
rung, and truthful tells (COMPLETE only for a run that reached its horizon)."""

from __future__ import annotations

import optuna
import pytest

from trainables.config import TrainConfig
from tuning.executor import candidate_config
from tuning.ladder import Candidate, Outcome
from tuning.proposer import (
    ask_rung,
    derive_seed,
    grid_points,
    model_trials,
    open_rung_study,
    optuna_space,
    propose,
    tell_rung,
)
from tuning.specs import SearchSpace, StudySpec

optuna.logging.set_verbosity(optuna.logging.WARNING)


def spec(**kw) -> StudySpec:
    base = dict(study_id="s", total_steps=90, num_trials=8,
                train=TrainConfig(model="mlp", dataset="digits", lr=0.2, eval_every=10),
                search=SearchSpace(phi_min=0.1, phi_max=20, phases_min=1, phases_max=2))
    return StudySpec(**{**base, **kw})


def outcome(c: Candidate, steps: int, value, status="terminated", trained=None) -> Outcome:
    return Outcome(candidate=c, steps=steps, seed=0, trained_steps=steps if trained is None
                   else trained, value=value if status == "terminated" else None,
                   last_value=value, status=status)


def test_proposals_are_seeded_and_start_with_the_paper_default():
    s = spec()
    a = propose(s, 0, 6, (), [{"phi": 5.0, "phases": 1}])
    assert a == propose(s, 0, 6, (), [{"phi": 5.0, "phases": 1}])
    assert a[0] == {"phi": 5.0, "phases": 1} and len({round(p["phi"], 9) for p in a}) == 6
    assert a != propose(s, 1, 6, (), [{"phi": 5.0, "phases": 1}])  # per-iteration seed
    assert derive_seed(0, "finalist", 0) == derive_seed(0, "finalist", 0) != derive_seed(1, "x")


@pytest.mark.parametrize("sampler", ["tpe", "gp", "random"])
def test_a_batch_from_a_fitted_model_spreads_out(sampler):
    s = spec(search=SearchSpace(phi_min=0.1, phi_max=20, phases_min=1, phases_max=1,
                                sampler=sampler))
    study = open_rung_study(s, 90)
    for i, phi in enumerate([0.2, 0.5, 1.0, 3.0, 8.0]):
        study.enqueue_trial({"phi": phi, "phases": 1}, user_attrs={"iteration": 0})
        t = study.ask({"phi": optuna.distributions.FloatDistribution(0.1, 20, log=True),
                       "phases": optuna.distributions.IntDistribution(1, 1)})
        study.tell(t, 0.9 - 0.01 * i)
    batch = propose(s, 1, 4, model_trials({90: study}, 1))
    assert len({round(p["phi"], 9) for p in batch}) == 4
    assert batch == propose(s, 1, 4, model_trials({90: study}, 1))


def test_grid_preset_is_the_papers_grid_clipped_and_not_repeated():
    s = spec(search=SearchSpace(phi_min=0.3, phi_max=6, sampler="grid"))
    assert [p["phi"] for p in grid_points(s)] == [0.3, 0.5, 1.0, 2.5, 5.0, 6.0]
    first = propose(s, 0, 3, ())
    second = propose(s, 1, 3, (), skip=first)
    assert [p["phi"] for p in first + second] == [0.3, 0.5, 1.0, 2.5, 5.0, 6.0]


def test_the_model_is_the_highest_rung_with_enough_points_of_earlier_iterations():
    s = spec()
    low, top = open_rung_study(s, 30), open_rung_study(s, 90)
    space = {"phi": optuna.distributions.FloatDistribution(0.1, 20, log=True),
             "phases": optuna.distributions.IntDistribution(1, 2)}
    for study, n, it in ((low, 6, 0), (top, 3, 0), (top, 2, 1)):
        for _ in range(n):
            study.enqueue_trial({"phi": 1.0, "phases": 1}, user_attrs={"iteration": it})
            study.tell(study.ask(space), 0.5)
    assert len(model_trials({30: low, 90: top}, 1)) == 6  # top has only 3 from iteration 0
    assert len(model_trials({30: low, 90: top}, 2)) == 5  # now the top rung has enough


def test_rung_records_are_truthful_and_a_restart_does_not_duplicate_them():
    s = spec()
    study = open_rung_study(s, 30)
    cands = [Candidate(i, {"phi": 0.5 * (i + 1), "phases": 1}) for i in range(4)]
    trials = ask_rung(study, optuna_space(s), cands, "it0-rung0-30")
    assert all(t.number == i for i, t in enumerate(trials))  # every ask before any tell
    # the driver restarts before telling: the same trials are found, not asked again
    again = ask_rung(study, optuna_space(s), cands, "it0-rung0-30")
    assert [t.number for t in again] == [0, 1, 2, 3] and len(study.trials) == 4
    tell_rung(study, again, [outcome(cands[0], 30, 0.8),
                             outcome(cands[1], 30, 0.9, status="stopped_early", trained=10),
                             outcome(cands[2], 30, None, status="error", trained=10),
                             outcome(cands[3], 30, 0.7)])
    states = [(t.state.name, t.value, t.user_attrs["trained_steps"]) for t in study.trials]
    # Optuna shows a PRUNED trial with its last intermediate value (step 10), never COMPLETE
    assert states == [("COMPLETE", 0.8, 30), ("PRUNED", 0.9, 10), ("FAIL", None, 10),
                      ("COMPLETE", 0.7, 30)]
    assert study.trials[1].intermediate_values == {10: 0.9}
    assert [t is None for t in ask_rung(study, optuna_space(s), cands, "it0-rung0-30")] == [True] * 4


def test_a_candidate_config_is_built_once_from_the_template():
    s = spec(search=SearchSpace(eta_max_min=0.05, eta_max_max=0.5))
    cfg = candidate_config(s, Candidate(0, {"phi": 2.0, "phases": 2, "lr": 0.1}), 30, seed=7)
    assert (cfg.total_steps, cfg.seed, cfg.phi, cfg.phases, cfg.lr, cfg.variant) == (
        30, 7, 2.0, 2, 0.1, "restart")
    assert cfg.eval_every == 10 and TrainConfig.from_mapping(cfg.to_dict()) == cfg

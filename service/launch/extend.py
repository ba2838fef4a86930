"""Extend a finished study: more ladder iterations, the same searcher state.

Why whole iterations (``StudyExtend``): ``num_trials`` is split over the ladder's iterations
(:meth:`tuning.specs.StudySpec.ladders`), so raising it alone would re-plan the iterations
that already ran. Appending iterations of the study's per-iteration size keeps every earlier
iteration's plan, candidate for candidate: with ``q, r = divmod(num_trials, n)`` the first
``r`` of ``n`` iterations get ``q + 1``, and ``num_trials + k·q`` over ``n + k`` iterations
still gives ``q + 1`` to the same ``r`` and ``q`` to the rest. The default finalist count
(which depends on ``num_trials`` and shapes each ladder's top rung) is pinned for the same
reason.

The extended study goes back to the queue. Its driver re-plans the same earlier iterations,
finds their Tune experiments finished and restores them (no run is trained again), finds
their trials in the per-horizon Optuna studies (no trial is asked or told twice), and the
sampler proposes the new iterations from all finished ones; the finalists are re-picked over
every full-budget candidate and the new result replaces the old one.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

from service.config import Settings
from service.errors import InvalidSpecError, StudyNotFoundError, StudyStateError
from service.launch.kinds import STUDY
from service.launch.lifecycle import full_queue_is_429, queue_limit, start_queued
from service.launch.runner import Runner
from service.schemas import StudyCreate
from service.store import Store, StudyRow, is_library_study
from service.store.curvature_jobs import get_job
from tuning.specs import default_finalists, default_iterations

logger = logging.getLogger(__name__)

#: Most ladder iterations a spec may hold (``LadderSettings.iterations``).
MAX_ITERATIONS = 64


def iterations_of(spec: StudyCreate) -> int:
    """Ladder iterations of a spec, its default (one per 8 candidates) made explicit."""
    return spec.ladder.iterations or default_iterations(spec.num_trials)


def extended_spec(spec: StudyCreate, extra_iterations: int, settings: Settings) -> StudyCreate:
    """``spec`` with ``extra_iterations`` more ladder iterations, each of the study's
    per-iteration candidate count, every earlier iteration's plan unchanged.

    Refuses (409) what cannot be extended that way, and (422, naming ``extra_iterations``)
    an extension past the iteration limit or the ``max_trials`` cap."""
    if spec.method != "ladder" or spec.early_stopping:
        raise StudyStateError("only a ladder study can be extended (this one uses method "
                              "'asha', whose budgets are searched once each)")
    if spec.curvature:
        raise StudyStateError("a study with curvature: true cannot be extended: its first "
                              "candidates come from a curvature measurement and the history "
                              "of other studies, which a second run would not reproduce")
    n = iterations_of(spec)
    share = spec.num_trials // n
    if n + extra_iterations > MAX_ITERATIONS:
        raise InvalidSpecError(
            f"extra_iterations: {extra_iterations} would give {n + extra_iterations} ladder "
            f"iterations, more than {MAX_ITERATIONS} (the study has {n})",
            field="extra_iterations")
    num_trials = spec.num_trials + extra_iterations * share
    if num_trials > settings.max_trials:
        raise InvalidSpecError(
            f"extra_iterations: {extra_iterations} iterations of {share} candidates make "
            f"num_trials={num_trials}, over the configured limit {settings.max_trials}",
            field="extra_iterations")
    data = spec.model_dump(mode="json")
    data["num_trials"] = num_trials
    data["ladder"] = {**data["ladder"], "iterations": n + extra_iterations}
    if spec.finalists is None:
        data["finalists"] = default_finalists(spec.num_trials)
    try:
        return StudyCreate.model_validate(data)
    except ValidationError as exc:  # the stored spec was valid; say what the extension broke
        raise InvalidSpecError(f"extra_iterations: {extra_iterations} makes the spec invalid: "
                               f"{exc.errors()[0]['msg']}", field="extra_iterations") from None


def extend_study(store: Store, runner: Runner, settings: Settings, study_id: str,
                 extra_iterations: int) -> StudyRow:
    """Store the extended spec, put the study back in the queue and start it when a slot is
    free. 404: no such study; 409: a curvature job, or a study that has not succeeded (a
    running one still has its own plan; a failed or cancelled one is resumed by
    resubmitting); 429: the queue is full."""
    row = store.get_study(study_id)
    if row is None:
        if get_job(store, study_id) is not None:
            raise StudyStateError(f"{study_id!r} is a curvature job, not a study: only "
                                  "studies can be extended")
        raise StudyNotFoundError(study_id)
    if is_library_study(row):
        raise StudyStateError(f"study {study_id!r} is a library-mode study (your process ran "
                              "it): call tune_schedule again with more num_trials instead")
    if row.status != "succeeded":
        raise StudyStateError(f"study {study_id!r} is {row.status}: only a succeeded study "
                              "can be extended")
    new = extended_spec(StudyCreate.model_validate(row.spec), extra_iterations, settings)
    with full_queue_is_429(STUDY):  # the queue bound is checked with the update, atomically
        reopened = store.reopen_study(study_id, new.model_dump(mode="json"),
                                      limit=queue_limit(settings))
    if not reopened:
        raise StudyStateError(f"study {study_id!r} is no longer succeeded (extended or "
                              "changed by another request)")
    logger.info("study %s: extended by %d iterations to num_trials=%d, queued", study_id,
                extra_iterations, new.num_trials)
    start_queued(store, runner, settings)
    return store.get_study(study_id) or row

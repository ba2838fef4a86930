"""Driver of one recommendation job: ``python -m service.launch.recommendation_driver <id>``.

The same lifecycle as a study's driver (``service.launch.kinds``): it runs only while its row
is ``running`` (a cancel that raced its start ends it here) and always ends the job in a
terminal state, except when stopped by a signal without a cancel (then reconcile relaunches
it). The measurement (one Hessian estimate at initialisation of a model of at most
``MEASURE_MAX_PARAMS`` parameters) runs in this process, which holds one of the queue's slots
while it runs; no Ray. It never migrates the schema: the API owns it.
"""

from __future__ import annotations

import logging
import sys

from service.config import Settings
from service.launch.recommendation import plan_recommendation, recommend
from service.schemas import TERMINAL_STATUSES, PhiRecommendation, StudyCreate
from service.store import Store
from service.store.recommendation_jobs import RecommendationJobRow

logger = logging.getLogger("service.launch.recommendation_driver")


def run(job_id: str, settings: Settings) -> int:
    store = Store(settings.sqlalchemy_url, migrate=False)  # the API owns the schema
    row = store.get_job(RecommendationJobRow, job_id)
    if row is None:
        logger.error("recommendation job %s not found", job_id)
        return 2
    if row.status in TERMINAL_STATUSES:
        logger.info("recommendation job %s already %s", job_id, row.status)
        return 0
    try:
        plan = plan_recommendation(StudyCreate.model_validate(row.spec), settings)
        if not store.mark_running(RecommendationJobRow, job_id):
            logger.info("recommendation job %s: cancelled while its driver started", job_id)
            return 0
        result = PhiRecommendation(**recommend(plan, store)).model_dump(mode="json")
        store.finish_job(RecommendationJobRow, job_id, "succeeded", result=result)
        logger.info("recommendation job %s: phi=%s (%s)", job_id, result["phi"],
                    result["source"])
        return 0
    except Exception as exc:  # noqa: BLE001 - the job must end in a terminal state
        logger.exception("recommendation job %s failed", job_id)
        store.finish_job(RecommendationJobRow, job_id, "failed",
                         error=f"{type(exc).__name__}: {exc}")
        return 1


def main(argv: list[str] | None = None) -> int:
    from service.launch.study_driver import driver_main

    return driver_main(argv, "python -m service.launch.recommendation_driver <job-id>", run)


if __name__ == "__main__":
    sys.exit(main())

"""The kinds of job that share one lifecycle: a study, a curvature job, a recommendation job.

Both are a stored request (a row with ``status``, driver pid/start/Ray Job id, ``launches``)
run by one driver process per job; the queue, the runner, cancel and reconcile treat them
alike and differ only in what this record names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.store import StudyRow
from service.store.curvature_jobs import CurvatureJobRow
from service.store.recommendation_jobs import RecommendationJobRow


@dataclass(frozen=True)
class JobKind:
    """What differs between kinds of job: table, driver module and log file name."""

    name: str
    table: type[Any]
    driver_module: str
    log_prefix: str

    def log_name(self, job_id: str) -> str:
        return f"{self.log_prefix}{job_id}.log"

    def entrypoint(self, python: str, job_id: str) -> list[str]:
        return [python, "-m", self.driver_module, job_id]


#: Environment variable naming the job (``<kind>:<id>``) in every process that belongs to it.
JOB_MARKER = "PHITUNE_JOB"


def marker(kind: JobKind, job_id: str) -> str:
    return f"{kind.name}:{job_id}"


STUDY = JobKind("study", StudyRow, "service.launch.study_driver", "")
CURVATURE = JobKind("curvature", CurvatureJobRow, "service.launch.curvature_driver",
                    "curvature-")
RECOMMENDATION = JobKind("recommendation", RecommendationJobRow,
                         "service.launch.recommendation_driver", "recommendation-")
#: In the order the queue starts them when a slot frees.
KINDS = (STUDY, CURVATURE, RECOMMENDATION)


class LaunchDeferred(RuntimeError):
    """The runner cannot launch a driver yet (a cluster still starting its job agent): the job
    goes back to the queue without counting as a failed launch."""


@dataclass(frozen=True)
class DriverRef:
    """Who runs a job now: a local process (pid + its start time) or a Ray Job id."""

    pid: int | None = None
    start: str | None = None
    job_id: str | None = None

    @classmethod
    def of(cls, row: Any) -> DriverRef:
        return cls(pid=row.driver_pid, start=getattr(row, "driver_start", None),
                   job_id=getattr(row, "driver_job_id", None))

    @property
    def known(self) -> bool:
        return self.pid is not None or self.job_id is not None

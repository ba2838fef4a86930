"""What a crashed driver's Ray Tune experiment needs before ``Tuner.restore`` can resume it.

A study driver killed mid-experiment (kill -9, a lost node) leaves its Tune experiment in one
of two states that Tune 2.60's own restore handles badly, both seen in CI's kill -9 test:

* **Never snapshotted.** Tune writes ``tuner.pkl`` when the Tuner is built and the experiment
  state (``experiment_state-*.json``) only at its first snapshot. ``Tuner.can_restore``
  accepts a directory killed in between, and ``Tuner.restore`` then runs one trial with no
  config. :func:`restorable` moves such a directory aside (never deletes it) so the
  experiment starts afresh.
* **A snapshot older than the trials' checkpoints.** With ``CheckpointConfig(num_to_keep=1)``
  registering a trial's checkpoint N deletes N − 1, while the stored snapshot, written and
  uploaded after, still names N − 1 until it lands. Killed in that window, restore fails
  with "Could not recover from checkpoint as it does not exist on storage anymore" and the
  trial errors. :func:`repair_missing_checkpoints` puts the trial's newest checkpoint where
  the snapshot looks: the run resumes from its latest state (a run_training checkpoint
  carries its own step), so nothing it trained is lost or trained twice.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

from ray import tune

logger = logging.getLogger(__name__)

#: Tune's experiment-state files in an experiment directory.
STATE_GLOB = "experiment_state-*.json"


def restorable(path: str) -> bool:
    """Whether the Tune experiment at ``path`` can be resumed; a directory that was created but
    never snapshotted is moved to ``<path>.unstarted-<time>`` and False returned."""
    if not tune.Tuner.can_restore(path):
        return False
    if any(Path(path).glob(STATE_GLOB)):
        return True
    aside = f"{path}.unstarted-{int(time.time())}"
    logger.warning("experiment %s was created but never saved its state (its driver died before "
                   "the first snapshot); moved to %s, starting it again", path, aside)
    os.replace(path, aside)
    return False


def _newest_state(path: Path) -> Path | None:
    """The experiment-state file ``Tuner.restore`` reads: the newest by its timestamped name."""
    states = sorted(path.glob(STATE_GLOB))
    return states[-1] if states else None


def repair_missing_checkpoints(path: str) -> list[str]:
    """Give every trial of the experiment at ``path`` whose latest checkpoint in the snapshot is
    gone a copy of its newest checkpoint under that name; returns the trial ids repaired.

    Reads the snapshot with Tune's own loader (``Trial.from_json_state``), so the checkpoint
    path is the one restore will ask for. A trial with no checkpoint on disk at all is left as
    it is (restore then fails it, as Tune would)."""
    from ray.tune.experiment.trial import Trial

    exp = Path(path)
    state = _newest_state(exp)
    if state is None:
        return []
    repaired = []
    for json_state, run_metadata in json.loads(state.read_text())["trial_data"]:
        trial = Trial.from_json_state(json_state, stub=True)
        trial.restore_run_metadata(run_metadata)
        checkpoint = trial.checkpoint
        if checkpoint is None:
            continue
        trial_dir = exp / trial.storage.trial_dir_name
        wanted = trial_dir / Path(checkpoint.path).name
        if wanted.exists():
            continue
        newer = sorted(p for p in trial_dir.glob("checkpoint_*")
                       if p.is_dir() and p.name > wanted.name)
        if not newer:
            logger.warning("trial %s: checkpoint %s is gone and no newer one exists; restore "
                           "will fail it", trial.trial_id, wanted)
            continue
        shutil.copytree(newer[-1], wanted)
        logger.warning("trial %s: the experiment snapshot names %s, deleted after %s was saved "
                       "(the driver died before the next snapshot); restoring from a copy of %s",
                       trial.trial_id, wanted.name, newer[-1].name, newer[-1].name)
        repaired.append(trial.trial_id)
    return repaired

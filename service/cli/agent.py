"""``phitune agent STUDY_ID [--trials N] -- COMMAND ARGS...``: train an external study's trials
with your own program.

Each claimed trial runs COMMAND once, with ``PHITUNE_TRIAL_FILE`` (the trial file: ``trial_id``,
``total_steps``, ``seed``, ``metric``, ``lr_curve``, ``schedule``, ``schedule_params``, ...) and
``PHITUNE_RESULT_FILE`` (where COMMAND writes a JSON object with the study's metric) in its
environment. Exit status 0 with a valid result file is a finished run; a non-zero status, no or
a malformed result file, or a run past ``--timeout`` is a failed run (reported with the reason,
never a hang). The lease is heartbeated while COMMAND runs; when it is lost or the study ends
COMMAND is killed (its whole process group). On Linux COMMAND also dies with the agent
(``PR_SET_PDEATHSIG``), so a ``kill -9`` of the agent leaves no run behind; its trial is
offered again once the lease expires. The loop itself is :class:`service.client.Agent`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from service.cli.format import CLIError

TRIAL_FILE_ENV = "PHITUNE_TRIAL_FILE"
RESULT_FILE_ENV = "PHITUNE_RESULT_FILE"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGKILL this child when the agent dies (a killed agent leaves no run)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_command(trial: Any, command: list[str], *, stopping: threading.Event,
                timeout: float | None = None) -> dict[str, Any]:
    """Run COMMAND for one trial and return its result file's JSON object; raise
    :class:`~service.client.TrialRunFailed` saying why the run failed."""
    from service.client import TrialRunFailed

    workdir = Path(tempfile.mkdtemp(prefix=f"phitune-trial-{trial.trial_id}-"))
    trial_path, result_path = workdir / "trial.json", workdir / "result.json"
    try:
        trial_path.write_text(trial.model_dump_json(indent=1))
        env = {**os.environ, TRIAL_FILE_ENV: str(trial_path),
               RESULT_FILE_ENV: str(result_path), "PHITUNE_TRIAL_ID": trial.trial_id}
        try:
            proc = subprocess.Popen(command, env=env, start_new_session=True,
                                    preexec_fn=_die_with_parent if sys.platform == "linux"
                                    else None)
        except OSError as exc:
            raise TrialRunFailed(f"cannot run {command[0]!r}: {exc.strerror}") from None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                try:
                    code = proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if stopping.is_set():
                    _kill_group(proc)
                    raise TrialRunFailed("stopped: the lease was lost or the study ended")
                if deadline is not None and time.monotonic() > deadline:
                    _kill_group(proc)
                    raise TrialRunFailed(f"COMMAND ran past --timeout {timeout:g} s; killed")
        finally:
            if proc.poll() is None:  # Ctrl-C, or any error here: never leave it running
                _kill_group(proc)
        if code != 0:
            raise TrialRunFailed(f"COMMAND exited with status {code}")
        try:
            text = result_path.read_text()
        except FileNotFoundError:
            raise TrialRunFailed(f"COMMAND exited 0 without writing its result file "
                                 f"(${RESULT_FILE_ENV})") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise TrialRunFailed(f"malformed result file (not JSON: {exc})") from None
        if not isinstance(data, dict):
            raise TrialRunFailed(f"malformed result file: a JSON object of metrics expected, "
                                 f"got {type(data).__name__}")
        return data
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def cmd_agent(args: argparse.Namespace) -> int:
    from service.client import Agent, PhiTuneClient

    command = list(args.cmd)
    if not command:
        raise CLIError("no COMMAND: phitune agent STUDY_ID -- COMMAND ARGS...")
    if shutil.which(command[0]) is None:
        raise CLIError(f"COMMAND {command[0]!r} is not an executable (nor found on PATH)")
    if args.trials is not None and args.trials < 1:
        raise CLIError(f"--trials must be >= 1, got {args.trials}")
    url = args.server or args.url
    token = args.token or os.environ.get("PHITUNE_TOKEN")
    with PhiTuneClient(url, token=token) as client:
        study = client.get(args.study_id)  # fails fast: a wrong URL, token or id
        if study.spec.trainer != "external":
            raise CLIError(f"study {study.id} has trainer {study.spec.trainer!r}: the server "
                           "trains it; agents train studies with trainer: external")
        agent = Agent(client, args.study_id, name=args.name, max_trials=args.trials,
                      poll=args.poll, log=lambda line: print(f"phitune agent: {line}",
                                                             file=sys.stderr, flush=True))
        summary = agent.run(lambda trial: run_command(trial, command, stopping=agent.stopping,
                                                      timeout=args.timeout))
    print(f"phitune agent: {summary.finished} finished, {summary.failed} failed, "
          f"{summary.lost} lost; {summary.stopped}", file=sys.stderr)
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "agent", help="train an external study's trials with your own COMMAND",
        description="Claim trials of a study with trainer: external and run COMMAND for each, "
        f"with ${TRIAL_FILE_ENV} (the trial: total_steps, seed, lr_curve, ...) and "
        f"${RESULT_FILE_ENV} (write a JSON object with the study's metric there) set. Exit 0 "
        "with a result file: a finished run; anything else: a failed run.",
        usage="phitune agent STUDY_ID [--trials N] [--server URL] [--timeout S] -- "
              "COMMAND ARGS...")
    p.add_argument("study_id", help="the external study's id")
    p.add_argument("--trials", type=int, help="stop after this many runs (default: until the "
                   "study ends)")
    p.add_argument("--server", help="API URL (default --url / PHITUNE_URL)")
    p.add_argument("--timeout", type=float, help="a run longer than this many seconds is "
                   "killed and reported failed (default: no limit)")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between claims while no "
                   "trial is offered (default 2)")
    p.add_argument("--name", help="this agent's name in its leases (default host:pid)")
    p.set_defaults(func=cmd_agent, cmd=[])


def split_command(argv: list[str]) -> tuple[list[str], list[str] | None]:
    """``[..., "agent", ..., "--", COMMAND...]`` → (the options, COMMAND): the COMMAND after
    ``--`` is the user's, with its own options, never parsed as phitune's."""
    if "agent" not in argv:
        return argv, None
    start = argv.index("agent")
    if "--" not in argv[start:]:
        return argv, None
    cut = argv.index("--", start)
    return argv[:cut], argv[cut + 1:]

"""The agent loop (:class:`service.client.Agent`) and ``phitune agent``'s COMMAND runner
against the real app and store (no Ray: the trials are offered as the proxies would)."""

from __future__ import annotations

import sys
import threading

import pytest

from service.cli.agent import run_command, split_command
from service.client import Agent, PhiTuneClient, TrialRunFailed
from service.schemas import TrialFile
from service.store.external import get_external_trial, list_external_trials, offer_trial
from tests.service.test_leases import app_with_running_external_study, payload


def agent_over(test_client, study_id: str, **kw) -> Agent:
    client = PhiTuneClient("http://127.0.0.1")
    client._http = test_client  # the in-process app (TestClient is an httpx.Client)
    return Agent(client, study_id, poll=0.05, log=lambda line: None, **kw)


def test_agent_reports_each_run_once_and_failures_with_their_reason(tmp_path):
    with app_with_running_external_study(tmp_path, ttl=0.6) as (client, store, sid):
        for t in ("t1", "t2", "t3", "t4"):
            offer_trial(store, sid, t, payload(t, sid))
        seen: list[str] = []

        def train(trial: TrialFile) -> dict:
            seen.append(trial.trial_id)
            if trial.trial_id == "t2":
                raise TrialRunFailed("exit status 3")
            if trial.trial_id == "t3":
                return {"val_accuracy": 0.5}  # no study metric: a failed run, saying so
            threading.Event().wait(0.5)  # longer than a third of the TTL: heartbeats renew
            return {"val_loss": float(len(seen))}

        summary = agent_over(client, sid, max_trials=4).run(train)
        assert (summary.finished, summary.failed, summary.lost) == (2, 2, 0), summary
        assert seen == ["t1", "t2", "t3", "t4"]
        rows = {r.trial_id: r for r in list_external_trials(store, sid)}
        assert rows["t1"].metrics == {"val_loss": 1.0} and rows["t1"].attempt == 1
        assert rows["t2"].status == "failed" and rows["t2"].error == "exit status 3"
        assert rows["t3"].status == "failed" and "val_loss" in rows["t3"].error
        # the study ends: the next claim says so and the agent stops by itself
        store.finish_study(sid, "succeeded")
        assert "succeeded" in agent_over(client, sid).run(train).stopped


def test_agent_whose_lease_is_lost_does_not_report(tmp_path):
    with app_with_running_external_study(tmp_path, ttl=0.3) as (client, store, sid):
        offer_trial(store, sid, "t1", payload("t1", sid))
        agent = agent_over(client, sid, max_trials=1)

        def train(trial: TrialFile) -> dict:
            store.finish_study(sid, "cancelled")  # heartbeats now get 410
            assert agent.stopping.wait(5), "the agent signals the run to stop"
            return {"val_loss": 1.0}

        summary = agent.run(train)
        assert summary.lost == 1 and summary.finished == 0
        assert get_external_trial(store, sid, "t1").status == "leased"


def trial() -> TrialFile:
    return TrialFile.model_validate(payload("t9", "s"))


@pytest.mark.parametrize("script, reason", [
    ("import sys; sys.exit(3)", "exited with status 3"),
    ("pass", "without writing its result file"),
    ("import os; open(os.environ['PHITUNE_RESULT_FILE'], 'w').write('{nope')",
     "malformed result file"),
    ("import os; open(os.environ['PHITUNE_RESULT_FILE'], 'w').write('[1]')",
     "malformed result file"),
    ("import time; time.sleep(30)", "past --timeout"),
])
def test_command_failures_are_failed_runs_not_hangs(script, reason):
    with pytest.raises(TrialRunFailed, match=reason):
        run_command(trial(), [sys.executable, "-c", script], stopping=threading.Event(),
                    timeout=1.5)


def test_command_gets_the_trial_file_and_returns_its_result():
    script = ("import json, os; t = json.load(open(os.environ['PHITUNE_TRIAL_FILE'])); "
              "json.dump({'val_loss': t['lr_curve'][-1] + t['total_steps']}, "
              "open(os.environ['PHITUNE_RESULT_FILE'], 'w'))")
    out = run_command(trial(), [sys.executable, "-c", script], stopping=threading.Event())
    assert out == {"val_loss": pytest.approx(40.1)}


def test_a_stop_kills_the_command():
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    with pytest.raises(TrialRunFailed, match="stopped"):
        run_command(trial(), [sys.executable, "-c", "import time; time.sleep(30)"],
                    stopping=stop)


def test_split_command_keeps_the_commands_own_options():
    argv = ["--url", "u", "agent", "s1", "--trials", "2", "--", "python", "x.py", "--trials", "9"]
    assert split_command(argv) == (argv[:6], ["python", "x.py", "--trials", "9"])
    assert split_command(["list"]) == (["list"], None)


def test_cli_agent_errors_are_messages(capsys):
    from service.cli.main import main

    assert main(["agent", "s1"]) == 2
    assert "no COMMAND" in capsys.readouterr().err
    assert main(["agent", "s1", "--", "no-such-program-xyz"]) == 2
    assert "not an executable" in capsys.readouterr().err
    assert main(["--url", "http://127.0.0.1:9", "agent", "s1", "--", "true"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach" in err and "Traceback" not in err


def test_readme_agent_commands_parse_and_name_real_files():
    """The README's two commands: the spec it submits is a valid external study, the agent
    line parses as `phitune agent`, and the example it runs imports nothing of phitune (what
    running them does is tests/e2e/test_agent_e2e.py)."""
    import re
    import shlex
    from pathlib import Path

    import yaml

    from service.cli.main import build_parser
    from service.schemas import StudyCreate

    repo = Path(__file__).resolve().parents[2]
    section = re.search(r"<!-- agent:begin -->(.*?)<!-- agent:end -->",
                        (repo / "README.md").read_text(), re.S).group(1)
    bash = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    submit, start = [line.split("#")[0].strip() for line in bash.strip().splitlines()]
    spec_path = re.search(r"phitune submit (\S+)\)", submit).group(1)
    spec = StudyCreate.model_validate(yaml.safe_load((repo / spec_path).read_text()))
    assert spec.trainer == "external" and spec.model is None
    argv = shlex.split(start.replace('"$STUDY"', "s1"))[1:]
    options, command = split_command(argv)
    args = build_parser().parse_args(options)
    assert args.command == "agent" and args.study_id == "s1"
    assert command[0] == "python" and (repo / command[1]).is_file()
    source = (repo / command[1]).read_text()
    assert not re.search(r"^\s*(from|import) (service|tuning|trainables)\b", source, re.M)

"""``phitune plot-schedule`` through ``service.cli.main`` (the real parser and error path)."""

from __future__ import annotations

import json
import math

import pytest

from service.cli import main
from tuning.schedules import create_schedule, uba_lr


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["plot-schedule", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_values_are_eq5(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(capsys, "uba", "--steps", "50", "--param", "phi=5", "--param",
                        "phases=2", "--param", "eta_max=0.1", "--param", "variant=cyclic",
                        "--values")
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["name"] == "uba" and doc["params"]["phases"] == 2 and doc["eta_max"] == 0.1
    # Eq. (5) written out: step i is update t = i + 1; phases [0, 25], [25, 50]; cyclic
    # (k - 1)π offset, so phase 2 rises again.
    def eq5(t: int) -> float:
        k, lo, hi = (1, 0, 25) if t <= 25 else (2, 25, 50)
        c = (2 * (t - lo) - 1) * math.pi / (2 * (hi - lo)) + (k - 1) * math.pi
        return 0.1 * 2 * (1 + math.cos(c)) / (2 * 5 + (2 - 5) * (1 + math.cos(c)))

    assert doc["values"] == pytest.approx([eq5(i + 1) for i in range(50)], rel=1e-9)
    assert doc["values"] == pytest.approx(
        [uba_lr(i, 50, phi=5.0, phases=2, eta_max=0.1, variant="cyclic") for i in range(50)],
        rel=1e-12)


def test_compare_shares_eta_max_and_keeps_own_params(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(capsys, "uba", "--steps", "20", "--param", "eta_max=0.3",
                        "--compare", "cosine,rex", "--compare", "uba:phi=0.5:phases=2",
                        "--values")
    assert rc == 0, err
    docs = json.loads(out)
    assert [d["name"] for d in docs] == ["uba", "cosine", "rex", "uba"]
    assert all(d["eta_max"] == 0.3 for d in docs)
    assert docs[1]["values"] == pytest.approx(create_schedule("cosine", 20, eta_max=0.3).values())
    assert docs[3]["params"]["phi"] == 0.5 and docs[3]["params"]["phases"] == 2


def test_list_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, err = _run(capsys, "step", "--steps", "100", "--param", "milestones=0.3,0.6",
                        "--param", "eta_max=1", "--values")
    assert rc == 0, err
    values = json.loads(out)["values"]
    assert values[29] == pytest.approx(1.0) and values[30] == pytest.approx(0.1)
    assert values[60] == pytest.approx(0.01)


def test_writes_png(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    path = tmp_path / "cmp.png"
    rc, out, err = _run(capsys, "uba", "--steps", "200", "--param", "phi=5", "--compare",
                        "cosine,onecycle", "-o", str(path), "--log-y", "--title", "t")
    assert rc == 0, err
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    assert "3 curves" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["ubb", "--values"], "unknown schedule 'ubb'; valid schedules: uba"),
        (["uba", "--compare", "cosinus", "--values"], "unknown schedule 'cosinus'"),
        (["uba", "--param", "phi=-1", "--values"], "parameter 'phi': -1.0 is out of range"),
        (["uba", "--param", "phi=abc", "--values"], "parameter 'phi': cannot parse 'abc'"),
        (["uba", "--param", "phases=1.5", "--values"], "parameter 'phases'"),
        (["uba", "--param", "foo=1", "--values"], "parameter 'foo': unknown parameter"),
        (["uba", "--param", "phi", "--values"], "expected KEY=VALUE"),
        (["uba", "--param", "phi=1", "--param", "phi=2", "--values"], "given twice"),
        (["uba", "--steps", "0", "--values"], "--steps 0 is out of range"),
        (["uba", "--param", "variant=wiggle", "--values"], "parameter 'variant'"),
        (["uba"], "nothing to do"),
        (["uba", "--values", "-o", "/nonexistent-dir/x.png"], "cannot write"),
    ],
)
def test_bad_input_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    rc, out, err = _run(capsys, *argv)
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("phitune: error: "), err
    assert needle in lines[0]
    assert "Traceback" not in err


def test_phi_zero_is_constant(capsys: pytest.CaptureFixture[str]) -> None:
    """φ = 0 is the constant-η_max limit of Eq. (5), accepted by the CLI like the library."""
    rc, out, _ = _run(capsys, "uba", "--steps", "10", "--param", "phi=0", "--values")
    assert rc == 0
    assert all(math.isclose(v, 1.0) for v in json.loads(out)["values"])

"""The warm-start benchmark runs end to end at a tiny size (so it cannot rot)."""

from __future__ import annotations

from bench.warm_start import run


def test_warm_start_smoke(tmp_path):
    out = run("smoke", tmp_path, search_seeds=2)
    assert len(out["rows"]) == 2
    for row in out["rows"]:
        # the warm start is evaluated first: if it already reaches the target, trial 1 does
        if row["warm_start_value_at_full"] >= out["target"] - 1e-12:
            assert row["trials_with_warm_start"] == 1
    text = (tmp_path / "warm_start_smoke.md").read_text()
    assert "Median trials" in text and (tmp_path / "warm_start_smoke.png").exists()

"""README's "Measured results" section is generated from bench/results/ (issue 14, item 2):
the committed README must equal what ``bench/render_readme.py`` renders, and the renderer's
interpreting sentences follow the data rather than a typed claim."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from bench import render_readme as rr
from bench.common import REPO_ROOT


def test_readme_results_section_is_what_the_renderer_renders() -> None:
    text = (REPO_ROOT / "README.md").read_text()
    assert rr.current(text) == rr.render(), (
        "README.md's results section differs from bench/results/: run `make readme-results`")


def test_splice_replaces_only_between_markers() -> None:
    readme = f"# t\nintro\n{rr.BEGIN}\nold\n{rr.END}\n## next\n"
    out = rr.splice(readme, "new body\n")
    assert out == f"# t\nintro\n{rr.BEGIN}\nnew body\n{rr.END}\n## next\n"
    assert rr.current(out) == "new body\n"
    with pytest.raises(ValueError, match="exactly once"):
        rr.splice("no markers", "x")


def _quality_csv(path: Path, accs: dict[str, list[float]]) -> None:
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["budget_steps", "arm", "seed", "phi",
                                           "test_accuracy"])
        w.writeheader()
        for arm, vals in accs.items():
            for seed, v in enumerate(vals):
                w.writerow({"budget_steps": 100, "arm": arm, "seed": seed, "phi": 0.3,
                            "test_accuracy": v})


def test_quality_sentences_follow_the_data(tmp_path: Path) -> None:
    (tmp_path / "schedule_quality.md").write_text("η_max = 0.05 for every arm\n")
    _quality_csv(tmp_path / "schedule_quality.csv", {
        "uba_tuned": [0.80, 0.81, 0.82], "rex": [0.83, 0.84, 0.85],
        "uba_default": [0.70, 0.71, 0.72]})
    text = rr.render_quality(tmp_path)
    assert "| η_max = 0.05 shared by all arms | 100 | 3 | 81.00 ± 1.00 | 2 of 3 | REX" in text
    assert "highest mean in 0 of 1" in text
    assert "REX beats it on 3 of 3 paired seeds" in text
    assert "best schedule at every budget" not in text.replace("not the best schedule", "")
    assert "`schedule_quality.md` has no provenance header" in text


def test_missing_files_render_as_missing(tmp_path: Path) -> None:
    body = rr.render(tmp_path)
    assert "GPU: not measured (no device lent)" in body
    assert "search_bench_summary.csv` is not in `bench/results/` yet" in body


def test_search_section_renders_from_a_bench_run(tmp_path: Path) -> None:
    from bench import search_bench as sb
    from tests.bench.test_search_bench import write_corpus

    corpus = write_corpus(tmp_path / "phi_corpus.csv")
    assert sb.main(["--corpus", str(corpus), "--out", str(tmp_path), "--search-seeds", "2",
                    "--max-units", "8", "--candidates", "6", "--cases", "--methods", "grid12",
                    "tpe", "ladder_tpe"]) == 0
    text = rr.render_search(tmp_path)
    assert "| mlp-toy/sgd | val_accuracy |" in text
    assert "Goal (issue 11" in text and "of 1 task/optimizer cases" in text
    assert "Over all 1 cases of the corpus" in text

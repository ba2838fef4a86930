"""README's "Measured results" section is generated from bench/results/ (issue 14, item 2):
the committed README must equal what ``bench/render_readme.py`` renders, and the renderer's
interpreting sentences follow the data rather than a typed claim."""

from __future__ import annotations

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


def test_quality_section_renders_from_a_bench_run(tmp_path: Path) -> None:
    """The README quality table and its verdict come from the per-task CSVs of a real run."""
    from bench import schedule_quality as sq

    # three arms are enough for the renderer (the full smoke run is test_bench_smoke's)
    sq.main(["--smoke", "--out", str(tmp_path), "--arm", "uba", "--arm", "cosine",
             "--arm", "autolrs"])
    for name in ("schedule_quality_smoke_mlp-digits.csv", "schedule_quality_smoke.md"):
        (tmp_path / name).rename(tmp_path / name.replace("_smoke", ""))
    # the renderer reads the cpu preset's task names: present the smoke task under one
    (tmp_path / "schedule_quality_mlp-digits.csv").rename(
        tmp_path / "schedule_quality_mlp-fmnist.csv")
    text = rr.render_quality(tmp_path)
    assert "| task | steps | searched UBA | rank (of arms) | best peer |" in text
    assert text.count("| mlp-fmnist (test accuracy) |") == 3
    cells = sq.load_cells(tmp_path)
    assert sq.verdict_text(cells) in text
    assert "Data-driven schedulers" in text and "AutoLRS" in text
    assert "`schedule_quality.md`" in text and "commit" in text


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

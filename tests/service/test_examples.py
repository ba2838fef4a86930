"""The README's example specs stay valid: schema, registry names, baselines."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from service.api.routes.studies import validate_names
from service.schemas import StudyCreate

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_spec_is_valid(path):
    spec = StudyCreate.model_validate(yaml.safe_load(path.read_text()))
    if spec.trainer == "builtin":  # an external study names no model or dataset
        validate_names(spec)


def test_there_are_examples():
    assert len(EXAMPLES) >= 2

"""What the CLI prints and reads: its error type, spec loading and one-line summaries.

Kept apart from the command table (``service.cli.main``) so the demo and the schedule commands
can use them without importing the parser (no import cycle).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


class CLIError(Exception):
    """A user-facing CLI failure: printed as ``phitune: error: ...``."""


def load_spec(path: str) -> dict[str, Any]:
    import yaml

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise CLIError(f"cannot read spec {path!r}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CLIError(f"spec {path!r} is not valid YAML/JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CLIError(f"spec {path!r} must be a mapping of fields, got {type(data).__name__}")
    return data


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def format_best(best: Any) -> str:
    return (f"best schedule: UBA φ={best.phi:.4g}, phases={best.phases}, η_max={best.eta_max:.4g}, "
            f"η_min={best.eta_min:.4g}, variant={best.variant}, steps={best.total_steps}; "
            f"{best.metric}={_value(best)} (trial {best.trial_id})")


def format_winner(result: Any) -> str | None:
    """The "use X" line of a finished study, computed from ``result.winner`` (None when
    nothing was compared)."""
    winner = getattr(result, "winner", None)
    if winner is None:
        return None
    return winner.advice(result.metric)


def _value(best: Any) -> str:
    """``0.8512`` for one run, ``0.8512 ± 0.0031 over 3 seeds`` for a finalist's mean."""
    n = getattr(best, "n_seeds", 1) or 1
    if n > 1 and getattr(best, "value_std", None) is not None:
        return f"{best.value:.4f} ± {best.value_std:.4f} over {n} seeds"
    return f"{best.value:.4f}"

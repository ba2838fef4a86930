"""Errors a trial raises cross process boundaries: Ray pickles them to record the reason."""

from __future__ import annotations

import math
import pickle

from trainables.errors import DivergedError, UnknownNameError


def test_diverged_error_survives_pickling_with_its_message():
    err = pickle.loads(pickle.dumps(DivergedError(7, math.inf, 0.5)))
    assert isinstance(err, DivergedError) and err.step == 7
    assert "training diverged" in str(err) and "step 7" in str(err)


def test_unknown_name_error_survives_pickling():
    err = pickle.loads(pickle.dumps(UnknownNameError("model", "resnet9", ["mlp", "cnn"])))
    assert isinstance(err, UnknownNameError) and "resnet9" in str(err) and "mlp" in str(err)

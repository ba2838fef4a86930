"""The curvature bench's independent reference (issue 14): ARPACK λmax and a Hutchinson
trace on plain autograd HVPs agree with ``torch.autograd.functional.hessian`` on a tiny MLP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench.curvature_bench import reference_lanczos


def test_reference_matches_autograd_hessian() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    m = model.double()
    shapes = [p.shape for p in m.parameters()]
    sizes = [p.numel() for p in m.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in m.parameters()])

    def loss(v: torch.Tensor) -> torch.Tensor:
        w1, b1, w2, b2 = (t.reshape(s) for t, s in zip(torch.split(v, sizes), shapes,
                                                        strict=True))
        return F.cross_entropy(torch.tanh(x.double() @ w1.T + b1) @ w2.T + b2, y)

    h = torch.autograd.functional.hessian(loss, flat).numpy()
    ev = np.linalg.eigvalsh(0.5 * (h + h.T))
    ref = reference_lanczos(model.float(), x, y, probes=400)
    assert ref["lambda_max"] == pytest.approx(ev.max(), rel=1e-8)
    assert ref["trace"] == pytest.approx(ev.sum(), rel=0.1)
    assert "ARPACK" in ref["source"]

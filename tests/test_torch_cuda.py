"""The torch backend on a GPU: the same exactness as on the CPU, with the tensors staying on
the device. Skipped where no CUDA device exists; run with `pytest -m cuda` where one does."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gdstep

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("name", ["xor", "spiral", "textbook"])
def test_cuda_matches_numpy_in_float64(name):
    from gdstep import compare_backends
    report = compare_backends(name, steps=20, device="cuda")
    assert report.device.startswith("cuda:") and report.ok, str(report)


def test_auto_takes_the_gpu():
    s = gdstep.open("xor", backend="torch", device="auto")
    assert s.backend.device.startswith("cuda:") and not any(e.kind == "info" for e in s.events)


def test_records_stay_on_the_device_and_the_api_gives_numpy():
    s = gdstep.open("spiral", backend="torch", device="cuda")
    s.step(2)
    fwd = s.forward()
    s.loss()
    bwd = s.backward()
    upd = s.update()
    assert all(o.is_cuda for o in fwd.outputs)
    assert all(g.is_cuda for g in bwd.grads.values())
    assert upd.params["0.weight"].new.is_cuda and upd.params["0.weight"].state_after["exp_avg"].is_cuda
    assert isinstance(s.params["0.weight"], np.ndarray) and isinstance(s.grads["0.weight"], np.ndarray)
    assert s.explain("0.weight", (0, 0)).optimizer == "adam"


def test_cuda_rewind_is_bit_exact():
    s = gdstep.open("spiral", backend="torch", device="cuda")
    s.step(5)
    first = s.forward()
    s.step(6)
    s.back(iterations=6)
    again = s.forward()
    for a, b in zip(first.outputs, again.outputs):
        assert torch.equal(a, b)


def test_python_scenario_on_cuda():
    s = gdstep.open("scenarios/residual.py", device="cuda")
    assert s.backend.device.startswith("cuda:") and s.backend.x.is_cuda
    s.step(3)
    assert s.gradcheck("inp.weight", (0, 0)).ok


def test_attach_on_cuda_stops_on_nan():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1)).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    hits = []
    dbg = gdstep.attach(model, opt, nn.MSELoss(), on_break=lambda s, m: hits.append(m))
    x, y = torch.randn(32, 4, device="cuda"), torch.randn(32, 1, device="cuda")
    for i in range(5):
        dbg.step(x if i != 3 else x * float("nan"), y)
    assert hits and "non-finite" in hits[0]

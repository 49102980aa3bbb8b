"""The gradient check in float32: a step chosen by the dtype's precision and the loss's
curvature, so a correct gradient is not called a mismatch (a conv net's weights), a kink
within the step is named as such (a ReLU near its boundary), and a wrong gradient is still
found. Every analytic value is checked against float64 autograd on the same batch."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import gdstep
from gdstep.debugger import BreakpointHit
from gdstep.gradcheck import step_for


def paused(model, x, y, loss_fn):
    """The attached session after backward of the first iteration (the batch in hand)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["grad_norm > 0"], on_break="raise")
    with pytest.raises(BreakpointHit) as hit:
        dbg.step(x, y)
    return hit.value.session          # (not closed: close() would finish the iteration, as the loop's end)


def float64_grads(model, x, y, loss_fn) -> dict[str, torch.Tensor]:
    twin = copy.deepcopy(model).double()
    loss_fn(twin(x.double()), y if not y.is_floating_point() else y.double()).backward()
    return {name: p.grad for name, p in twin.named_parameters()}


def test_a_float32_conv_net_has_no_false_mismatch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 10))
    x, y = torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))
    truth = float64_grads(model, x, y, nn.CrossEntropyLoss())
    s = paused(model, x, y, nn.CrossEntropyLoss())
    rng = np.random.default_rng(0)
    for name in ("0.weight", "2.weight", "5.weight", "0.bias"):
        for _ in range(6):
            index = tuple(int(rng.integers(0, n)) for n in s.backend.param_shapes[name])
            check = s.gradcheck(name, index)
            assert check.analytic == pytest.approx(truth[name][index].item(), rel=1e-4, abs=1e-7)
            assert check.ok, str(check)
            # the error it claims to be within holds against the float64 truth
            assert abs(check.numeric - truth[name][index].item()) <= check.tolerance, str(check)
            assert check.h >= step_for("float32", 0.0) / 4


def relu_net(d: float):
    """One hidden ReLU unit whose input is w·1 + b = d: a kink at distance d below w."""
    model = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1))
    with torch.no_grad():
        model[0].weight.fill_(0.5)
        model[0].bias.fill_(d - 0.5)
        model[2].weight.fill_(1.5)
        model[2].bias.fill_(0.25)
    return model, torch.ones(1, 1), torch.full((1, 1), 2.0)


def test_a_kink_inside_every_step_is_named_not_called_a_mismatch():
    model, x, y = relu_net(1e-4)                  # well inside h/16 for float32 (h ≈ 4.9e-3)
    truth = float64_grads(model, x, y, nn.MSELoss())["0.weight"][0, 0].item()
    check = paused(model, x, y, nn.MSELoss()).gradcheck("0.weight", (0, 0))
    assert check.analytic == pytest.approx(truth, rel=1e-6)
    assert check.kink and not check.ok
    assert check.verdict == "kink within ±h" and "MISMATCH" not in str(check) and "kink" in str(check)


def test_a_kink_within_the_first_step_is_stepped_around():
    h = step_for("float32", 0.5)
    model, x, y = relu_net(h / 3)                 # inside ±h, outside ±h/4: the step shrinks past it
    truth = float64_grads(model, x, y, nn.MSELoss())["0.weight"][0, 0].item()
    check = paused(model, x, y, nn.MSELoss()).gradcheck("0.weight", (0, 0))
    assert check.ok and not check.kink and check.h < h / 3
    assert check.numeric == pytest.approx(truth, rel=1e-3)


def test_a_wrong_float32_gradient_is_still_found(monkeypatch):
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 3))
    x, y = torch.randn(64, 4), torch.randn(64, 3)
    s = paused(model, x, y, nn.MSELoss())
    assert s.gradcheck("0.weight", (2, 1)).ok
    real = s.backend.gradients
    monkeypatch.setattr(s.backend, "gradients", lambda x, y: {k: v * 1.05 for k, v in real(x, y).items()})
    wrong = s.gradcheck("0.weight", (2, 1))
    assert not wrong.ok and not wrong.kink and "MISMATCH" in str(wrong)

"""Every layer and every loss of the numpy engine against independent references:
central finite differences in float64, torch.nn.functional values and torch.autograd gradients.

Points are drawn away from the kinks (relu/leaky_relu at 0, mae at y = t, huber at |d| = δ)
so that the finite difference is the derivative.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gdstep.nn.layers import ACTIVATIONS, Identity, LeakyReLU, Linear, ReLU, Sigmoid, Tanh
from gdstep.nn.losses import BCE, LOSSES, MAE, MSE, NLL, SSE, CrossEntropy, HalfSSE, Huber
from gdstep.nn.model import Sequential

H = 1e-6
ALL = frozenset({"0.weight", "0.bias"})


def away_from_zero(rng, shape, low=0.1, high=2.0):
    """Values with |x| in [low, high] and random signs: no element near a kink at 0."""
    return rng.uniform(low, high, size=shape) * rng.choice([-1.0, 1.0], size=shape)


def central_difference(f, x: np.ndarray, h: float = H) -> np.ndarray:
    """∂f/∂x for a scalar function f of an array, element by element."""
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[idx] += h
        minus[idx] -= h
        grad[idx] = (f(plus) - f(minus)) / (2 * h)
    return grad


def t64(a) -> torch.Tensor:
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=True)


# -- activations ---------------------------------------------------------------------------------

TORCH_ACTIVATION = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": F.relu,
    "leaky_relu": lambda x: F.leaky_relu(x, 0.01),
    "identity": lambda x: x,
    "softplus": F.softplus,
    "elu": F.elu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "log_softmax": lambda x: F.log_softmax(x, dim=1),
}


def test_every_activation_is_covered():
    assert set(ACTIVATIONS) == set(TORCH_ACTIVATION)


def make_activation(kind: str):
    return LeakyReLU(1, 0.01) if kind == "leaky_relu" else ACTIVATIONS[kind](1)


@pytest.mark.parametrize("kind", sorted(TORCH_ACTIVATION))
def test_activation_forward_matches_torch(kind):
    rng = np.random.default_rng(1)
    x = away_from_zero(rng, (5, 4))
    layer = make_activation(kind)
    ours = layer.forward({}, x)
    ref = TORCH_ACTIVATION[kind](torch.tensor(x)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("kind", sorted(TORCH_ACTIVATION))
def test_activation_backward_matches_autograd_and_finite_differences(kind):
    rng = np.random.default_rng(2)
    x = away_from_zero(rng, (5, 4))
    grad_y = rng.standard_normal((5, 4))          # an upstream ∂L/∂y
    layer = make_activation(kind)
    y = layer.forward({}, x)
    grad_x, grads = layer.backward({}, x, y, grad_y, frozenset())
    assert grads == {}

    xt = t64(x)
    (TORCH_ACTIVATION[kind](xt) * torch.tensor(grad_y)).sum().backward()
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=1e-13, atol=1e-15)

    numeric = central_difference(lambda v: float((layer.forward({}, v) * grad_y).sum()), x)
    np.testing.assert_allclose(grad_x, numeric, rtol=1e-7, atol=1e-9)


def test_leaky_relu_slope_is_used():
    x = np.array([[-2.0, 3.0]])
    layer = LeakyReLU(0, 0.2)
    np.testing.assert_array_equal(layer.forward({}, x), [[-0.4, 3.0]])
    gx, _ = layer.backward({}, x, layer.forward({}, x), np.ones_like(x), frozenset())
    np.testing.assert_array_equal(gx, [[0.2, 1.0]])
    ref = F.leaky_relu(torch.tensor(x), 0.2).numpy()
    np.testing.assert_array_equal(layer.forward({}, x), ref)


# -- the linear layer ----------------------------------------------------------------------------

@pytest.mark.parametrize("bias", [True, False])
def test_linear_forward_and_backward(bias):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 3))
    params = {"0.weight": rng.standard_normal((4, 3))}
    if bias:
        params["0.bias"] = rng.standard_normal(4)
    layer = Linear(0, 3, 4, bias=bias)
    grad_y = rng.standard_normal((6, 4))
    z = layer.forward(params, x)

    xt, wt = t64(x), t64(params["0.weight"])
    bt = t64(params["0.bias"]) if bias else None
    zt = F.linear(xt, wt, bt)
    np.testing.assert_allclose(z, zt.detach().numpy(), rtol=1e-14, atol=1e-14)

    grad_x, grads = layer.backward(params, x, z, grad_y, ALL)
    (zt * torch.tensor(grad_y)).sum().backward()
    np.testing.assert_allclose(grad_x, xt.grad.numpy(), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(grads["0.weight"], wt.grad.numpy(), rtol=1e-13, atol=1e-14)
    if bias:
        np.testing.assert_allclose(grads["0.bias"], bt.grad.numpy(), rtol=1e-13, atol=1e-14)
    else:
        assert "0.bias" not in grads

    def f_of(name):
        def f(v):
            p = dict(params)
            p[name] = v
            return float((layer.forward(p, x) * grad_y).sum())
        return f

    for name in params:
        np.testing.assert_allclose(grads[name], central_difference(f_of(name), params[name]), rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(grad_x, central_difference(lambda v: float((layer.forward(params, v) * grad_y).sum()), x),
                               rtol=1e-7, atol=1e-8)


def test_linear_frozen_parameters_get_no_gradient():
    rng = np.random.default_rng(4)
    params = {"0.weight": rng.standard_normal((2, 3)), "0.bias": rng.standard_normal(2)}
    layer = Linear(0, 3, 2)
    x = rng.standard_normal((4, 3))
    _, grads = layer.backward(params, x, layer.forward(params, x), np.ones((4, 2)), frozenset({"0.weight"}))
    assert set(grads) == {"0.weight"}


# -- losses --------------------------------------------------------------------------------------

def torch_loss(kind: str, out: torch.Tensor, target: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    if kind == "mse":
        return F.mse_loss(out, target, reduction="mean")
    if kind == "sse":
        return F.mse_loss(out, target, reduction="sum")
    if kind == "half_sse":
        return 0.5 * F.mse_loss(out, target, reduction="sum")
    if kind == "mae":
        return F.l1_loss(out, target, reduction="mean")
    if kind == "huber":
        return torch.nn.HuberLoss(reduction="mean", delta=delta)(out, target)
    if kind == "bce":
        return torch.nn.BCELoss(reduction="mean")(out, target)
    if kind == "cross_entropy":
        return torch.nn.CrossEntropyLoss(reduction="mean")(out, target)
    if kind == "nll":
        return torch.nn.NLLLoss(reduction="mean")(out, target)
    raise AssertionError(kind)


def torch_per_sample(kind: str, out: torch.Tensor, target: torch.Tensor, delta: float = 1.0) -> torch.Tensor:
    """The per-sample losses that the loss record shows: each row's contribution, reduced
    over outputs the same way the loss reduces them."""
    if kind in ("mse",):
        return F.mse_loss(out, target, reduction="none").mean(dim=1)
    if kind == "sse":
        return F.mse_loss(out, target, reduction="none").sum(dim=1)
    if kind == "half_sse":
        return 0.5 * F.mse_loss(out, target, reduction="none").sum(dim=1)
    if kind == "mae":
        return F.l1_loss(out, target, reduction="none").mean(dim=1)
    if kind == "huber":
        return torch.nn.HuberLoss(reduction="none", delta=delta)(out, target).mean(dim=1)
    if kind == "bce":
        return torch.nn.BCELoss(reduction="none")(out, target).mean(dim=1)
    if kind == "cross_entropy":
        return torch.nn.CrossEntropyLoss(reduction="none")(out, target)
    if kind == "nll":
        return torch.nn.NLLLoss(reduction="none")(out, target)
    raise AssertionError(kind)


def loss_case(kind: str, rng: np.random.Generator, delta: float = 1.0):
    """(loss, output, target) away from the loss's kinks."""
    b, k = 7, 3
    if kind == "cross_entropy":
        return CrossEntropy(), 3.0 * rng.standard_normal((b, k)), rng.integers(0, k, size=b)
    if kind == "nll":
        return NLL(), CrossEntropy.log_softmax(3.0 * rng.standard_normal((b, k))), rng.integers(0, k, size=b)
    if kind == "bce":
        return BCE(), rng.uniform(0.05, 0.95, size=(b, k)), rng.integers(0, 2, size=(b, k)).astype(float)
    target = rng.standard_normal((b, k))
    if kind == "huber":
        # |d| either well inside δ or well beyond it
        mag = np.where(rng.random((b, k)) < 0.5, rng.uniform(0.05, 0.7 * delta, (b, k)), rng.uniform(1.3 * delta, 3 * delta, (b, k)))
        return Huber(delta), target + mag * rng.choice([-1.0, 1.0], size=(b, k)), target
    return LOSSES[kind](), target + away_from_zero(rng, (b, k)), target


LOSS_KINDS = ["mse", "sse", "half_sse", "mae", "huber", "bce", "cross_entropy", "nll"]


def test_every_loss_is_covered():
    assert set(LOSSES) == set(LOSS_KINDS)


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_loss_value_and_per_sample_match_torch(kind):
    rng = np.random.default_rng(5)
    loss, out, target = loss_case(kind, rng)
    per_sample, value = loss.forward(out, target)
    tt = torch.tensor(target) if kind in ("cross_entropy", "nll") else torch.tensor(target, dtype=torch.float64)
    ref = torch_loss(kind, torch.tensor(out), tt).item()
    assert value == pytest.approx(ref, rel=1e-13, abs=1e-15)
    np.testing.assert_allclose(per_sample, torch_per_sample(kind, torch.tensor(out), tt).numpy(), rtol=1e-13, atol=1e-15)
    assert per_sample.shape == (len(out),)


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_loss_gradient_matches_autograd_and_finite_differences(kind):
    rng = np.random.default_rng(6)
    loss, out, target = loss_case(kind, rng)
    grad = loss.backward(out, target)
    assert grad.shape == out.shape

    ot = t64(out)
    tt = torch.tensor(target) if kind in ("cross_entropy", "nll") else torch.tensor(target, dtype=torch.float64)
    torch_loss(kind, ot, tt).backward()
    np.testing.assert_allclose(grad, ot.grad.numpy(), rtol=1e-12, atol=1e-15)

    numeric = central_difference(lambda v: loss.forward(v, target)[1], out)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("delta", [0.3, 1.0, 2.5])
def test_huber_delta_matches_torch(delta):
    rng = np.random.default_rng(7)
    loss, out, target = loss_case("huber", rng, delta)
    _, value = loss.forward(out, target)
    ot = t64(out)
    ref = torch_loss("huber", ot, torch.tensor(target), delta)
    ref.backward()
    assert value == pytest.approx(ref.item(), rel=1e-13)
    np.testing.assert_allclose(loss.backward(out, target), ot.grad.numpy(), rtol=1e-12, atol=1e-15)
    numeric = central_difference(lambda v: loss.forward(v, target)[1], out)
    np.testing.assert_allclose(loss.backward(out, target), numeric, rtol=1e-6, atol=1e-9)


def test_cross_entropy_is_stable_for_large_logits():
    out = np.array([[1000.0, 0.0, -1000.0], [0.0, 800.0, 799.0]])
    target = np.array([2, 2])
    loss = CrossEntropy()
    per_sample, value = loss.forward(out, target)
    ref = torch.nn.CrossEntropyLoss(reduction="none")(torch.tensor(out), torch.tensor(target)).numpy()
    assert np.all(np.isfinite(per_sample))
    np.testing.assert_allclose(per_sample, ref, rtol=1e-13)
    ot = t64(out)
    torch.nn.CrossEntropyLoss()(ot, torch.tensor(target)).backward()
    np.testing.assert_allclose(loss.backward(out, target), ot.grad.numpy(), rtol=1e-12, atol=1e-300)


def test_bce_clamps_logs_like_torch():
    out = np.array([[0.0, 1.0, 0.5]])
    target = np.array([[1.0, 0.0, 1.0]])
    with np.errstate(divide="ignore"):                 # log 0, as the Session runs it
        _, value = BCE().forward(out, target)
    ref = torch.nn.BCELoss()(torch.tensor(out), torch.tensor(target)).item()
    assert value == pytest.approx(ref, rel=1e-13)     # −log 0 clamped at 100, as torch


def test_cross_entropy_backward_recomputes_for_new_inputs():
    """The loss caches its log-softmax: a backward on other logits must not reuse it."""
    rng = np.random.default_rng(8)
    loss = CrossEntropy()
    a, b = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    target = np.array([0, 1, 2, 1])
    loss.forward(a, target)
    bt = t64(b)
    torch.nn.CrossEntropyLoss()(bt, torch.tensor(target)).backward()
    np.testing.assert_allclose(loss.backward(b, target), bt.grad.numpy(), rtol=1e-12)


# -- a whole network: every layer kind in one chain ----------------------------------------------

def test_sequential_backward_matches_autograd_and_finite_differences():
    rng = np.random.default_rng(9)
    layers = [Linear(0, 3, 5), Tanh(1), Linear(2, 5, 4), LeakyReLU(3, 0.05), Linear(4, 4, 4), Sigmoid(5),
              Linear(6, 4, 3), ReLU(7), Linear(8, 3, 3, bias=False), Identity(9)]
    model = Sequential(layers)
    params = {name: rng.standard_normal(shape) * 0.8 for name, shape in model.param_shapes.items()}
    params["6.bias"] = np.array([2.0, 2.5, 3.0])          # keep relu's inputs well away from 0
    x = rng.standard_normal((6, 3))
    target = rng.integers(0, 3, size=6)
    loss = CrossEntropy()
    outputs = model.forward(params, x)
    _, value = loss.forward(outputs[-1], target)
    deltas, grads = model.backward(params, x, outputs, loss.backward(outputs[-1], target), frozenset(params))
    assert all(abs(v) > 1e-3 for v in outputs[6].ravel())

    tp = {name: t64(p) for name, p in params.items()}
    h = torch.tensor(x)
    torch_outputs = []
    for layer in layers:
        if isinstance(layer, Linear):
            h = F.linear(h, tp[layer.weight], tp.get(layer.bias) if layer.has_bias else None)
        elif isinstance(layer, LeakyReLU):
            h = F.leaky_relu(h, 0.05)
        else:
            h = TORCH_ACTIVATION[layer.kind](h)
        h.retain_grad()
        torch_outputs.append(h)
    ref = torch.nn.CrossEntropyLoss()(h, torch.tensor(target))
    ref.backward()
    assert value == pytest.approx(ref.item(), rel=1e-13)
    for ours, theirs in zip(outputs, torch_outputs):
        np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-12, atol=1e-14)
    for ours, theirs in zip(deltas, torch_outputs):
        np.testing.assert_allclose(ours, theirs.grad.numpy(), rtol=1e-10, atol=1e-14)
    assert set(grads) == set(params)
    for name in params:
        np.testing.assert_allclose(grads[name], tp[name].grad.numpy(), rtol=1e-10, atol=1e-14)

    def f_of(name):
        def f(v):
            p = dict(params)
            p[name] = v
            return loss.forward(model.forward(p, x)[-1], target)[1]
        return f

    for name in params:
        np.testing.assert_allclose(grads[name], central_difference(f_of(name), params[name]), rtol=1e-5, atol=1e-8)

"""The layers softplus, elu, gelu, gelu_tanh and log_softmax and the loss nll, each added as one
class in one file: whole scenarios on both backends against torch autograd (written here
with torch.nn.functional, independently of gdstep's torch twins) and central finite
differences; what `chain_rule`, `explain` and `export` show for them; the scenario syntax;
and attach mode recognising the torch modules and losses as these kinds."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gdstep
from gdstep import arrays
from gdstep.backends.torch_layers import layer_kind
from gdstep.backends.torch_loss import ModuleLoss, loss_kind
from gdstep.errors import ScenarioError
from gdstep.fmt import num
from gdstep.nn.layers import ELU, GELU, LAYERS, GELUTanh, LogSoftmax, Softplus, keeps_finite
from gdstep.nn.losses import LOSSES, NLL
from gdstep.problem import prepare
from gdstep.scenario import LayerSpec, parse_scenario
from gdstep.script.export import worked_example

SINE = 'kind = "sine"\nn = 12'
BLOBS = 'kind = "blobs"\nn = 15\nclasses = 3\nstd = 1.5'
H = 1e-6


def scenario(layers: str, loss: str = "mse", data: str = SINE) -> str:
    return f"""name = "new concepts"
seed = 3

[data]
{data}

[model]
layers = {layers}

[loss]
kind = "{loss}"

[optimizer]
kind = "sgd"
lr = 0.1
"""


def lin(p, k, x):
    return F.linear(x, p[f"{k}.weight"], p.get(f"{k}.bias"))


# name: (layers, loss, data, the torch function of the hidden layer, torch loss)
CASES = {
    "softplus": ('[ { linear = 4 }, { softplus = 2.0, threshold = 1.5 }, { linear = 1 } ]', "mse", SINE,
                 lambda z: F.softplus(z, beta=2.0, threshold=1.5), F.mse_loss),
    "softplus default": ('[ { linear = 4 }, "softplus", { linear = 1 } ]', "mse", SINE, F.softplus, F.mse_loss),
    "elu": ('[ { linear = 4 }, { elu = 0.5 }, { linear = 1 } ]', "mse", SINE, lambda z: F.elu(z, 0.5), F.mse_loss),
    "elu default": ('[ { linear = 4 }, "elu", { linear = 1 } ]', "mse", SINE, F.elu, F.mse_loss),
    "gelu": ('[ { linear = 4 }, "gelu", { linear = 1 } ]', "mse", SINE, F.gelu, F.mse_loss),
    "gelu_tanh": ('[ { linear = 4 }, "gelu_tanh", { linear = 1 } ]', "mse", SINE,
                  lambda z: F.gelu(z, approximate="tanh"), F.mse_loss),
    "log_softmax": ('[ { linear = 4 }, "log_softmax", { linear = 1 } ]', "mse", SINE,
                    lambda z: F.log_softmax(z, dim=1), F.mse_loss),
    "nll": ('[ { linear = 4 }, "tanh", { linear = 3 }, "log_softmax" ]', "nll", BLOBS, torch.tanh,
            lambda out, t: F.nll_loss(F.log_softmax(out, dim=1), t)),
}


def reference(case: str, params, x, target):
    """The loss and its gradients by torch autograd, from the layers written out here."""
    _, _, _, act, loss_fn = CASES[case]
    p = {n: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True) for n, v in params.items()}
    xt = torch.tensor(np.asarray(x, dtype=np.float64))
    tt = torch.tensor(np.asarray(target))
    loss = loss_fn(lin(p, 2, act(lin(p, 0, xt))), tt)
    loss.backward()
    return loss.item(), {n: t.grad.numpy() for n, t in p.items()}


def open_both(tmp_path, case):
    layers, loss, data, _, _ = CASES[case]
    path = tmp_path / "s.toml"
    path.write_text(scenario(layers, loss, data))
    return (gdstep.open(path, backend="numpy"), gdstep.open(path, backend="torch", dtype="float64"))


def run_backward(s):
    start = {n: arrays.to_numpy(v).copy() for n, v in s.params.items()}
    s.forward()
    s.loss()
    s.backward()
    return start


@pytest.mark.parametrize("backend", [0, 1], ids=["numpy", "torch"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_loss_and_gradients_match_torch_autograd_and_finite_differences(tmp_path, case, backend):
    s = open_both(tmp_path, case)[backend]
    start = run_backward(s)
    fwd, rec, bwd = s.record("forward"), s.record("loss"), s.record("backward")
    value, grads = reference(case, start, arrays.to_numpy(fwd.inputs), arrays.to_numpy(rec.target))
    assert rec.value == pytest.approx(value, rel=1e-12)
    assert set(bwd.grads) == set(grads)
    for name, g in grads.items():
        np.testing.assert_allclose(arrays.to_numpy(bwd.grads[name]), g, rtol=1e-10, atol=1e-13, err_msg=name)

    _, x, y = s.current_batch()
    for name, shape in s.backend.param_shapes.items():
        numeric = np.zeros(shape)
        for index in np.ndindex(*shape):
            w = float(start[name][index])
            plus = s.backend.loss_value(x, y, {name: (index, w + H)})
            minus = s.backend.loss_value(x, y, {name: (index, w - H)})
            numeric[index] = (plus - minus) / (2 * H)
        np.testing.assert_allclose(arrays.to_numpy(bwd.grads[name]), numeric, rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("case", sorted(CASES))
def test_both_backends_agree_over_steps(tmp_path, case):
    a, b = open_both(tmp_path, case)
    a.step(5)
    b.step(5)
    for name in a.params:
        np.testing.assert_allclose(arrays.to_numpy(b.params[name]), a.params[name], rtol=1e-11, atol=1e-13)
    (la, acc_a), (lb, acc_b) = a.backend.evaluate(), b.backend.evaluate()
    assert lb == pytest.approx(la, rel=1e-11)
    assert acc_a == acc_b
    assert (acc_a is not None) == (case == "nll")


NUMBER = r"\(?(-?[0-9.]+(?:e[-+]?\d+)?)\)?"


def numbers_of(line: str, pattern: str) -> list[float]:
    m = re.search(pattern.replace("N", NUMBER), line)
    assert m, line
    return [float(v) for v in m.groups()]


@pytest.mark.parametrize("backend", [0, 1], ids=["numpy", "torch"])
@pytest.mark.parametrize("case", ["softplus", "softplus default", "elu", "elu default", "gelu", "gelu_tanh"])
def test_chain_rule_shows_the_activation_derivative(tmp_path, case, backend):
    s = open_both(tmp_path, case)[backend]
    run_backward(s)
    i = 1
    c = s.chain_rule("0.weight", (i, 0))
    layer = s.backend.layers[1].layer
    assert f"({layer.derivative_text})" in c.delta_line
    assert layer.kind.split("_")[0] in layer.derivative_text
    upstream, fprime, delta = numbers_of(c.delta_line, r"· f'\(z\[0,1\]\) = N × N = N")
    z = torch.tensor(arrays.to_numpy(s.record("forward").outputs[0])[0, i], dtype=torch.float64, requires_grad=True)
    CASES[case][3](z.reshape(1, 1)).sum().backward()                 # f'(z) by autograd
    assert fprime == pytest.approx(z.grad.item(), abs=1e-6)
    bwd = s.record("backward")
    assert upstream == pytest.approx(arrays.element(bwd.deltas[1], (0, i)), abs=1e-6)
    assert delta == pytest.approx(arrays.element(bwd.deltas[0], (0, i)), abs=1e-6)


@pytest.mark.parametrize("backend", [0, 1], ids=["numpy", "torch"])
def test_chain_rule_through_log_softmax_is_the_vector_jacobian_product(tmp_path, backend):
    s = open_both(tmp_path, "log_softmax")[backend]
    run_backward(s)
    i = 2
    c = s.chain_rule("0.weight", (i, 0))
    assert "log_softmax: δz = δa − softmax(z)·Σ_j δa[j]" in c.delta_line
    upstream, softmax_i, total, delta = numbers_of(c.delta_line, r"· Σ_j ∂L/∂a\[0,j\] = N − N × N = N")
    fwd, bwd = s.record("forward"), s.record("backward")
    z = arrays.to_numpy(fwd.outputs[0])[0]
    da = arrays.to_numpy(bwd.deltas[1])[0]
    assert softmax_i == pytest.approx(torch.softmax(torch.tensor(z), dim=0)[i].item(), abs=1e-6)
    assert total == pytest.approx(float(da.sum()), abs=1e-6)
    assert upstream == pytest.approx(float(da[i]), abs=1e-6)
    assert delta == pytest.approx(upstream - softmax_i * total, abs=1e-5)
    # δ itself, by autograd: ∂L/∂z of layer 0 through log_softmax and the last linear layer
    zt = torch.tensor(arrays.to_numpy(fwd.outputs[0]), requires_grad=True)
    (F.log_softmax(zt, dim=1) * torch.tensor(arrays.to_numpy(bwd.deltas[1]))).sum().backward()
    assert delta == pytest.approx(zt.grad[0, i].item(), abs=1e-6)
    assert arrays.element(bwd.deltas[0], (0, i)) == pytest.approx(zt.grad[0, i].item(), rel=1e-10)


@pytest.mark.parametrize("backend", [0, 1], ids=["numpy", "torch"])
def test_chain_rule_of_nll_after_log_softmax(tmp_path, backend):
    s = open_both(tmp_path, "nll")[backend]
    run_backward(s)
    rec = s.record("loss")
    t0, b = int(arrays.to_numpy(rec.target)[0]), len(arrays.to_numpy(rec.target))
    for i in range(3):
        c = s.chain_rule("2.weight", (i, 0))
        assert "log_softmax: δz = δa − softmax(z)·Σ_j δa[j]" in c.delta_line
        loss_line = c.lines[-1]
        assert "= −onehot(t) / B = " in loss_line and "loss nll" in loss_line
        (upstream,) = numbers_of(loss_line, r"−onehot\(t\) / B = N")
        assert upstream == pytest.approx(-1.0 / b if i == t0 else 0.0, abs=1e-6)
        # δ of the last linear layer is softmax(z) − onehot(t), over B
        (delta,) = numbers_of(c.delta_line, r"= N   \(log_softmax")
        p = torch.softmax(torch.tensor(arrays.to_numpy(s.record("forward").outputs[2])[0]), dim=0)[i].item()
        assert delta == pytest.approx((p - (i == t0)) / b, abs=1e-6)


@pytest.mark.parametrize("case", sorted(CASES))
def test_explain_and_export_show_the_concept_with_its_numbers(tmp_path, case):
    s = open_both(tmp_path, case)[0]
    start = run_backward(s)
    fwd, rec = s.record("forward"), s.record("loss")
    value, grads = reference(case, start, fwd.inputs, rec.target)
    s.update()
    ex = s.explain("0.weight", (1, 0))
    assert ex.grad == pytest.approx(grads["0.weight"][1, 0], rel=1e-10)
    assert ex.w_new == pytest.approx(start["0.weight"][1, 0] - 0.1 * grads["0.weight"][1, 0], rel=1e-12)

    md = worked_example(s)
    layer = s.backend.layers[1]
    assert f"**Layer 1: {layer.text}** — $${LAYERS[layer.kind].tex}$$" in md
    assert f"$${LOSSES[s.scenario.loss.kind].tex}$$" in md
    assert f"**L = {num(value)}**" in md
    if case == "nll":
        assert f"**Layer 3: LogSoftmax(dim=1)** — $${LogSoftmax.tex}$$" in md
        assert NLL.tex in md


# -- the scenario syntax -------------------------------------------------------------------------

def layers_of(text: str):
    return parse_scenario(scenario(text)).model.layers


def test_scenario_names_the_new_layers():
    specs = layers_of('[ { linear = 3 }, "softplus", { softplus = 2 }, { softplus = 0.5, threshold = 4 }, "elu", '
                      '{ elu = 0.5 }, "gelu", "gelu_tanh", "log_softmax", { linear = 1 } ]')
    assert specs[1:9] == (LayerSpec("softplus"), LayerSpec("softplus", beta=2.0), LayerSpec("softplus", 0.5, 4.0),
                          LayerSpec("elu"), LayerSpec("elu", alpha=0.5), LayerSpec("gelu"), LayerSpec("gelu_tanh"),
                          LayerSpec("log_softmax"))
    assert (specs[1].beta, specs[1].threshold, specs[4].alpha) == (1.0, 20.0, 1.0)
    assert [str(x) for x in specs[1:9]] == ["softplus(1)", "softplus(2)", "softplus(0.5, threshold=4)", "elu(1)",
                                            "elu(0.5)", "gelu", "gelu_tanh", "log_softmax"]
    net = parse_scenario(scenario('[ { linear = 3 }, { softplus = 2, threshold = 4 }, { elu = 0.5 }, { linear = 1 } ]')).build_model()
    sp, elu = net.layers[1], net.layers[2]
    assert isinstance(sp, Softplus) and (sp.beta, sp.threshold) == (2.0, 4.0)
    assert isinstance(elu, ELU) and elu.alpha == 0.5


def scenario_error(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text)
    return info.value


@pytest.mark.parametrize("layers, where, message", [
    ('[ { linear = 4 }, { softplus = 0 }, { linear = 1 } ]', "model.layers[1].softplus", "beta must be positive"),
    ('[ { linear = 4 }, { elu = 0.5, beta = 1 }, { linear = 1 } ]', "model.layers[1].beta", "unknown key"),
    ('[ { linear = 4 }, { gelu = 1 }, { linear = 1 } ]', "model.layers[1]", "{ softplus = BETA } or { elu = ALPHA }"),
    ('[ { linear = 4 }, "gelu_tan", { linear = 1 } ]', "model.layers[1]", "did you mean 'gelu_tanh'"),
    ('[ { linear = 4 }, { elu = "big" }, { linear = 1 } ]', "model.layers[1].elu", "expected a number"),
])
def test_bad_new_layers_are_named(layers, where, message):
    e = scenario_error(scenario(layers))
    assert e.where == where and message in str(e)


def test_nll_takes_log_probabilities_and_class_labels():
    e = scenario_error(scenario('[ { linear = 3 } ]', "nll", BLOBS))
    assert e.where == "loss.kind" and 'end model.layers with "log_softmax"' in str(e)
    e = scenario_error(scenario('[ { linear = 2 }, "log_softmax" ]', "nll", BLOBS))
    assert e.where == "model.layers" and "nll needs one output per class" in str(e)
    s = parse_scenario(scenario('[ { linear = 3 }, "log_softmax" ]', "nll", BLOBS))
    targets = prepare(s).y
    assert s.is_classifier and targets.dtype == np.int64 and targets.ndim == 1
    assert str(s.loss) == "nll"


# -- the kinds' own properties -------------------------------------------------------------------

def test_softplus_follows_torch_beta_and_threshold():
    x = np.array([[-3.0, -0.4, 0.3, 1.9, 2.1, 30.0, 800.0]])
    for beta, threshold in [(1.0, 20.0), (2.0, 4.0), (0.5, 1.0)]:
        layer = Softplus(0, beta, threshold)
        xt = torch.tensor(x, requires_grad=True)
        ref = F.softplus(xt, beta=beta, threshold=threshold)
        np.testing.assert_allclose(layer.forward({}, x), ref.detach().numpy(), rtol=1e-14)
        g = np.arange(1.0, 8.0).reshape(1, -1)
        (ref * torch.tensor(g)).sum().backward()
        gx, _ = layer.backward({}, x, layer.forward({}, x), g, frozenset())
        np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-14)


@pytest.mark.parametrize("layer, module", [
    (ELU(0, 0.3), torch.nn.ELU(0.3)), (Softplus(0, 3.0, 2.0), torch.nn.Softplus(3.0, 2.0)),
    (GELU(0), torch.nn.GELU()), (GELUTanh(0), torch.nn.GELU(approximate="tanh")), (LogSoftmax(0), torch.nn.LogSoftmax(dim=1)),
])
def test_torch_twin_and_recognition(layer, module):
    x = np.random.default_rng(0).normal(0, 2, (4, 5))
    twin = layer.torch_module().double()
    assert type(twin) is type(module) and repr(twin) == repr(module.double())
    np.testing.assert_allclose(layer.forward({}, x), module(torch.tensor(x)).numpy(), rtol=1e-13, atol=1e-15)
    assert layer_kind(module) == layer.kind
    assert keeps_finite(layer.kind) == (layer.kind != "log_softmax")


def test_other_torch_variants_keep_their_class_names():
    assert layer_kind(torch.nn.LogSoftmax(dim=0)) == "LogSoftmax"
    assert loss_kind(torch.nn.NLLLoss()) == "nll"
    assert loss_kind(torch.nn.NLLLoss(weight=torch.ones(3))) == "NLLLoss"
    assert loss_kind(torch.nn.NLLLoss(reduction="sum")) == "NLLLoss"


def test_a_users_nll_loss_reports_accuracy_as_nll():
    logp = F.log_softmax(torch.tensor([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 0.0, 0.5]]), dim=1)
    target = torch.tensor([0, 1, 2])
    for fn in (torch.nn.NLLLoss(), torch.nn.NLLLoss(weight=torch.tensor([1.0, 2.0, 3.0]))):
        loss = ModuleLoss(fn)
        per_sample, value = loss(logp, target)
        assert value.item() == pytest.approx(fn(logp, target).item())
        assert loss.accuracy(logp, target) == pytest.approx(2 / 3)
    per_sample, value = ModuleLoss(torch.nn.NLLLoss())(logp, target)
    np.testing.assert_allclose(per_sample.numpy(), -logp[torch.arange(3), target].numpy())


def test_a_python_scenario_with_the_new_modules_is_read_as_these_kinds(tmp_path):
    path = tmp_path / "model.py"
    path.write_text("""
import torch
from torch import nn
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(2, 4), nn.Softplus(beta=2.0), nn.Linear(4, 4), nn.GELU(approximate="tanh"),
                      nn.Linear(4, 3), nn.LogSoftmax(dim=1))
loss_fn = nn.NLLLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
data = (torch.randn(12, 2, dtype=torch.float64), torch.randint(0, 3, (12,)))
""", encoding="utf-8")
    s = gdstep.open(path, dtype="float64")
    assert [info.kind for info in s.backend.layers] == ["linear", "softplus", "linear", "gelu_tanh", "linear", "log_softmax"]
    assert s.scenario.loss.kind == "nll" and s.scenario.is_classifier
    s.forward()
    s.loss()
    s.backward()
    c = s.chain_rule("0.weight", (1, 0))
    assert "softplus'(z) = σ(β·z), 1 where β·z > 20; β = 2" in c.delta_line
    assert "log_softmax: δz" in s.chain_rule("4.weight", (0, 0)).delta_line
    _, accuracy = s.backend.evaluate()
    out = s.backend.model(s.backend.x)
    assert accuracy == pytest.approx((out.argmax(1) == s.backend.y).double().mean().item())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_bce_gradient_where_y_times_one_minus_y_underflows_is_torchs_to_the_bit(dtype):
    """torch clamps y·(1 − y) at a float 1e-12 (9.99999996e-13 as a double), not at 1e-12."""
    from gdstep.nn.losses import loss_class

    y = torch.tensor([[1e-13], [1 - 1e-14], [3e-13], [0.3]], dtype=dtype, requires_grad=True)
    t = torch.tensor([[0.0], [1.0], [1.0], [1.0]], dtype=dtype)
    F.binary_cross_entropy(y, t).backward()
    mine = loss_class("bce")().backward(y.detach().numpy(), t.numpy())
    assert mine.dtype == y.grad.numpy().dtype
    assert np.array_equal(mine, y.grad.numpy())

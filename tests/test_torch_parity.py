"""The torch backend against the numpy engine, in float64: the same scenario, the same start,
the same batches. Every optimizer and option, every loss, every layer kind, the bundled
scenarios: parameters after 50 steps equal to 1e-10; and the records of every phase."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import gdstep
from gdstep.backends.numpy_backend import NumpyBackend
from gdstep.backends.torch_backend import TorchBackend
from gdstep.scenario import load_scenario, parse_scenario
from gdstep.session import Session
from optim_cases import ALL_ON, CASES, case_id

STEPS = 50
SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"

LOSSES = ["mse", "sse", "half_sse", "mae", "huber", "bce", "cross_entropy"]


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)


def make_scenario(loss: str, kind: str, args: dict, layers: str | None = None, extra: str = "") -> str:
    if loss == "cross_entropy":
        data = 'kind = "blobs"\nn = 24\nclasses = 3\nfeatures = 2'
        default = '[ { linear = 5 }, "tanh", { linear = 3 } ]'
    elif loss == "bce":
        data = 'kind = "moons"\nn = 24'
        default = '[ { linear = 5 }, "tanh", { linear = 1 }, "sigmoid" ]'
    else:
        data = 'kind = "linear"\nn = 24\nfeatures = 2'
        default = '[ { linear = 5 }, "tanh", { linear = 1 } ]'
    if loss in ("sse", "half_sse"):          # sums over the batch: a smaller step keeps training stable
        args = {**args, "lr": args["lr"] / 8}
    opt = "\n".join(f"{k} = {_toml_value(v)}" for k, v in args.items())
    delta = "\ndelta = 0.3" if loss == "huber" else ""
    return f"""
name = "{loss} {kind}"
seed = 4
[data]
{data}
[model]
layers = {layers or default}
init = "xavier"
{extra}
[loss]
kind = "{loss}"{delta}
[optimizer]
kind = "{kind}"
{opt}
[training]
batch_size = 8
shuffle = true
"""


def pair(text, steps: int = STEPS, device: str | None = None):
    sc = load_scenario(text) if isinstance(text, Path) else parse_scenario(text)
    a = Session(sc, NumpyBackend(sc, "float64"))
    b = Session(sc, TorchBackend(sc, device=device, dtype="float64"))
    for s in (a, b):
        s.seek(4 * steps)
    return a, b


def assert_params_equal(a, b, tol=1e-10):
    pa, pb = a.params, b.params
    assert pa.keys() == pb.keys()
    for name in pa:
        np.testing.assert_allclose(pb[name], pa[name], rtol=tol, atol=tol, err_msg=name)


def assert_state_equal(a, b, tol=1e-10):
    sa, sb = a.optimizer_state, b.optimizer_state
    assert sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].keys() == sb[name].keys(), name
        for key, value in sa[name].items():
            other = sb[name][key]
            if value is None:
                assert other is None
            else:
                np.testing.assert_allclose(np.asarray(other, dtype=float), np.asarray(value, dtype=float),
                                           rtol=tol, atol=tol, err_msg=f"{name} {key}")


@pytest.mark.parametrize("index, item", list(enumerate(CASES)), ids=[case_id(o) for o in CASES])
def test_every_optimizer_option_matches_numpy_after_50_steps(index, item):
    kind, args = item
    loss = LOSSES[index % len(LOSSES)]              # every option, the losses in turn
    a, b = pair(make_scenario(loss, kind, args))
    assert_params_equal(a, b)
    assert_state_equal(a, b)
    assert b.loss_value == pytest.approx(a.loss_value, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("kind", list(ALL_ON))
def test_every_optimizer_with_every_loss(kind, loss):
    a, b = pair(make_scenario(loss, kind, ALL_ON[kind]))
    assert_params_equal(a, b)
    assert_state_equal(a, b)


def test_the_options_cover_every_hyperparameter():
    from gdstep.optim import OPTIMIZERS
    import dataclasses
    for kind, cls in OPTIMIZERS.items():
        names = {f.name for f in dataclasses.fields(cls)} - {"lr"}
        used = set().union(*(set(a) for k, a in CASES if k == kind)) | set(ALL_ON[kind])
        assert names <= used, (kind, names - used)


@pytest.mark.parametrize("layers", [
    '[ { linear = 4 }, "relu", { linear = 3 }, "sigmoid", { linear = 1 } ]',
    '[ { leaky_relu = 0.2 }, { linear = 4 }, { leaky_relu = 0.1 }, { linear = 1, bias = false }, "identity" ]',
    '[ { linear = 1 } ]',
])
def test_every_layer_kind_matches_numpy(layers):
    a, b = pair(make_scenario("mse", "adam", {"lr": 0.02}, layers=layers))
    assert_params_equal(a, b)


def test_frozen_parameters_stay_and_match():
    text = make_scenario("mse", "sgd", {"lr": 0.1, "momentum": 0.9}, extra='frozen = ["0.bias", "2.weight"]')
    a, b = pair(text)
    assert_params_equal(a, b)
    sc = parse_scenario(text)
    start = Session(sc, TorchBackend(sc, dtype="float64"))
    np.testing.assert_array_equal(b.params["0.bias"], start.params["0.bias"])
    assert set(b.record("update").params) == {"0.weight", "2.bias"}
    assert not b.backend.model[0].bias.requires_grad


@pytest.mark.parametrize("path", sorted(p for p in SCENARIOS.glob("*.toml") if p.name != "lessons.toml"),
                         ids=lambda p: p.stem)                  # lessons.toml is the lesson catalogue
def test_bundled_scenarios_match_numpy_after_50_steps(path):
    a, b = pair(path)
    pa, pb = a.params, b.params
    for name in pa:          # the overshoot scenario grows to 1e10 and beyond: relative
        np.testing.assert_allclose(pb[name], pa[name], rtol=1e-10, atol=1e-10, equal_nan=True, err_msg=name)


def assert_close(x, y, tol=1e-12):
    if x is None or y is None:
        assert x is None and y is None
        return
    np.testing.assert_allclose(gdstep.arrays.to_numpy(y), np.asarray(x), rtol=tol, atol=tol)


@pytest.mark.parametrize("loss", ["half_sse", "cross_entropy", "bce", "huber"])
def test_records_of_every_phase_match_numpy(loss):
    text = make_scenario(loss, "adam", {"lr": 0.05}, layers=None if loss != "half_sse" else
                         '[ { linear = 4 }, "sigmoid", { linear = 2 }, "relu", { linear = 1 } ]')
    a, b = pair(text, steps=3)
    for _ in range(2):
        fa, fb = a.forward(), b.forward()
        np.testing.assert_array_equal(fa.indices, fb.indices)
        assert fa.layer_names == fb.layer_names
        assert_close(fa.inputs, fb.inputs)
        for x, y in zip(fa.outputs, fb.outputs):
            assert_close(x, y)
        la, lb = a.loss(), b.loss()
        assert lb.value == pytest.approx(la.value, rel=1e-12)
        assert_close(la.per_sample, lb.per_sample)
        ba, bb = a.backward(), b.backward()
        assert_close(ba.grad_output, bb.grad_output)
        assert len(ba.deltas) == len(bb.deltas)
        for x, y in zip(ba.deltas, bb.deltas):
            assert_close(x, y)
        for name in ba.grads:
            assert_close(ba.grads[name], bb.grads[name])
            assert bb.grad_norms[name] == pytest.approx(ba.grad_norms[name], rel=1e-12)
        assert bb.grad_norm == pytest.approx(ba.grad_norm, rel=1e-12)
        ua, ub = a.update(), b.update()
        assert ua.lr == ub.lr and ua.step == ub.step
        for name, u in ua.params.items():
            v = ub.params[name]
            for part in ("old", "grad", "new"):
                assert_close(getattr(u, part), getattr(v, part))
            for when in ("state_before", "state_after"):
                sa, sb = getattr(u, when), getattr(v, when)
                assert sa.keys() == sb.keys()
                for key in sa:
                    assert_close(sa[key], sb[key])


@pytest.mark.parametrize("kind", ["sgd", "rmsprop", "adagrad", "adam", "adamw"])
def test_explain_on_torch_equals_numpy(kind):
    a, b = pair(make_scenario("mse", kind, ALL_ON[kind]), steps=4)
    for s in (a, b):
        s.step(1)
    for name, index in [("0.weight", (1, 0)), ("2.bias", (0,))]:
        ea, eb = a.explain(name, index), b.explain(name, index)
        assert ea.optimizer == eb.optimizer == kind
        assert [t.symbol for t in ea.terms] == [t.symbol for t in eb.terms]
        assert [t.formula for t in ea.terms] == [t.formula for t in eb.terms]
        for ta, tb in zip(ea.terms, eb.terms):
            assert tb.value == pytest.approx(ta.value, rel=1e-12, abs=1e-15)
        assert eb.w_new == pytest.approx(ea.w_new, rel=1e-12)
        assert eb.note is None                    # the terms reproduce torch's float64 update
    ca, cb = a.chain_rule("2.weight", (0, 1)), b.chain_rule("2.weight", (0, 1))
    assert cb.value == pytest.approx(ca.value, rel=1e-12)


def test_explain_before_the_first_step_shows_the_initial_state():
    """torch creates Adam's state at the first step; the record shows numpy's initial state."""
    a, b = pair(make_scenario("mse", "adam", {"lr": 0.01}), steps=0)
    for s in (a, b):
        s.step(1)
    before = b.record("update").params["0.weight"].state_before
    assert before["step"] == 0 and float(before["exp_avg"].abs().sum()) == 0.0
    assert str(b.explain("0.weight", (0, 0))) == str(a.explain("0.weight", (0, 0)))
    assert isinstance(b.record("update").params["0.weight"].state_after["step"], int)


def test_settings_changes_match_numpy():
    text = make_scenario("cross_entropy", "sgd", {"lr": 0.05})
    a, b = pair(text, steps=5)
    for s in (a, b):
        s.set(lr=0.2)
        s.step(5)
        s.set(optimizer="adam", lr=0.01, amsgrad=True)
        s.step(5)
        s.set(batch_size=5)
        s.step(5)
    assert_params_equal(a, b)
    assert_state_equal(a, b)
    assert isinstance(b.backend.torch_optimizer, torch.optim.Adam)


def test_parity_report_agrees_and_reads_as_a_table():
    report = gdstep.open("xor").compare_backends(steps=3)
    assert report.ok and report.max_relative < 1e-12
    text = str(report)
    assert "0.weight" in text and "max |numpy − torch|" in text and "agree" in text
    assert math.isfinite(report.max_relative)

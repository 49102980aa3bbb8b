"""Every optimizer and option of the numpy engine against torch.optim, step for step.

Both run 35 steps in float64 from the same parameters on the same gradient sequence (the
gradients of a fixed quadratic at the current parameters, plus seeded noise); parameters and
the optimizer state (torch's own key names) must agree to 1e-10 after every step. Then the
per-element `terms()` that the debugger prints are checked against the vectorized update
and the state, and their m̂, v̂ against the formula.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gdstep.optim import OPTIMIZERS, make_optimizer
from optim_cases import CASES, TORCH as TORCH_NAMES, case_id

STEPS = 35
SHAPES = {"0.weight": (3, 4), "0.bias": (3,)}

TORCH = {kind: getattr(torch.optim, name) for kind, name in TORCH_NAMES.items()}


def test_every_optimizer_and_option_is_covered():
    assert set(OPTIMIZERS) == set(TORCH)
    options = {
        "sgd": {"momentum", "dampening", "nesterov", "weight_decay"},
        "rmsprop": {"alpha", "eps", "momentum", "centered", "weight_decay"},
        "adagrad": {"lr_decay", "eps", "weight_decay", "initial_accumulator_value"},
        "adam": {"betas", "eps", "weight_decay", "amsgrad"},
        "adamw": {"betas", "eps", "weight_decay", "amsgrad"},
    }
    for kind, wanted in options.items():
        used = set().union(*(set(args) for k, args in CASES if k == kind))
        assert wanted <= used, (kind, wanted - used)


def start_params() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(10)
    return {name: rng.standard_normal(shape) for name, shape in SHAPES.items()}


class GradientSequence:
    """∇ of ½Σ a·(w − c)² at w, plus seeded noise: a deterministic function of (step, w)."""

    def __init__(self):
        rng = np.random.default_rng(11)
        self.a = {n: rng.uniform(0.5, 3.0, s) for n, s in SHAPES.items()}
        self.c = {n: rng.standard_normal(s) for n, s in SHAPES.items()}
        self.noise = [{n: 0.3 * rng.standard_normal(s) for n, s in SHAPES.items()} for _ in range(STEPS)]

    def __call__(self, step: int, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {n: self.a[n] * (p - self.c[n]) + self.noise[step][n] for n, p in params.items()}


def torch_state_value(v):
    if isinstance(v, torch.Tensor):
        return v.detach().numpy()
    return v


@pytest.mark.parametrize("config", CASES, ids=case_id)
def test_numpy_optimizer_matches_torch_optim(config):
    kind, args = config
    opt = make_optimizer(kind, **args)
    grads_of = GradientSequence()

    params = start_params()
    state = {n: opt.init(p) for n, p in params.items()}
    tparams = {n: torch.nn.Parameter(torch.tensor(p, dtype=torch.float64)) for n, p in params.items()}
    topt = TORCH[kind](list(tparams.values()), **args)

    for step in range(STEPS):
        grads = grads_of(step, params)
        for n, p in params.items():
            params[n], state[n] = opt.update(p, grads[n], state[n])
        for n, t in tparams.items():
            t.grad = torch.tensor(grads[n], dtype=torch.float64)
        topt.step()

        for n, t in tparams.items():
            np.testing.assert_allclose(params[n], t.detach().numpy(), rtol=1e-10, atol=1e-10,
                                       err_msg=f"{n} after step {step + 1}")
            tstate = topt.state[t]
            ours = {k: v for k, v in state[n].items() if v is not None}
            assert set(ours) == set(tstate), (step, sorted(ours), sorted(tstate))
            for key, value in tstate.items():
                ref = torch_state_value(value)
                if key == "step":
                    assert float(ours[key]) == float(ref) == step + 1
                else:
                    np.testing.assert_allclose(ours[key], ref, rtol=1e-10, atol=1e-10,
                                               err_msg=f"{n} state {key} after step {step + 1}")
    # the run moved the parameters: a no-op optimizer could not pass
    assert not np.allclose(params["0.weight"], start_params()["0.weight"], atol=1e-3)


def test_update_is_pure():
    """update() returns new arrays and leaves its inputs alone (the history keeps references)."""
    grads_of = GradientSequence()
    for kind, args in CASES:
        opt = make_optimizer(kind, **args)
        params = start_params()
        state = {n: opt.init(p) for n, p in params.items()}
        for step in range(3):
            grads = grads_of(step, params)
            before_p = {n: p.copy() for n, p in params.items()}
            before_s = {n: {k: (None if v is None else np.array(v, copy=True)) for k, v in s.items()} for n, s in state.items()}
            before_g = {n: g.copy() for n, g in grads.items()}
            new = {n: opt.update(params[n], grads[n], state[n]) for n in params}
            for n in params:
                np.testing.assert_array_equal(params[n], before_p[n])
                np.testing.assert_array_equal(grads[n], before_g[n])
                for k, v in state[n].items():
                    if v is None:
                        assert before_s[n][k] is None
                    else:
                        np.testing.assert_array_equal(v, before_s[n][k])
            params = {n: new[n][0] for n in params}
            state = {n: new[n][1] for n in params}


# -- terms: the per-element arithmetic the debugger prints ---------------------------------------

# term symbol -> the state key it equals after the update
TERM_STATE = {
    "sgd": {"b": "momentum_buffer"},
    "rmsprop": {"v": "square_avg", "ḡ": "grad_avg", "b": "momentum_buffer"},
    "adagrad": {"sum": "sum", "t": "step"},
    "adam": {"m": "exp_avg", "v": "exp_avg_sq", "v_max": "max_exp_avg_sq", "t": "step"},
    "adamw": {"m": "exp_avg", "v": "exp_avg_sq", "v_max": "max_exp_avg_sq", "t": "step"},
}


def element_state(state, index):
    out = {}
    for k, v in state.items():
        if v is None or isinstance(v, (int, float)):
            out[k] = v
        else:
            out[k] = float(v[index])
    return out


@pytest.mark.parametrize("config", CASES, ids=case_id)
def test_terms_agree_with_the_vectorized_update_and_state(config):
    kind, args = config
    opt = make_optimizer(kind, **args)
    grads_of = GradientSequence()
    params = start_params()
    state = {n: opt.init(p) for n, p in params.items()}
    seen_symbols = set()
    for step in range(8):
        grads = grads_of(step, params)
        for n in params:
            new_p, new_s = opt.update(params[n], grads[n], state[n])
            for index in [(0, 0), (2, 3), (1, 2)] if n == "0.weight" else [(0,), (2,)]:
                w, g = float(params[n][index]), float(grads[n][index])
                terms = opt.terms(w, g, element_state(state[n], index))
                by_symbol = {}
                for term in terms:
                    by_symbol[term.symbol] = term.value   # a later "g" (after decay) replaces the first
                seen_symbols |= set(by_symbol)
                assert terms[0].symbol == "g" and terms[0].value == g
                assert terms[-1].symbol == "W_new"
                assert terms[-1].value == pytest.approx(float(new_p[index]), rel=1e-12, abs=1e-14)
                for symbol, key in TERM_STATE[kind].items():
                    if symbol in by_symbol:
                        assert key in new_s, (symbol, key)
                        assert float(by_symbol[symbol]) == pytest.approx(float(new_s[key] if key == "step" else new_s[key][index]),
                                                                         rel=1e-12, abs=1e-15), symbol
                if kind in ("adam", "adamw"):
                    b1, b2 = opt.betas
                    t = step + 1
                    assert by_symbol["m̂"] == pytest.approx(float(new_s["exp_avg"][index]) / (1 - b1**t), rel=1e-12)
                    second = new_s["max_exp_avg_sq"] if opt.amsgrad else new_s["exp_avg_sq"]
                    v_hat = by_symbol["v̂_max" if opt.amsgrad else "v̂"]
                    assert v_hat == pytest.approx(float(second[index]) / (1 - b2**t), rel=1e-12)
                    assert by_symbol["denom"] == pytest.approx(math.sqrt(v_hat) + opt.eps, rel=1e-12)
                if kind == "rmsprop":
                    v = float(new_s["square_avg"][index])
                    ga = float(new_s["grad_avg"][index]) if opt.centered else 0.0
                    assert by_symbol["denom"] == pytest.approx(math.sqrt(v - ga * ga) + opt.eps, rel=1e-12)
                if kind == "adagrad":
                    assert by_symbol["denom"] == pytest.approx(math.sqrt(float(new_s["sum"][index])) + opt.eps, rel=1e-12)
                    if opt.lr_decay:
                        assert by_symbol["η_t"] == pytest.approx(opt.lr / (1 + step * opt.lr_decay), rel=1e-14)
            params[n], state[n] = new_p, new_s
    # the terms name what the optimizer keeps
    expected = {s for s, k in TERM_STATE[kind].items() if k in state["0.weight"]}
    assert expected <= seen_symbols, expected - seen_symbols


def test_sgd_first_momentum_buffer_is_the_gradient():
    opt = make_optimizer("sgd", lr=0.1, momentum=0.9, dampening=0.5)
    w, g = np.array([1.0, -2.0]), np.array([0.5, 0.25])
    new, state = opt.update(w, g, opt.init(w))
    np.testing.assert_array_equal(state["momentum_buffer"], g)        # not (1 − τ)·g on the first step
    np.testing.assert_allclose(new, w - 0.1 * g, rtol=0, atol=1e-16)
    terms = opt.terms(1.0, 0.5, {"momentum_buffer": None})
    assert [t.symbol for t in terms] == ["g", "b", "W_new"]
    assert terms[1].value == 0.5 and terms[-1].value == pytest.approx(0.95, abs=1e-16)


@pytest.mark.parametrize("kind, args, message", [
    ("sgd", {"lr": -0.1}, "lr"),
    ("sgd", {"lr": 0.1, "nesterov": True}, "nesterov"),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "dampening": 0.1, "nesterov": True}, "nesterov"),
    ("adam", {"betas": (0.9, 1.0)}, "betas"),
    ("adam", {"eps": -1e-8}, "eps"),
    ("rmsprop", {"alpha": -0.5}, "alpha"),
    ("adagrad", {"lr_decay": -1.0}, "lr_decay"),
    ("sgd", {"lr": 0.1, "betas": (0.9, 0.99)}, "betas"),
])
def test_bad_hyperparameters_are_refused_as_torch_does(kind, args, message):
    with pytest.raises(ValueError, match=message):
        make_optimizer(kind, **args)
    if "betas" in args and kind == "sgd":
        return
    with pytest.raises(ValueError):
        TORCH[kind]([torch.nn.Parameter(torch.zeros(2))], **args)


def test_terms_print_as_one_equation_each():
    opt = make_optimizer("adam", lr=0.01)
    terms = opt.terms(0.5, -0.1, {"step": 2, "exp_avg": 0.01, "exp_avg_sq": 0.001})
    lines = {t.symbol: str(t) for t in terms}
    assert lines["t"] == "t = step = 3"                       # a count, not 3.000000
    assert lines["g"] == "g = ∂L/∂W = -0.100000"
    m = 0.01 + 0.1 * (-0.1 - 0.01)
    assert lines["m"] == f"m = β₁·m + (1 − β₁)·g = 0.9 × 0.010000 + 0.1 × (-0.100000) = {m:.6f}"


def same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_terms_are_the_update_itself(case):
    """One formula serves both: in float64 every term that names state, and W_new, equal the
    vectorized update bit for bit, also where a value goes non-finite (an inf, then a NaN
    gradient, which amsgrad's max carries on as torch.maximum does)."""
    kind, args = case
    opt = make_optimizer(kind, **args)
    grads_of = GradientSequence()
    w = start_params()["0.weight"]
    state = opt.init(w)
    for step in range(6):
        g = grads_of(step, {"0.weight": w})["0.weight"]
        g[1, 1] = math.inf if step == 2 else math.nan if step == 3 else g[1, 1]
        with np.errstate(all="ignore"):
            new_w, new_s = opt.update(w, g, state)
        for index in [(0, 0), (1, 1), (2, 3)]:
            terms = opt.terms(float(w[index]), float(g[index]), element_state(state, index))
            assert terms[-1].symbol == "W_new" and same(terms[-1].value, float(new_w[index])), (step, index)
            for term in terms:
                key = TERM_STATE[kind].get(term.symbol)
                if key is not None and key != "step":
                    assert same(term.value, float(new_s[key][index])), (step, index, term)
        w, state = new_w, new_s

"""The arithmetic of one element, with its real numbers: the optimizer's update of a weight
(`explain`) and, after backward, the chain rule that produced its gradient (`chain_rule`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gdstep import arrays
from gdstep.errors import GdstepError, index_problem
from gdstep.fmt import factor, index_text, num
from gdstep.nn.layers import is_affine
from gdstep.nn.losses import loss_class
from gdstep.optim.base import Term


@dataclass(frozen=True)
class Explanation:
    """One element's update: every term of the optimizer's formula with its value."""

    name: str
    index: tuple[int, ...]
    step: int                         # the update's step (0 = the first update)
    optimizer: str
    w_old: float
    grad: float
    w_new: float                      # what the backend computed
    terms: tuple[Term, ...]
    state_before: dict[str, float | None]
    state_after: dict[str, float | None]
    note: str | None = None           # where the backend's arithmetic differs from the float64 terms

    @property
    def text(self) -> str:
        """The final line: `W_new = 0.400000 − 0.5 × 0.082167 = 0.358916`."""
        last = self.terms[-1]
        return f"W_new = {last.numbers} = {num(self.w_new)}"

    @property
    def lines(self) -> tuple[str, ...]:
        out = [str(t) for t in self.terms[:-1]]
        last = self.terms[-1]
        out.append(f"W_new = {last.formula} = {last.numbers} = {num(self.w_new)}")
        if self.note:
            out.append(self.note)
        return tuple(out)

    def __str__(self) -> str:
        head = f"{self.name}{index_text(self.index)} · {self.optimizer} · update {self.step + 1}"
        return "\n".join([head, *self.lines])


def _scalars(state: dict[str, Any], index: tuple[int, ...]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key, value in state.items():
        if value is None:
            out[key] = None
        elif isinstance(value, (int, float)):
            out[key] = value
        elif arrays.shape(value) == ():
            out[key] = float(arrays.to_numpy(value))
        else:
            out[key] = arrays.element(value, index)
    return out


def _check_index(name: str, shape: tuple[int, ...], index: tuple[int, ...]) -> None:
    problem = index_problem(name, shape, index)
    if problem:
        raise GdstepError(problem)


def explain(session, name: str, index: tuple[int, ...]) -> Explanation:
    if name not in session.backend.param_shapes:
        raise GdstepError(f"no parameter {name!r} (parameters: {', '.join(session.backend.param_shapes)})")
    _check_index(name, session.backend.param_shapes[name], index)
    rec = session.record("update")
    if rec is None:
        raise GdstepError("no update has run yet: explain shows the latest update")
    if name not in rec.params:
        joint = hasattr(getattr(session.backend, "torch_optimizer", None), "optimizers")
        raise GdstepError(f"{name} has no update in the latest iteration (another optimizer's step: its own "
                          "iterations update it)" if joint else f"{name} is frozen: it has no update")
    u = rec.params[name]
    w_old, g, w_new = arrays.element(u.old, index), arrays.element(u.grad, index), arrays.element(u.new, index)
    before, after = _scalars(u.state_before, index), _scalars(u.state_after, index)
    opt = rec.optimizer
    if hasattr(session.backend, "config_for") and len(session.backend.torch_optimizer.param_groups) > 1:
        opt = session.backend.config_for(name, rec.step)      # the parameter's own group's values
    note = None
    if hasattr(opt, "terms"):
        terms = tuple(opt.terms(w_old, g, before))
        exact = terms[-1].value
        note = _difference(w_old, w_new, exact, session.backend.dtype)
    else:
        delta = w_new - w_old
        terms = (Term("g", "∂L/∂W", num(g), g),
                 Term("ΔW", f"{type(opt).__name__}'s step", num(delta), delta),
                 Term("W_new", "W_old + ΔW", f"{num(w_old)} + {factor(num(delta))}", w_new))
    kind = getattr(opt, "kind", type(opt).__name__)
    return Explanation(name, index, rec.step, kind, w_old, g, w_new, terms, before, after, note)


def _difference(w_old: float, w_new: float, exact: float, dtype: str) -> str | None:
    """What to say where the parameter the backend wrote differs from the terms' W_new (in
    float64): a step the dtype's rounding swallowed, a ΔW it changed, or other arithmetic."""
    if exact == w_new or (math.isnan(exact) and math.isnan(w_new)):
        return None
    delta, applied = exact - w_old, w_new - w_old        # exact in float64: w_old, w_new are dtype values
    if math.isfinite(delta) and delta != 0 and applied == 0:
        return (f"(ΔW = {delta:.3g} is absorbed by {dtype} rounding: W_old + ΔW rounds back to W_old, "
                "so this element did not change)")
    scale = max(abs(exact), abs(w_new), 1e-300)
    tolerance = 1e-12 if dtype == "float64" else 1e-5          # a few roundings of the dtype
    if abs(exact - w_new) / scale > tolerance:
        return f"(the terms, in float64, give {exact:.9g}; the backend's {dtype} arithmetic gave {w_new:.9g})"
    if math.isfinite(delta) and abs(applied - delta) > 1e-3 * abs(delta):
        return (f"(the applied ΔW is {applied:.6g}, not {delta:.6g}: {dtype} rounds W_old + ΔW "
                f"to the nearest {dtype} number, {abs(applied - delta) / abs(delta):.1%} off)")
    return None


@dataclass(frozen=True)
class ChainRule:
    """How backprop made one gradient: ∂L/∂W[i,j] = Σ_n δ[n,i] · a[n,j] (n: the sample)."""

    name: str
    index: tuple[int, ...]
    layer: int
    products: tuple[tuple[int, float, float], ...]   # (sample, δ, input) per sample of the batch
    value: float
    delta_line: str | None
    lines: tuple[str, ...]

    def __str__(self) -> str:
        return "\n".join(self.lines)


def _loss_grad(kind: str) -> str:
    """∂L/∂y as its loss class writes it."""
    return getattr(loss_class(kind), "grad_formula", "∂L/∂y")


def chain_rule(session, name: str, index: tuple[int, ...], shown: int = 4) -> ChainRule:
    if name not in session.backend.param_shapes:
        raise GdstepError(f"no parameter {name!r} (parameters: {', '.join(session.backend.param_shapes)})")
    _check_index(name, session.backend.param_shapes[name], index)
    bwd, fwd = session.record("backward"), session.record("forward")
    if bwd is None or fwd is None:
        raise GdstepError("no backward has run yet: the chain rule needs δ from the backward phase")
    layer_text, _, kind = name.partition(".")
    layers = session.backend.layers
    if not layer_text.isdigit() or int(layer_text) >= len(layers) or not is_affine(layers[int(layer_text)].kind):
        raise GdstepError(f"the chain rule is shown for the linear layers of a scenario model, not {name}")
    k = int(layer_text)
    i = index[0]
    delta = arrays.to_numpy(_kept(bwd.deltas, k, f"δ of layer {k}", bwd.step))[:, i]
    if kind == "weight":
        j = index[1]
        inputs = arrays.to_numpy(_kept(fwd.outputs, k - 1, f"the output of layer {k - 1}", fwd.step) if k
                                 else fwd.inputs)[:, j]
        symbol = f"a{k - 1}" if k else "x"
        head = f"∂L/∂W{index_text(index)} = Σ_n δ[n,{i}] · {symbol}[n,{j}]   (n: the sample; δ = ∂L/∂z of layer {k}, {symbol} = its input)"
    else:
        inputs = [1.0] * len(delta)
        head = f"∂L/∂b[{i}] = Σ_n δ[n,{i}]   (n: the sample; δ = ∂L/∂z of layer {k})"
    products = tuple((b, float(d), float(a)) for b, (d, a) in enumerate(zip(delta, inputs)))
    value = arrays.element(bwd.grads[name], index) if name in bwd.grads else float(sum(d * a for _, d, a in products))
    if kind == "weight":
        parts = [f"{factor(num(d))} × {factor(num(a))}" for _, d, a in products[:shown]]
    elif len(products) == 1:         # one sample: the sum is its δ (its value is the next line)
        parts = [f"δ[0,{i}]"]
    else:
        parts = [factor(num(d)) for _, d, _ in products[:shown]]
    more = f" + … ({len(products)} samples)" if len(products) > shown else ""
    lines = [head, "  = " + " + ".join(parts) + more, f"  = {num(value)}"]
    delta_line = None
    outputs = fwd.outputs
    after = layers[k + 1].layer if k + 1 < len(layers) else None     # the layer z goes into
    if after is not None:
        z, a, upstream = (arrays.to_numpy(_kept(ts, n, what, bwd.step))[0] for ts, n, what in (
            (outputs, k, f"the output of layer {k}"), (outputs, k + 1, f"the output of layer {k + 1}"),
            (bwd.deltas, k + 1, f"δ of layer {k + 1}")))
        delta_line = after.delta_line(i, z, a, upstream, float(delta[0]))
    elif k == len(layers) - 1:
        loss_kind = session.scenario.loss.kind
        delta_line = f"δ[0,{i}] = ∂L/∂y[0,{i}] = {_loss_grad(loss_kind)} = {num(delta[0])}   (loss {loss_kind})"
    if delta_line:
        lines.append(delta_line)
        upstream_line = _upstream_line(session, fwd, bwd, k, i, shown)
        if upstream_line:
            lines.append(upstream_line)
    return ChainRule(name, index, k, products, value, delta_line, tuple(lines))


def _kept(values: tuple, k: int, what: str, step: int) -> Any:
    """values[k] of a record, or why the chain rule cannot be shown: a layer that did not run
    has none, and watch mode lets a layer's output and δ go as the loop makes them where it
    expects to recompute the iteration: the records of one that then cannot be recomputed
    lack them (the event log says so)."""
    if k >= len(values) or values[k] is None:
        raise GdstepError(f"iteration {step + 1}: {what} was not recorded (the layer did not run, or watch mode let "
                          "it go as the loop ran, and the iteration cannot be recomputed: the event log then says "
                          "why), so the chain rule cannot be shown for it")
    return values[k]


def _upstream_line(session, fwd, bwd, k: int, i: int, shown: int) -> str | None:
    """Where ∂L/∂a of the activation after layer k comes from: back through the next
    linear layer (Σ_j δ[0,j]·W[j,i]), or the loss itself when the activation is the output."""
    layers = session.backend.layers
    if k + 1 >= len(layers) or is_affine(layers[k + 1].kind):
        return None
    upstream = arrays.element(bwd.deltas[k + 1], (0, i))
    if k + 1 == len(layers) - 1:
        loss_kind = session.scenario.loss.kind
        y = arrays.element(fwd.outputs[k + 1], (0, i))
        return (f"∂L/∂a[0,{i}] = ∂L/∂y[0,{i}] = {_loss_grad(loss_kind)} = {factor(num(upstream))}"
                f"   (y[0,{i}] = {num(y)}, loss {loss_kind})")
    nxt = k + 2
    if nxt >= len(layers) or not is_affine(layers[nxt].kind):
        return None
    weight_name = f"{nxt}.weight"
    upd = session.record("update")
    if upd is not None and upd.step == bwd.step and weight_name in upd.params:
        weight = upd.params[weight_name].old          # the weights backward used, before this update
    else:
        weight = session.backend.params()[weight_name]
    delta_next = arrays.to_numpy(_kept(bwd.deltas, nxt, f"δ of layer {nxt}", bwd.step))[0]
    column = arrays.to_numpy(weight)[:, i]
    parts = [f"{factor(num(d))} × {factor(num(w))}" for d, w in list(zip(delta_next, column))[:shown]]
    more = f" + … ({len(column)} terms)" if len(column) > shown else ""
    return (f"∂L/∂a[0,{i}] = Σ_j δ{nxt}[0,j] · W{nxt}[j,{i}] = " + " + ".join(parts) + more
            + f" = {factor(num(upstream))}   (back through layer {nxt})")

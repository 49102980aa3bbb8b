"""What every optimizer shares: the update and the terms from one formula, weight decay, the
argument checks.

An optimizer is a frozen dataclass of hyperparameters with two pure functions, as in optax:
`init(param) -> state` and `update(param, grad, state) -> (new_param, new_state)`, on one
parameter at a time, with torch.optim's state names. `terms(w, g, state)` runs the same
formula on a single element and returns every intermediate, so the arithmetic can be shown
with the real numbers; its first term is `g`, its last `W_new`.

A subclass writes `init` and `formula(ops, w, g, state) -> (w_new, new_state)` once (see
gdstep.optim.ops), and names its torch twin: `torch_twins`, the torch.optim class names and
param-group flags that are this optimizer, the first the one the torch backend builds.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import numpy as np

from gdstep.errors import HyperparameterError
from gdstep.fmt import factor, hp, num
from gdstep.optim.ops import ARRAYS, Ops, Recording, Term, scalar

State = Mapping[str, Any]

__all__ = ["Optimizer", "State", "Term", "check_hyperparameters"]


class Optimizer:
    kind: ClassVar[str]
    lr: float
    weight_decay: float
    # State that can turn non-finite while the parameter stays finite (v = inf makes the
    # step 0), so a run checks it apart; a non-finite buffer that feeds the step linearly
    # shows in the parameter. With finite gradients of finite norm these stay finite too.
    guarded_state: ClassVar[tuple[str, ...]] = ()
    # The state `bound_after` bounds (a run reads these norms at a full test).
    bounded_state: ClassVar[tuple[str, ...]] = ()
    # torch.optim spellings of this optimizer: (class name, param-group flags that must hold,
    # an absent flag counting as false); the first is what the torch backend builds.
    torch_twins: ClassVar[tuple[tuple[str, Mapping[str, bool]], ...]] = ()
    tex: ClassVar[tuple[str, ...]] = ()        # the update in TeX, one display line each, for `export`
    # AdamW's W·(1 − η·λ) before the step, instead of L2's g + λ·W.
    decoupled_weight_decay: ClassVar[bool] = False

    __slots__ = ()

    def __post_init__(self) -> None:
        check_hyperparameters(self)

    def init(self, param: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError

    def bound_after(self, hyper: Mapping[str, Any], bounds: Mapping[str, float], grad: float,
                    eps: float, tiny: float) -> dict[str, float] | None:
        """Bounds on every |element| of the parameters ("param") and of this optimizer's
        `bounded_state` after one update with these hyperparameters (torch's param group),
        from bounds before it (the same keys) and `grad` ≥ every |gradient element|, in a
        dtype of machine epsilon `eps` and smallest normal `tiny`; None where none follows.
        A run that knows them under the dtype's range need not read what the update changed
        to know it finite (`backends.update_bound`)."""
        return None

    def _hyper(self, hyper: Mapping[str, Any], name: str) -> float:
        """A hyperparameter as a float: the group's, else this optimizer's own."""
        value = hyper.get(name, getattr(self, name))
        return float(value)

    def _bounded_grad(self, hyper: Mapping[str, Any], bounds: Mapping[str, float], grad: float, slack: float) -> float:
        """A bound on the gradient the formula uses: g, or g + λ·W with L2 weight decay."""
        lam = 0.0 if self.decoupled_weight_decay else abs(self._hyper(hyper, "weight_decay"))
        return (grad + lam * bounds["param"]) * slack if lam else grad

    def formula(self, ops: Ops, w: Any, g: Any, state: State) -> tuple[Any, dict[str, Any]]:
        """The update, written once for `ops` = ARRAYS or a Recording; the last term is W_new."""
        raise NotImplementedError

    def update(self, param: np.ndarray, grad: np.ndarray, state: State) -> tuple[np.ndarray, dict[str, Any]]:
        return self.formula(ARRAYS, param, grad, state)

    def terms(self, w: float, g: float, state: Mapping[str, float | None]) -> list[Term]:
        ops = Recording()
        g = ops.term("g", "∂L/∂W", scalar(g), lambda: num(g))
        with np.errstate(all="ignore"):
            self.formula(ops, scalar(w), g, {k: scalar(v) for k, v in state.items()})
        return ops.terms

    def decay(self, ops: Ops, w: Any, g: Any) -> tuple[Any, Any]:
        """Weight decay, for every optimizer that has it: L2 in the gradient, `g + λ·W`, as
        torch's weight_decay; or decoupled, `W·(1 − η·λ)` before the step, as AdamW."""
        lam = self.weight_decay
        if not lam:
            return w, g
        if self.decoupled_weight_decay:
            return ops.term("W", "W_old·(1 − η·λ)", w * (1 - self.lr * lam),
                            lambda: f"{num(w)} × (1 − {hp(self.lr)} × {hp(lam)})"), g
        return w, ops.term("g", "g + λ·W", g + lam * w, lambda: f"{num(g)} + {hp(lam)} × {factor(num(w))}")


def check_hyperparameters(opt: Any) -> None:
    """torch.optim's own argument checks, raised as HyperparameterError naming the field."""
    for f in dataclasses.fields(opt):
        value = getattr(opt, f.name)
        if f.name == "betas":
            if not (isinstance(value, tuple) and len(value) == 2):
                raise HyperparameterError("betas", f"expected two numbers, got {value!r}")
            for i, b in enumerate(value):
                if not 0.0 <= b < 1.0:
                    raise HyperparameterError("betas", f"beta{i + 1} must be in [0, 1), got {b}")
        elif isinstance(value, bool):
            continue
        elif isinstance(value, (int, float)) and value < 0:
            raise HyperparameterError(f.name, f"must be >= 0, got {value}")
    if getattr(opt, "nesterov", False) and (opt.momentum <= 0 or opt.dampening != 0):
        raise HyperparameterError("nesterov", "needs momentum > 0 and dampening = 0")

"""Adagrad as torch.optim.Adagrad: lr_decay, initial_accumulator_value, eps outside the root."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gdstep.fmt import factor, hp, num
from gdstep.optim.base import Optimizer, State
from gdstep.optim.ops import Ops


@dataclass(frozen=True, slots=True)
class Adagrad(Optimizer):
    lr: float = 1e-2
    lr_decay: float = 0.0
    weight_decay: float = 0.0
    initial_accumulator_value: float = 0.0
    eps: float = 1e-10
    kind: ClassVar[str] = "adagrad"
    guarded_state: ClassVar[tuple[str, ...]] = ("sum",)
    bounded_state: ClassVar[tuple[str, ...]] = ("sum",)
    torch_twins: ClassVar = (("Adagrad", {}),)
    tex: ClassVar[tuple[str, ...]] = (                 # the update as `export` writes it
        r"s \leftarrow s + g^2",
        r"W_{\text{new}} = W_{\text{old}} - \frac{\eta}{1 + (t - 1)\,\text{lr\_decay}}\,\frac{g}{\sqrt{s} + \epsilon}",
    )

    def init(self, param: np.ndarray) -> dict[str, Any]:
        return {"step": 0, "sum": np.full_like(param, self.initial_accumulator_value)}

    def bound_after(self, hyper, bounds, grad, eps, tiny):
        slack = 1 + 16 * eps
        lr, lr_decay, e, lam = (self._hyper(hyper, n) for n in ("lr", "lr_decay", "eps", "weight_decay"))
        s = bounds.get("sum")
        if s is None or not (e >= 4 * tiny and lr_decay >= 0 and 0 <= lr < math.inf and math.isfinite(lam)):
            return None
        g = self._bounded_grad(hyper, bounds, grad, slack)
        # the step η_t·g/(√sum + ε), η_t ≤ η, its denominator at least ε (rounded: ε/2)
        return {"sum": (s + g * g) * slack,
                "param": (bounds["param"] + lr * g / (e / 2) * slack) * slack}

    def formula(self, ops: Ops, w: Any, g: Any, state: State) -> tuple[Any, dict[str, Any]]:
        lr, lr_decay, eps = self.lr, self.lr_decay, self.eps
        w, g = self.decay(ops, w, g)
        t = int(state["step"]) + 1
        ops.term("t", "step", t, lambda: str(t))
        clr, lr_symbol = lr / (1 + (t - 1) * lr_decay), "η"
        if lr_decay:
            clr = ops.term("η_t", "η / (1 + (t − 1)·lr_decay)", clr,
                           lambda: f"{hp(lr)} / (1 + {t - 1} × {hp(lr_decay)})")
            lr_symbol = "η_t"
        s_prev = state["sum"]
        s = ops.term("sum", "sum + g²", s_prev + g * g, lambda: f"{num(s_prev)} + {factor(num(g))}²")
        denom = ops.sqrt(s)
        denom += eps
        denom = ops.term("denom", "√sum + ε", denom, lambda: f"√{num(s)} + {hp(eps)}")
        w_new = ops.term("W_new", f"W_old − {lr_symbol}·g / denom", w - clr * (g / denom),
                         lambda: f"{num(w)} − {hp(clr)} × {factor(num(g))} / {num(denom)}")
        return w_new, {"step": t, "sum": s}

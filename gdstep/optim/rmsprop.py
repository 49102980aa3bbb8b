"""RMSprop as torch.optim.RMSprop: square_avg, optional centering (grad_avg) and momentum."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gdstep.fmt import factor, hp, num
from gdstep.optim.base import Optimizer, State
from gdstep.optim.ops import Ops


@dataclass(frozen=True, slots=True)
class RMSprop(Optimizer):
    lr: float = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    centered: bool = False
    kind: ClassVar[str] = "rmsprop"
    guarded_state: ClassVar[tuple[str, ...]] = ("square_avg",)
    bounded_state: ClassVar[tuple[str, ...]] = ("square_avg", "momentum_buffer")
    torch_twins: ClassVar = (("RMSprop", {}),)
    tex: ClassVar[tuple[str, ...]] = (                 # the update as `export` writes it
        r"v \leftarrow \alpha v + (1 - \alpha)\,g^2",
        r"W_{\text{new}} = W_{\text{old}} - \eta\,\frac{g}{\sqrt{v} + \epsilon}",
    )

    def init(self, param: np.ndarray) -> dict[str, Any]:
        state: dict[str, Any] = {"step": 0, "square_avg": np.zeros_like(param)}
        if self.momentum > 0:
            state["momentum_buffer"] = np.zeros_like(param)
        if self.centered:
            state["grad_avg"] = np.zeros_like(param)
        return state

    def bound_after(self, hyper, bounds, grad, eps, tiny):
        slack = 1 + 16 * eps
        lr, alpha, e, mu, lam = (self._hyper(hyper, n) for n in ("lr", "alpha", "eps", "momentum", "weight_decay"))
        v = bounds.get("square_avg")
        if (v is None or hyper.get("centered", self.centered)          # √(v − ḡ²) may round to NaN
                or not (e >= 4 * tiny and 0 <= alpha <= 1 and 0 <= lr < math.inf
                        and math.isfinite(mu) and math.isfinite(lam))):
            return None
        g = self._bounded_grad(hyper, bounds, grad, slack)
        out = {"square_avg": max(v, g * g) * slack}
        step = g / (e / 2) * slack                              # g/(√v + ε)
        if mu > 0:
            b = bounds.get("momentum_buffer")
            if b is None:
                return None
            step = out["momentum_buffer"] = (mu * b + step) * slack
        out["param"] = (bounds["param"] + lr * step * slack) * slack
        return out

    def formula(self, ops: Ops, w: Any, g: Any, state: State) -> tuple[Any, dict[str, Any]]:
        alpha, mu, eps = self.alpha, self.momentum, self.eps
        w, g = self.decay(ops, w, g)
        v_prev = state["square_avg"]
        v = ops.term("v", "α·v + (1 − α)·g²", alpha * v_prev + (1 - alpha) * (g * g),
                     lambda: f"{hp(alpha)} × {num(v_prev)} + {hp(1 - alpha)} × {factor(num(g))}²")
        new_state: dict[str, Any] = {"step": int(state["step"]) + 1, "square_avg": v}
        if self.centered:
            ga_prev = state["grad_avg"]
            ga = new_state["grad_avg"] = ops.term(
                "ḡ", "α·ḡ + (1 − α)·g", ga_prev + (1 - alpha) * (g - ga_prev),
                lambda: f"{hp(alpha)} × {factor(num(ga_prev))} + {hp(1 - alpha)} × {factor(num(g))}")
            denom = ops.sqrt(v - ga * ga)
            denom += eps
            denom = ops.term("denom", "√(v − ḡ²) + ε", denom,
                             lambda: f"√({num(v)} − {factor(num(ga))}²) + {hp(eps)}")
        else:
            denom = ops.sqrt(v)
            denom += eps
            denom = ops.term("denom", "√v + ε", denom, lambda: f"√{num(v)} + {hp(eps)}")
        if mu > 0:
            b_prev = state["momentum_buffer"]
            b = new_state["momentum_buffer"] = ops.term(
                "b", "μ·b + g / denom", mu * b_prev + g / denom,
                lambda: f"{hp(mu)} × {factor(num(b_prev))} + {factor(num(g))} / {num(denom)}")
            w_new = ops.term("W_new", "W_old − η·b", w - self.lr * b,
                             lambda: f"{num(w)} − {hp(self.lr)} × {factor(num(b))}")
        else:
            w_new = ops.term("W_new", "W_old − η·g / denom", w - self.lr * (g / denom),
                             lambda: f"{num(w)} − {hp(self.lr)} × {factor(num(g))} / {num(denom)}")
        return w_new, new_state

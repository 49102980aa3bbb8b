"""SGD as torch.optim.SGD: weight decay, momentum (first buffer = the gradient), dampening, nesterov."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gdstep.fmt import factor, hp, num
from gdstep.optim.base import Optimizer, State
from gdstep.optim.ops import Ops


@dataclass(frozen=True, slots=True)
class SGD(Optimizer):
    lr: float = 1e-3
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    kind: ClassVar[str] = "sgd"
    torch_twins: ClassVar = (("SGD", {}),)
    bounded_state: ClassVar[tuple[str, ...]] = ("momentum_buffer",)
    tex: ClassVar[tuple[str, ...]] = (                 # the update as `export` writes it
        r"b \leftarrow \mu\,b + (1 - \tau)\,g \quad (\text{with momentum; } b = g \text{ at the first step})",
        r"W_{\text{new}} = W_{\text{old}} - \eta\,g \quad (\text{or } - \eta\,b \text{ with momentum})",
    )

    def init(self, param: np.ndarray) -> dict[str, Any]:
        return {"momentum_buffer": None} if self.momentum else {}

    def bound_after(self, hyper, bounds, grad, eps, tiny):
        slack = 1 + 16 * eps
        lr, mu, damp, lam = (self._hyper(hyper, n) for n in ("lr", "momentum", "dampening", "weight_decay"))
        if not (0 <= lr < math.inf and math.isfinite(mu) and math.isfinite(damp) and math.isfinite(lam)):
            return None
        g = self._bounded_grad(hyper, bounds, grad, slack)
        out, step = {}, g
        if mu != 0:
            b = bounds.get("momentum_buffer")
            if b is None:                                       # the first step makes it: b = g
                return None
            b = out["momentum_buffer"] = (abs(mu) * b + abs(1 - damp) * g) * slack
            step = (g + abs(mu) * b) * slack if hyper.get("nesterov", self.nesterov) else b
        out["param"] = (bounds["param"] + lr * step * slack) * slack
        return out

    def formula(self, ops: Ops, w: Any, g: Any, state: State) -> tuple[Any, dict[str, Any]]:
        mu, tau = self.momentum, self.dampening
        w, g = self.decay(ops, w, g)
        d_p, d_p_symbol, new_state = g, "g", {}
        if mu:
            b_prev = state.get("momentum_buffer")
            if b_prev is None:
                b = ops.term("b", "g   (first step: the buffer starts as the gradient)", g, lambda: num(g))
            else:
                b = ops.term("b", "μ·b + (1 − τ)·g", mu * b_prev + (1 - tau) * g,
                             lambda: f"{hp(mu)} × {factor(num(b_prev))} + {hp(1 - tau)} × {factor(num(g))}")
            new_state["momentum_buffer"] = b
            if self.nesterov:
                d_p = ops.term("g", "g + μ·b", g + mu * b, lambda: f"{num(g)} + {hp(mu)} × {factor(num(b))}")
            else:
                d_p, d_p_symbol = b, "b"
        w_new = ops.term("W_new", f"W_old − η·{d_p_symbol}", w - self.lr * d_p,
                         lambda: f"{num(w)} − {hp(self.lr)} × {factor(num(d_p))}")
        return w_new, new_state

"""Adam as torch.optim.Adam: bias correction and eps placement exactly as torch.

torch computes `denom = sqrt(v) / sqrt(1 − β₂ᵗ) + ε` and `W −= (η / (1 − β₁ᵗ)) · m / denom`;
that is `m̂ / (sqrt(v̂) + ε)` up to rounding, and the terms show both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gdstep.fmt import factor, hp, num
from gdstep.optim.base import Optimizer, State
from gdstep.optim.ops import Ops


@dataclass(frozen=True, slots=True)
class Adam(Optimizer):
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False
    kind: ClassVar[str] = "adam"
    guarded_state: ClassVar[tuple[str, ...]] = ("exp_avg_sq", "max_exp_avg_sq")
    bounded_state: ClassVar[tuple[str, ...]] = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    torch_twins: ClassVar = (("Adam", {"decoupled_weight_decay": False}),)
    tex: ClassVar[tuple[str, ...]] = (                 # the update as `export` writes it
        r"m \leftarrow \beta_1 m + (1 - \beta_1)\,g, \qquad v \leftarrow \beta_2 v + (1 - \beta_2)\,g^2",
        r"\hat m = \frac{m}{1 - \beta_1^t}, \qquad \hat v = \frac{v}{1 - \beta_2^t}",
        r"W_{\text{new}} = W_{\text{old}} - \eta\,\frac{\hat m}{\sqrt{\hat v} + \epsilon}",
    )

    def init(self, param: np.ndarray) -> dict[str, Any]:
        state = {"step": 0, "exp_avg": np.zeros_like(param), "exp_avg_sq": np.zeros_like(param)}
        if self.amsgrad:
            state["max_exp_avg_sq"] = np.zeros_like(param)
        return state

    def bound_after(self, hyper, bounds, grad, eps, tiny):
        slack = 1 + 16 * eps
        lr, lam, e = (self._hyper(hyper, n) for n in ("lr", "weight_decay", "eps"))
        beta1, beta2 = (float(b) for b in hyper.get("betas", self.betas))
        m, v = bounds.get("exp_avg"), bounds.get("exp_avg_sq")
        if (m is None or v is None or not (e >= 4 * tiny and 0 <= beta1 < 1 and 0 <= beta2 < 1
                                           and 0 <= lr < math.inf and math.isfinite(lam))):
            return None
        w = bounds["param"]
        if hyper.get("decoupled_weight_decay", self.decoupled_weight_decay):
            w, g = w * abs(1 - lr * lam) * slack, grad          # W·(1 − η·λ) first
        else:
            g = (grad + abs(lam) * w) * slack                   # g + λ·W
        m, v = max(m, g) * slack, max(v, g * g) * slack         # averages: never above the larger
        out = {"exp_avg": m, "exp_avg_sq": v}
        if "max_exp_avg_sq" in bounds:
            out["max_exp_avg_sq"] = max(bounds["max_exp_avg_sq"], v)
        # the step η/(1 − β₁ᵗ)·m/(√v̂ + ε), its denominator at least ε (rounded: ε/2)
        out["param"] = (w + lr * m / ((1 - beta1) * e / 2) * slack) * slack
        return out

    def formula(self, ops: Ops, w: Any, g: Any, state: State) -> tuple[Any, dict[str, Any]]:
        (beta1, beta2), lr, eps = self.betas, self.lr, self.eps
        w, g = self.decay(ops, w, g)
        t = int(state["step"]) + 1
        ops.term("t", "step", t, lambda: str(t))
        m_prev, v_prev = state["exp_avg"], state["exp_avg_sq"]
        m = g - m_prev                                    # torch's lerp_: m + (1 − β₁)·(g − m)
        m *= 1 - beta1
        m += m_prev
        m = ops.term("m", "β₁·m + (1 − β₁)·g", m,
                     lambda: f"{hp(beta1)} × {factor(num(m_prev))} + {hp(1 - beta1)} × {factor(num(g))}")
        v = g * g
        v *= 1 - beta2
        scratch = v_prev * beta2
        v += scratch                                      # β₂·v + (1 − β₂)·g²
        v = ops.term("v", "β₂·v + (1 − β₂)·g²", v,
                     lambda: f"{hp(beta2)} × {num(v_prev)} + {hp(1 - beta2)} × {factor(num(g))}²")
        new_state = {"step": t, "exp_avg": m, "exp_avg_sq": v}
        second, v_name, v_hat_name = v, "v", "v̂"
        if self.amsgrad:
            v_max_prev = state["max_exp_avg_sq"]
            second = new_state["max_exp_avg_sq"] = ops.term(
                "v_max", "max(v_max, v)", ops.maximum(v_max_prev, v), lambda: f"max({num(v_max_prev)}, {num(v)})")
            v_name, v_hat_name = "v_max", "v̂_max"
        bias_correction1, bias_correction2 = 1 - beta1**t, 1 - beta2**t
        m_hat = ops.aside("m̂", "m / (1 − β₁ᵗ)", lambda: m / bias_correction1,
                          lambda: f"{num(m)} / (1 − {hp(beta1)}^{t})")
        v_hat = ops.aside(v_hat_name, f"{v_name} / (1 − β₂ᵗ)", lambda: second / bias_correction2,
                          lambda: f"{num(second)} / (1 − {hp(beta2)}^{t})")
        denom = ops.sqrt(second, out=scratch)
        denom /= math.sqrt(bias_correction2)
        denom += eps                                      # √v / √(1 − β₂ᵗ) + ε
        denom = ops.term("denom", f"√{v_hat_name} + ε", denom, lambda: f"√{num(v_hat)} + {hp(eps)}")
        step = ops.divide(m, denom, out=denom)
        step *= lr / bias_correction1
        w_symbol = "W" if self.decoupled_weight_decay and self.weight_decay else "W_old"
        w_new = ops.term("W_new", f"{w_symbol} − η·m̂ / denom", ops.subtract(w, step, out=step),
                         lambda: f"{num(w)} − {hp(lr)} × {factor(num(m_hat))} / {num(denom)}")
        return w_new, new_state

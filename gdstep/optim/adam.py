"""Adam and AdamW as torch.optim: bias correction and eps placement exactly as torch.

torch computes `denom = sqrt(v) / sqrt(1 − β₂ᵗ) + ε` and `W −= (η / (1 − β₁ᵗ)) · m / denom`;
that is `m̂ / (sqrt(v̂) + ε)` up to rounding, and the terms show both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from gdstep.fmt import factor, hp, num
from gdstep.optim.base import State, Term, check_hyperparameters


@dataclass(frozen=True, slots=True)
class Adam:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False
    kind: ClassVar[str] = "adam"
    guarded_state: ClassVar[tuple[str, ...]] = ("exp_avg_sq", "max_exp_avg_sq")
    decoupled: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_hyperparameters(self)

    def init(self, param: np.ndarray) -> dict[str, Any]:
        state = {"step": 0, "exp_avg": np.zeros_like(param), "exp_avg_sq": np.zeros_like(param)}
        if self.amsgrad:
            state["max_exp_avg_sq"] = np.zeros_like(param)
        return state

    def update(self, param: np.ndarray, grad: np.ndarray, state: State) -> tuple[np.ndarray, dict[str, Any]]:
        beta1, beta2 = self.betas
        step = state["step"] + 1
        if self.weight_decay:
            if self.decoupled:
                param = param * (1 - self.lr * self.weight_decay)
            else:
                grad = grad + self.weight_decay * param
        m_prev = state["exp_avg"]
        exp_avg = np.subtract(grad, m_prev)               # torch's lerp_(grad, 1 − β₁): m + (1 − β₁)·(g − m)
        exp_avg *= 1 - beta1
        exp_avg += m_prev
        exp_avg_sq = np.multiply(grad, grad)
        exp_avg_sq *= 1 - beta2
        decayed = np.multiply(state["exp_avg_sq"], beta2)
        exp_avg_sq += decayed                             # β₂·v + (1 − β₂)·g²
        new_state = {"step": step, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
        bias_correction1 = 1 - beta1**step
        bias_correction2_sqrt = math.sqrt(1 - beta2**step)
        second = exp_avg_sq
        if self.amsgrad:
            second = new_state["max_exp_avg_sq"] = np.maximum(state["max_exp_avg_sq"], exp_avg_sq)
        denom = np.sqrt(second, out=decayed)
        denom /= bias_correction2_sqrt
        denom += self.eps                                 # √v / √(1 − β₂ᵗ) + ε
        step_ = np.divide(exp_avg, denom, out=denom)
        step_ *= self.lr / bias_correction1
        return np.subtract(param, step_, out=step_), new_state

    def terms(self, w: float, g: float, state: Mapping[str, float | None]) -> list[Term]:
        beta1, beta2 = self.betas
        t = int(state["step"]) + 1
        out = [Term("g", "∂L/∂W", num(g), g)]
        w_old = w
        if self.weight_decay and self.decoupled:
            w = w * (1 - self.lr * self.weight_decay)
            out.append(Term("W", "W_old·(1 − η·λ)", f"{num(w_old)} × (1 − {hp(self.lr)} × {hp(self.weight_decay)})", w))
        elif self.weight_decay:
            g_decayed = g + self.weight_decay * w
            out.append(Term("g", "g + λ·W", f"{num(g)} + {hp(self.weight_decay)} × {factor(num(w))}", g_decayed))
            g = g_decayed
        m_prev, v_prev = float(state["exp_avg"]), float(state["exp_avg_sq"])
        m = m_prev + (1 - beta1) * (g - m_prev)
        v = beta2 * v_prev + (1 - beta2) * (g * g)
        out.append(Term("t", "step", str(t), t))
        out.append(Term("m", "β₁·m + (1 − β₁)·g",
                        f"{hp(beta1)} × {factor(num(m_prev))} + {hp(1 - beta1)} × {factor(num(g))}", m))
        out.append(Term("v", "β₂·v + (1 − β₂)·g²",
                        f"{hp(beta2)} × {num(v_prev)} + {hp(1 - beta2)} × {factor(num(g))}²", v))
        second, v_name = v, "v̂"
        if self.amsgrad:
            v_max_prev = float(state["max_exp_avg_sq"])
            second = max(v_max_prev, v)
            out.append(Term("v_max", "max(v_max, v)", f"max({num(v_max_prev)}, {num(v)})", second))
            v_name = "v̂_max"
        bias_correction1, bias_correction2 = 1 - beta1**t, 1 - beta2**t
        m_hat = m / bias_correction1
        v_hat = second / bias_correction2
        out.append(Term("m̂", "m / (1 − β₁ᵗ)", f"{num(m)} / (1 − {hp(beta1)}^{t})", m_hat))
        out.append(Term(v_name, f"{'v_max' if self.amsgrad else 'v'} / (1 − β₂ᵗ)",
                        f"{num(second)} / (1 − {hp(beta2)}^{t})", v_hat))
        denom = math.sqrt(second) / math.sqrt(bias_correction2) + self.eps
        out.append(Term("denom", f"√{v_name} + ε", f"√{num(v_hat)} + {hp(self.eps)}", denom))
        new_w = w - (self.lr / bias_correction1) * (m / denom)
        w_text = "W" if (self.weight_decay and self.decoupled) else "W_old"
        out.append(Term("W_new", f"{w_text} − η·m̂ / denom",
                        f"{num(w)} − {hp(self.lr)} × {factor(num(m_hat))} / {num(denom)}", new_w))
        return out


@dataclass(frozen=True, slots=True)
class AdamW(Adam):
    """Adam with decoupled weight decay: W ← W·(1 − η·λ) before the Adam step."""

    weight_decay: float = 1e-2
    kind: ClassVar[str] = "adamw"
    decoupled: ClassVar[bool] = True

"""Adagrad as torch.optim.Adagrad: lr_decay, initial_accumulator_value, eps outside the root."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from gdstep.fmt import factor, hp, num
from gdstep.optim.base import State, Term, check_hyperparameters


@dataclass(frozen=True, slots=True)
class Adagrad:
    lr: float = 1e-2
    lr_decay: float = 0.0
    weight_decay: float = 0.0
    initial_accumulator_value: float = 0.0
    eps: float = 1e-10
    kind: ClassVar[str] = "adagrad"
    guarded_state: ClassVar[tuple[str, ...]] = ("sum",)

    def __post_init__(self) -> None:
        check_hyperparameters(self)

    def init(self, param: np.ndarray) -> dict[str, Any]:
        return {"step": 0, "sum": np.full_like(param, self.initial_accumulator_value)}

    def update(self, param: np.ndarray, grad: np.ndarray, state: State) -> tuple[np.ndarray, dict[str, Any]]:
        step = state["step"] + 1
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        clr = self.lr / (1 + (step - 1) * self.lr_decay)
        total = state["sum"] + grad * grad
        std = np.sqrt(total)
        std += self.eps
        return param - clr * (grad / std), {"step": step, "sum": total}

    def terms(self, w: float, g: float, state: Mapping[str, float | None]) -> list[Term]:
        t = int(state["step"]) + 1
        out = [Term("g", "∂L/∂W", num(g), g)]
        if self.weight_decay:
            g_decayed = g + self.weight_decay * w
            out.append(Term("g", "g + λ·W", f"{num(g)} + {hp(self.weight_decay)} × {factor(num(w))}", g_decayed))
            g = g_decayed
        out.append(Term("t", "step", str(t), t))
        clr = self.lr / (1 + (t - 1) * self.lr_decay)
        if self.lr_decay:
            out.append(Term("η_t", "η / (1 + (t − 1)·lr_decay)", f"{hp(self.lr)} / (1 + {t - 1} × {hp(self.lr_decay)})", clr))
        s_prev = float(state["sum"])
        s = s_prev + g * g
        out.append(Term("sum", "sum + g²", f"{num(s_prev)} + {factor(num(g))}²", s))
        denom = math.sqrt(s) + self.eps
        out.append(Term("denom", "√sum + ε", f"√{num(s)} + {hp(self.eps)}", denom))
        new_w = w - clr * (g / denom)
        lr_symbol = "η_t" if self.lr_decay else "η"
        out.append(Term("W_new", f"W_old − {lr_symbol}·g / denom", f"{num(w)} − {hp(clr)} × {factor(num(g))} / {num(denom)}", new_w))
        return out

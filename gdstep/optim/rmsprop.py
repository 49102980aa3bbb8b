"""RMSprop as torch.optim.RMSprop: square_avg, optional centering (grad_avg) and momentum."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from gdstep.fmt import factor, hp, num
from gdstep.optim.base import State, Term, check_hyperparameters


@dataclass(frozen=True, slots=True)
class RMSprop:
    lr: float = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    centered: bool = False
    kind: ClassVar[str] = "rmsprop"
    guarded_state: ClassVar[tuple[str, ...]] = ("square_avg",)

    def __post_init__(self) -> None:
        check_hyperparameters(self)

    def init(self, param: np.ndarray) -> dict[str, Any]:
        state: dict[str, Any] = {"step": 0, "square_avg": np.zeros_like(param)}
        if self.momentum > 0:
            state["momentum_buffer"] = np.zeros_like(param)
        if self.centered:
            state["grad_avg"] = np.zeros_like(param)
        return state

    def update(self, param: np.ndarray, grad: np.ndarray, state: State) -> tuple[np.ndarray, dict[str, Any]]:
        alpha = self.alpha
        if self.weight_decay:
            grad = grad + self.weight_decay * param
        square_avg = alpha * state["square_avg"] + (1 - alpha) * (grad * grad)
        new_state: dict[str, Any] = {"step": state["step"] + 1, "square_avg": square_avg}
        if self.centered:
            grad_avg = state["grad_avg"]
            grad_avg = grad_avg + (1 - alpha) * (grad - grad_avg)
            new_state["grad_avg"] = grad_avg
            avg = np.sqrt(square_avg - grad_avg * grad_avg)
        else:
            avg = np.sqrt(square_avg)
        avg += self.eps
        if self.momentum > 0:
            buf = self.momentum * state["momentum_buffer"] + grad / avg
            new_state["momentum_buffer"] = buf
            return param - self.lr * buf, new_state
        return param - self.lr * (grad / avg), new_state

    def terms(self, w: float, g: float, state: Mapping[str, float | None]) -> list[Term]:
        alpha = self.alpha
        out = [Term("g", "∂L/∂W", num(g), g)]
        if self.weight_decay:
            g_decayed = g + self.weight_decay * w
            out.append(Term("g", "g + λ·W", f"{num(g)} + {hp(self.weight_decay)} × {factor(num(w))}", g_decayed))
            g = g_decayed
        v_prev = float(state["square_avg"])
        v = alpha * v_prev + (1 - alpha) * (g * g)
        out.append(Term("v", "α·v + (1 − α)·g²", f"{hp(alpha)} × {num(v_prev)} + {hp(1 - alpha)} × {factor(num(g))}²", v))
        if self.centered:
            ga_prev = float(state["grad_avg"])
            ga = ga_prev + (1 - alpha) * (g - ga_prev)
            out.append(Term("ḡ", "α·ḡ + (1 − α)·g", f"{hp(alpha)} × {factor(num(ga_prev))} + {hp(1 - alpha)} × {factor(num(g))}", ga))
            denom = math.sqrt(v - ga * ga) + self.eps
            out.append(Term("denom", "√(v − ḡ²) + ε", f"√({num(v)} − {factor(num(ga))}²) + {hp(self.eps)}", denom))
        else:
            denom = math.sqrt(v) + self.eps
            out.append(Term("denom", "√v + ε", f"√{num(v)} + {hp(self.eps)}", denom))
        if self.momentum > 0:
            b_prev = float(state["momentum_buffer"])
            b = self.momentum * b_prev + g / denom
            out.append(Term("b", "μ·b + g / denom", f"{hp(self.momentum)} × {factor(num(b_prev))} + {factor(num(g))} / {num(denom)}", b))
            new_w = w - self.lr * b
            out.append(Term("W_new", "W_old − η·b", f"{num(w)} − {hp(self.lr)} × {factor(num(b))}", new_w))
        else:
            new_w = w - self.lr * (g / denom)
            out.append(Term("W_new", "W_old − η·g / denom", f"{num(w)} − {hp(self.lr)} × {factor(num(g))} / {num(denom)}", new_w))
        return out

"""SGD as torch.optim.SGD: weight decay, momentum (first buffer = the gradient), dampening, nesterov."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import numpy as np

from gdstep.fmt import factor, hp, num
from gdstep.optim.base import State, Term, check_hyperparameters


@dataclass(frozen=True, slots=True)
class SGD:
    lr: float = 1e-3
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False
    kind: ClassVar[str] = "sgd"
    guarded_state: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        check_hyperparameters(self)

    def init(self, param: np.ndarray) -> dict[str, Any]:
        return {"momentum_buffer": None} if self.momentum else {}

    def update(self, param: np.ndarray, grad: np.ndarray, state: State) -> tuple[np.ndarray, dict[str, Any]]:
        d_p = grad
        if self.weight_decay:
            d_p = d_p + self.weight_decay * param
        new_state: dict[str, Any] = {}
        if self.momentum:
            buf = state.get("momentum_buffer")
            buf = d_p if buf is None else self.momentum * buf + (1 - self.dampening) * d_p
            new_state["momentum_buffer"] = buf
            d_p = d_p + self.momentum * buf if self.nesterov else buf
        return param - self.lr * d_p, new_state

    def terms(self, w: float, g: float, state: Mapping[str, float | None]) -> list[Term]:
        out = [Term("g", "∂L/∂W", num(g), g)]
        if self.weight_decay:
            g_decayed = g + self.weight_decay * w
            out.append(Term("g", "g + λ·W", f"{num(g)} + {hp(self.weight_decay)} × {factor(num(w))}", g_decayed))
            g = g_decayed
        step_symbol = "g"
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = g
                out.append(Term("b", "g   (first step: the buffer starts as the gradient)", num(g), buf))
            else:
                new_buf = self.momentum * buf + (1 - self.dampening) * g
                out.append(Term("b", "μ·b + (1 − τ)·g",
                                f"{hp(self.momentum)} × {factor(num(buf))} + {hp(1 - self.dampening)} × {factor(num(g))}",
                                new_buf))
                buf = new_buf
            if self.nesterov:
                out.append(Term("g", "g + μ·b", f"{num(g)} + {hp(self.momentum)} × {factor(num(buf))}",
                                g + self.momentum * buf))
                g = g + self.momentum * buf
            else:
                g, step_symbol = buf, "b"
        new_w = w - self.lr * g
        out.append(Term("W_new", f"W_old − η·{step_symbol}", f"{num(w)} − {hp(self.lr)} × {factor(num(g))}", new_w))
        return out

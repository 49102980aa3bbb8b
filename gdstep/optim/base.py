"""What every optimizer shares: the Term that the debugger prints, and the protocol.

An optimizer is a frozen dataclass of hyperparameters with two pure functions, as in optax:
`init(param) -> state` and `update(param, grad, state) -> (new_param, new_state)`, on one
parameter at a time, with torch.optim's state names. `terms(w, g, state)` recomputes the
same update for a single element in plain floats and returns every intermediate, so the
arithmetic can be shown with the real numbers; its last term is `W_new`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Protocol

import numpy as np

State = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Term:
    """One line of an update: `symbol = formula = numbers = value`."""

    symbol: str
    formula: str
    numbers: str
    value: float

    def __str__(self) -> str:
        from gdstep.fmt import num

        parts = [self.symbol, self.formula]
        if self.numbers and self.numbers != self.formula:
            parts.append(self.numbers)
        if self.numbers != num(self.value) and not isinstance(self.value, int):   # a count: `t = step = 3`
            parts.append(num(self.value))
        return " = ".join(dict.fromkeys(parts))


class Optimizer(Protocol):
    kind: ClassVar[str]
    lr: float
    # State that can turn non-finite while the parameter stays finite (v = inf makes the
    # step 0), so a run checks it apart; a non-finite buffer that feeds the step linearly
    # shows in the parameter. With finite gradients of finite norm these stay finite too.
    guarded_state: ClassVar[tuple[str, ...]]

    def init(self, param: np.ndarray) -> dict[str, Any]: ...

    def update(self, param: np.ndarray, grad: np.ndarray, state: State) -> tuple[np.ndarray, dict[str, Any]]: ...

    def terms(self, w: float, g: float, state: Mapping[str, float | None]) -> list[Term]: ...


def check_hyperparameters(opt: Any) -> None:
    """torch.optim's own argument checks, raised as ValueError naming the field."""
    for f in dataclasses.fields(opt):
        value = getattr(opt, f.name)
        if f.name == "betas":
            if not (isinstance(value, tuple) and len(value) == 2):
                raise ValueError(f"betas: expected two numbers, got {value!r}")
            for i, b in enumerate(value):
                if not 0.0 <= b < 1.0:
                    raise ValueError(f"betas: beta{i + 1} must be in [0, 1), got {b}")
        elif isinstance(value, bool):
            continue
        elif isinstance(value, (int, float)) and value < 0:
            raise ValueError(f"{f.name}: must be >= 0, got {value}")
    if getattr(opt, "nesterov", False) and (opt.momentum <= 0 or opt.dampening != 0):
        raise ValueError("nesterov: needs momentum > 0 and dampening = 0")

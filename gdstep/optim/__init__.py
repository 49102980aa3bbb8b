"""Optimizers with torch.optim's semantics and state names, as pure init/update pairs.

Each is one class in one file (its hyperparameters, its formula written once for the update
and the explained terms, its torch twin), listed once in OPTIMIZERS below.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from gdstep.errors import HyperparameterError
from gdstep.optim.adagrad import Adagrad
from gdstep.optim.adam import Adam
from gdstep.optim.adamw import AdamW
from gdstep.optim.base import Optimizer, Term
from gdstep.optim.rmsprop import RMSprop
from gdstep.optim.sgd import SGD

OPTIMIZERS: dict[str, type[Optimizer]] = {cls.kind: cls for cls in (SGD, RMSprop, Adagrad, Adam, AdamW)}


def make_optimizer(kind: str, **hyperparameters: Any) -> Optimizer:
    """Build an optimizer by name; unknown kinds or arguments raise HyperparameterError (a ValueError) naming them."""
    try:
        cls = OPTIMIZERS[kind]
    except KeyError:
        raise HyperparameterError(None, f"unknown optimizer {kind!r} (expected one of: {', '.join(OPTIMIZERS)})") from None
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for key, value in hyperparameters.items():
        if key not in defaults:
            raise HyperparameterError(None, f"{kind} has no argument {key!r} (expected one of: {', '.join(sorted(defaults))})")
        hyperparameters[key] = _checked(key, value, defaults[key])
    return cls(**hyperparameters)


def _checked(key: str, value: Any, default: Any) -> Any:
    """A hyperparameter of the type its default has: true/false, a number, or two numbers."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise HyperparameterError(key, f"expected true or false, got {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(number(v) for v in value):
            raise HyperparameterError(key, f"expected two numbers such as 0.9,0.999, got {value!r}")
        return tuple(float(v) for v in value)
    if not number(value):
        raise HyperparameterError(key, f"expected a number, got {value!r}")
    return float(value)


def hyperparameters(opt: Optimizer) -> dict[str, Any]:
    """The optimizer's arguments as torch.optim names them, lr first."""
    return {f.name: getattr(opt, f.name) for f in dataclasses.fields(opt)}


__all__ = ["OPTIMIZERS", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "SGD", "Term",
           "hyperparameters", "make_optimizer"]

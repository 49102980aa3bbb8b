"""Optimizers with torch.optim's semantics and state names, as pure init/update pairs."""

from __future__ import annotations

import dataclasses
from typing import Any

from gdstep.optim.adagrad import Adagrad
from gdstep.optim.adam import Adam, AdamW
from gdstep.optim.base import Optimizer, Term
from gdstep.optim.rmsprop import RMSprop
from gdstep.optim.sgd import SGD

OPTIMIZERS: dict[str, type] = {cls.kind: cls for cls in (SGD, RMSprop, Adagrad, Adam, AdamW)}


def make_optimizer(kind: str, **hyperparameters: Any) -> Optimizer:
    """Build an optimizer by name; unknown kinds or arguments raise ValueError naming them."""
    try:
        cls = OPTIMIZERS[kind]
    except KeyError:
        raise ValueError(f"unknown optimizer {kind!r} (expected one of: {', '.join(OPTIMIZERS)})") from None
    names = {f.name for f in dataclasses.fields(cls)}
    for key in hyperparameters:
        if key not in names:
            raise ValueError(f"{kind} has no argument {key!r} (expected one of: {', '.join(sorted(names))})")
    if "betas" in hyperparameters:
        hyperparameters["betas"] = tuple(hyperparameters["betas"])
    return cls(**hyperparameters)


def hyperparameters(opt: Optimizer) -> dict[str, Any]:
    """The optimizer's arguments as torch.optim names them, lr first."""
    return {f.name: getattr(opt, f.name) for f in dataclasses.fields(opt)}


__all__ = ["OPTIMIZERS", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "SGD", "Term", "hyperparameters", "make_optimizer"]

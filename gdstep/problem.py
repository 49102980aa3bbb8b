"""A scenario made ready to train, once, for whichever backend: the layers, the data with
its targets in the loss's form, every parameter's starting value and the optimizer.

Both backends start from a Problem, so the numpy engine and torch begin from the same
numbers without either walking the scenario again or building the other's model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from gdstep.data import targets_for
from gdstep.nn.init import initial_params
from gdstep.nn.model import Sequential


@dataclass(frozen=True)
class Problem:
    model: Sequential                          # the layers in order, with torch's parameter names
    x: np.ndarray = field(repr=False)          # inputs, one row a sample
    y: np.ndarray = field(repr=False)          # targets in the loss's form: class indices or float columns
    start: Mapping[str, np.ndarray] = field(repr=False)   # every parameter's starting value, float64
    trainable: frozenset[str]
    loss: Any                                  # the scenario's LossConfig
    optimizer: Any                             # the optimizer config (a gdstep.optim dataclass)
    dtype: str | None                          # the scenario's dtype, when it names one
    scenario: Any = field(repr=False, compare=False)

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return dict(self.model.param_shapes)


def prepare(scenario) -> Problem:
    """Build the model, derive the targets and draw the starting values, once."""
    model = scenario.build_model()
    start = initial_params(model, scenario.model.init, scenario.model.init_scale, scenario.seed, dict(scenario.init))
    return Problem(
        model=model,
        x=scenario.dataset.x,
        y=targets_for(scenario.dataset, scenario.loss.kind, model.out_features),
        start=MappingProxyType(start),
        trainable=frozenset(n for n in model.param_shapes if n not in scenario.model.frozen),
        loss=scenario.loss,
        optimizer=scenario.optimizer,
        dtype=scenario.model.dtype,
        scenario=scenario,
    )


def as_problem(problem_or_scenario) -> Problem:
    return problem_or_scenario if isinstance(problem_or_scenario, Problem) else prepare(problem_or_scenario)

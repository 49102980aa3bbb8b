"""Immutable records of what each phase did, with every value it used.

The per-phase records are NamedTuples: immutable, and cheap enough to build on every phase
of a long run.

The Session keeps the latest record of each phase; the TUI, scripts and notebooks read
them and never change them. Arrays are numpy arrays on the numpy backend and may be torch
tensors on the torch backend (see `gdstep.arrays` for reading either).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Mapping, NamedTuple

PHASES = ("forward", "loss", "backward", "update")


class Cursor(NamedTuple):
    """Where the session stands: `phase` is the phase due next; epoch and iteration count from 1."""

    epoch: int
    iteration: int
    phase: str

    def __str__(self) -> str:
        return f"epoch {self.epoch} · iteration {self.iteration} · {self.phase} next"


class ForwardRecord(NamedTuple):
    step: int
    epoch: int
    iteration: int
    indices: Any                  # rows of the dataset in this batch
    inputs: Any                   # x, (batch, features)
    outputs: tuple[Any, ...]      # every layer's output: z after a linear layer, a after an activation
    layer_names: tuple[str, ...]  # "0 linear", "1 tanh", … (module names on the torch backend)

    @property
    def output(self) -> Any:
        return self.outputs[-1]


class LossRecord(NamedTuple):
    step: int
    kind: str
    output: Any
    target: Any
    per_sample: Any
    value: float


class BackwardRecord(NamedTuple):
    step: int
    grad_output: Any                  # ∂L/∂output
    deltas: tuple[Any, ...]           # ∂L/∂(every layer's output): δ = ∂L/∂z after a linear layer
    grads: Mapping[str, Any]          # ∂L/∂W for every trainable parameter
    grad_norms: Mapping[str, float]   # ‖∂L/∂W‖ per parameter
    grad_norm: float                  # ‖∇L‖ over all parameters


class ParamUpdate(NamedTuple):
    name: str
    old: Any
    grad: Any
    new: Any
    state_before: Mapping[str, Any]
    state_after: Mapping[str, Any]


class UpdateRecord(NamedTuple):
    step: int
    optimizer: Any                    # the optimizer config used (hyperparameters, lr)
    lr: float
    params: Mapping[str, ParamUpdate]

    def update_ratio(self, name: str | None = None) -> float:
        """‖ΔW‖ / ‖W_old‖ of one parameter, or over all parameters of the update."""
        from gdstep.arrays import sq_norm

        delta = weight = 0.0
        for n in ([name] if name is not None else list(self.params)):
            u = self.params[n]
            delta += sq_norm(u.new - u.old)
            weight += sq_norm(u.old)
        if weight == 0:
            return math.inf if delta > 0 else 0.0
        return math.sqrt(delta / weight)


@dataclass(frozen=True, slots=True)
class NonFinite:
    """Where a non-finite value first appeared."""

    phase: str
    where: str                     # a parameter name, "loss", "layer 2 output", "0.weight state exp_avg_sq"
    index: tuple[int, ...] | None
    value: float
    kept_after: bool = False       # the state stays after the phase (attach mode: the loop's own values)

    def __str__(self) -> str:
        from gdstep.fmt import index_text
        at = index_text(self.index) if self.index else ""
        return f"non-finite value {self.value} in {self.where}{at} during {self.phase}"


# A lean phase's fused finiteness test failed (records on demand): the run computes the phase
# again with full records to name the culprit.
LEAN_NONFINITE = NonFinite("lean", "a lean phase's fused test", None, math.nan)


@dataclass(frozen=True, slots=True)
class Event:
    """A line of the event log."""

    time: float
    step: int
    kind: str       # breakpoint | nonfinite | setting | stop | rewind | gradcheck | error | info
    message: str


class StopReason(StrEnum):
    """Why a run stopped (equal to its name as a string: `reason == "breakpoint"`)."""

    DONE = "done"                   # the steps, epochs or phase asked for have run
    BREAKPOINT = "breakpoint"
    UNTIL = "until"
    STOP_WHEN = "stop_when"         # the scenario's own stop condition
    MAX_STEPS = "max_steps"
    EPOCHS = "epochs"               # the scenario's epoch limit
    NONFINITE = "nonfinite"         # a non-finite value: the state is kept from before it
    PAUSED = "paused"               # the caller asked (the app's pause key)
    INTERRUPTED = "interrupted"     # Ctrl+C in `gdstep run`


@dataclass(frozen=True, slots=True)
class RunResult:
    """Why a run stopped, how far it went and where it stands."""

    reason: StopReason
    phases: int
    steps: int
    cursor: Cursor
    message: str
    nonfinite: NonFinite | None = None

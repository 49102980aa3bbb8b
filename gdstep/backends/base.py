"""What the Session asks of a backend: run each phase on its live state, and capture and
restore that state exactly.

A backend owns the parameters and the optimizer state; the Session owns the cursor, the
batches, the history and the breakpoints. Phases are called strictly in order, so a backend
may carry private values from one phase to the next (torch keeps its autograd graph).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from gdstep.records import ParamUpdate


@dataclass(frozen=True)
class LayerInfo:
    """One row of the model tree."""

    index: int
    name: str                         # "0", "1", … or the module's name
    kind: str                         # "linear", "tanh", or the module's class name
    text: str                         # "Linear(2 → 4)"
    params: tuple[str, ...]           # its parameter names
    layer: Any = field(default=None, compare=False, repr=False)  # the gdstep.nn layer it computes, if any
    # finite inputs always give it finite outputs (torch's max-pooling, Flatten); None: as its kind says
    keeps_finite: bool | None = field(default=None, compare=False)


class Backend(Protocol):
    name: str                         # "numpy" | "torch"
    device: str                       # "cpu", "cuda:0"
    dtype: str                        # "float64" | "float32"
    param_shapes: Mapping[str, tuple[int, ...]]
    trainable: frozenset[str]
    layers: tuple[LayerInfo, ...]
    n_samples: int
    optimizer: Any                    # the optimizer config in use (a gdstep.optim dataclass)
    notes: list[str]                  # things the user should hear once (device fallbacks), optional

    # the phases, strictly in order
    def batch(self, indices: np.ndarray) -> tuple[Any, Any]: ...

    def forward(self, x: Any) -> tuple[Any, ...]: ...

    def loss(self, outputs: Sequence[Any], y: Any, per_sample: bool = True) -> tuple[Any, float]:
        """(per-sample losses, the loss). Without `per_sample` a backend may leave them out
        (None): a run's records are recomputed when read."""
        ...

    def backward(self, x: Any, outputs: Sequence[Any], y: Any) -> tuple[Any, tuple[Any, ...], dict[str, Any]]: ...

    def grad_sq_norms(self, grads: Mapping[str, Any]) -> dict[str, float]: ...

    def update(self, grads: Mapping[str, Any]) -> dict[str, ParamUpdate]: ...

    # the live state
    def params(self) -> Mapping[str, Any]: ...

    def optimizer_state(self) -> Mapping[str, Mapping[str, Any]]: ...

    def set_optimizer(self, optimizer: Any, fresh_state: bool = True) -> None: ...

    def capture(self) -> Any: ...

    def restore(self, checkpoint: Any) -> None: ...

    def checkpoint_nbytes(self, checkpoint: Any) -> int: ...

    # side computations: they change nothing
    def loss_value(self, x: Any, y: Any, overrides: Mapping[str, tuple[tuple[int, ...], float]] | None = None) -> float: ...

    def loss_at(self, x: Any, y: Any, params: Mapping[str, Any]) -> float: ...

    def gradients(self, x: Any, y: Any) -> dict[str, Any]: ...

    def evaluate(self) -> tuple[float, float | None]: ...

    def predict(self, x: np.ndarray) -> np.ndarray: ...

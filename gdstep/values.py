"""The values a Session shows: parameters, gradients, optimizer state and records as
copies, the history, and what conditions read (`loss`, `grad_norm`, `2.weight[0,1]`, `nan`).

Mixed into the Session; `gdstep.conditions` calls `value(name)`, `param(name, index)`,
`grad_norm(name)` and `update_ratio(name)` on it.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from gdstep import arrays, nonfinite
from gdstep.errors import GdstepError
from gdstep.history import History
from gdstep.records import PHASES, NonFinite


class SessionValues:
    @property
    def params(self) -> dict[str, np.ndarray]:
        return {name: arrays.to_numpy(p).copy() for name, p in self.backend.params().items()}

    @property
    def grads(self) -> dict[str, np.ndarray]:
        rec = self._full_records().get("backward")
        return {} if rec is None else {name: arrays.to_numpy(g).copy() for name, g in rec.grads.items()}

    @property
    def optimizer_state(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, state in self.backend.optimizer_state().items():
            out[name] = {k: (v if v is None or isinstance(v, (int, float)) else arrays.to_numpy(v).copy())
                         for k, v in state.items()}
        return out

    def record(self, phase: str):
        """The latest record of that phase (None before it first runs)."""
        if phase not in PHASES:
            raise GdstepError(f"no phase {phase!r} (phases: {', '.join(PHASES)})")
        return self._full_records().get(phase)

    @property
    def records(self) -> dict[str, Any]:
        return dict(self._full_records())

    def _full_records(self) -> dict[str, Any]:
        """The latest records, recomputed with every value when a run left them lean."""
        if self._lean_records:
            self._materialise()
        return self._records

    @property
    def loss_value(self) -> float | None:
        """The latest loss computed (the conditions' `loss`): at a pause after an iteration's
        forward, before its loss phase, still the iteration before's."""
        return self._history.last_loss

    @property
    def prev_loss(self) -> float | None:
        return self._history.prev_loss

    @property
    def history(self) -> History:
        """A copy of the per-iteration history (cheap: compact arrays are copied whole)."""
        return self._history.copy()

    @property
    def history_nbytes(self) -> int:
        """Bytes the per-iteration history holds (it grows with every step of a run)."""
        return self._history.nbytes

    @property
    def checkpoint_nbytes(self) -> int:
        """Bytes the rewind checkpoints hold (kept under the session's history budget)."""
        return self._timeline.nbytes

    def evaluate(self) -> tuple[float, float | None]:
        """Loss and, for classifiers, accuracy on the whole dataset with the current parameters."""
        return self.backend.evaluate()

    # -- the condition context ----------------------------------------------------------------

    def value(self, name: str) -> Any:
        read = _VALUES.get(name)
        if read is None:
            raise GdstepError(f"unknown name {name!r}")
        return read(self)

    def param(self, name: str, index: tuple[int, ...]) -> float:
        params = self.backend.params()
        if name not in params:
            raise GdstepError(f"no parameter {name!r}")
        try:
            return arrays.element(params[name], index)
        except IndexError:
            raise GdstepError(f"index {list(index)} is out of range for {name} of shape {arrays.shape(params[name])}") from None

    def grad_norm(self, name: str | None) -> float | None:
        rec = self._records.get("backward")
        if rec is None:
            return None
        if name is None:
            return rec.grad_norm
        return rec.grad_norms.get(name)

    def update_ratio(self, name: str | None) -> float | None:
        rec = self._records.get("update")
        if rec is not None and not rec.params and self._lean_records:
            rec = self._full_records().get("update")
        if rec is None or (name is not None and name not in rec.params):
            return None
        return rec.update_ratio(name)

    def find_nonfinite(self) -> NonFinite | None:
        """The first non-finite value anywhere: parameters, optimizer state, latest records."""
        return nonfinite.anywhere(self.last_phase or "start", self.backend.params(), self.backend.optimizer_state(),
                                  self._records, getattr(self.backend, "call_order", None))


_VALUES: dict[str, Callable[[Any], Any]] = {
    "loss": lambda s: s.loss_value,
    "prev_loss": lambda s: s.prev_loss,
    "epoch": lambda s: s._epoch,
    "iteration": lambda s: s._iteration,
    "step": lambda s: s._step,
    "phase": lambda s: s.last_phase,
    "lr": lambda s: s.lr,
    "grad_norm": lambda s: s.grad_norm(None),
    "update_ratio": lambda s: s.update_ratio(None),
    "nan": lambda s: s.find_nonfinite() is not None,
}

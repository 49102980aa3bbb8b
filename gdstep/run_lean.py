"""A run's fused iteration: forward, loss and backward of the numpy engine in one call.

Records on demand (see gdstep.session): a run keeps lean records, so nothing needs the
three phases as separate calls into the backend. The backend computes them at once
(`forward_backward_lean`: no δ kept, one finiteness test of the checked outputs, the
gradients' squared norms over the flat gradient), and the Session then takes each phase
in turn — its record, its history, its finiteness, and the run's checks after it (the
breakpoints, `until`, `stop_when`, the count, the caller's pause) — exactly as if it had
run alone: a stop after the forward or the loss leaves the session there, as stepping
would. The update runs as a phase of its own (a condition checked after the backward must
see the parameters before it). Mixed into the Session.
"""

from __future__ import annotations

import math
from typing import Callable

from gdstep import nonfinite
from gdstep.records import LEAN_NONFINITE, BackwardRecord, ForwardRecord, LossRecord, NonFinite, StopReason

Stop = tuple[StopReason, str] | None


class FusedPhases:
    def _fused_phases(self, after: Callable[[str], Stop]) -> tuple[NonFinite | None, Stop]:
        """Forward, loss and backward of the iteration due (or fewer, where the run stops).
        `after(name)` is the run's checks after a phase. Returns (a non-finite value, or
        LEAN_NONFINITE for the culprit search; why the run stops)."""
        if self._settings:
            self._apply_settings()
        indices = self.next_batch_indices()
        x, y = self.backend.batch(indices)
        outputs, per_sample, value, grads, sq, forward_ok = self.backend.forward_backward_lean(x, y, self._checked_layers)
        records = self._records
        self._batch = (indices, x, y)
        self._lean_records = True      # nothing of this iteration is frozen: a reader recomputes it
        rec = records["forward"] = ForwardRecord(self._step, self._epoch, self._iteration, indices, x, outputs,
                                                 self._layer_names)
        self._phase = 1
        if not forward_ok:
            return nonfinite.in_forward(rec, getattr(self.backend, "call_order", None)), None
        stop = after("forward")
        if stop is not None or self._records is not records:     # stopped, or a reader recomputed: stepwise on
            return None, stop
        rec = records["loss"] = LossRecord(self._step, self.scenario.loss.kind, outputs[-1], y, per_sample, value)
        self._history.add_loss(value, self._epoch, len(indices))
        self._phase = 2
        if not math.isfinite(value):
            return nonfinite.in_loss(rec), None
        stop = after("loss")
        if stop is not None or self._records is not records:
            return None, stop
        names = self._history.norm_names
        norms = {name: math.sqrt(v) for name, v in zip(names, sq)}
        total = math.sqrt(sum(sq))
        records["backward"] = BackwardRecord(self._step, None, (), grads, norms, total)
        self._history.add_grad_norms(norms)
        self._phase = 3
        if not math.isfinite(total):     # the culprit may be a δ: searched in full
            return LEAN_NONFINITE, None
        return None, after("backward")

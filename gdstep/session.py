"""The Session: training one phase at a time, remembering everything, rewinding exactly.

One object serves the TUI, scripts and notebooks: the state machine of training (the cursor
and batches, the phases in order, rewinding), with collaborators that each keep one thing —
the backend (parameters, optimizer state), `HistoryArrays`, `Breakpoints`, `SettingsLog`,
`Timeline` (rewind checkpoints), `gdstep.nonfinite` (the culprit of a non-finite value) —
and mixins for the run loop, the values it shows, forks and settings. Phases run strictly in order:

    forward → loss → backward → update        (one iteration = one mini-batch)

`step`, `epoch`, `run` and `run_to` are runs: they check breakpoints after each phase and
pause on any non-finite value, keeping the state from before the phase that made it.

Records on demand: a run computes only what it needs to decide whether to stop (the loss,
the gradient norms, one fused finiteness check per phase, and what its conditions read),
so its records are *lean* (the update's before/after values and δ are left out; on numpy,
forward, loss and backward are one backend call, `gdstep.run_lean`). The
first read of a record after such a run recomputes the iteration from the nearest checkpoint
with full records (`_materialise`): rewinds are exact to the bit, so the records are the
ones phase-by-phase stepping would have built. Phase-by-phase stepping builds full records.
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import nullcontext
from typing import Any

import numpy as np

from gdstep import arrays, nonfinite, update_norms
from gdstep.breakpoints import Breakpoint, Breakpoints
from gdstep.conditions import parse_condition
from gdstep.data import epoch_permutation
from gdstep.errors import PhaseOrderError
from gdstep.forks import Forks
from gdstep.history import HistoryArrays
from gdstep.nn.layers import keeps_finite
from gdstep.records import LEAN_NONFINITE, PHASES, BackwardRecord, Cursor, Event, ForwardRecord, LossRecord, NonFinite, UpdateRecord
from gdstep.rewind import Rewind
from gdstep.run_ahead import RunAhead
from gdstep.run_lean import FusedPhases
from gdstep.run_loop import RunLoop
from gdstep.settings import SettingsLog
from gdstep.session_settings import SessionSettings
from gdstep.values import SessionValues
from gdstep.timeline import Checkpoint, Timeline


CHECKPOINT_SECONDS = 0.05


class Session(RunLoop, RunAhead, FusedPhases, Rewind, SessionValues, Forks, SessionSettings):
    def __init__(self, scenario, backend, history_budget: int = 64 * 2**20, attached: bool = False):
        self.scenario = scenario
        self.backend = backend
        self.attached = attached          # a user's own training loop (attach mode), not a scenario
        self.n = backend.n_samples
        self.seed = scenario.seed
        self.shuffle = scenario.training.shuffle
        self.epochs = scenario.training.epochs
        self.events: list[Event] = []
        self.breakpoints = Breakpoints()
        self.stop_when = parse_condition(scenario.training.stop_when).check_names(backend.param_shapes) \
            if scenario.training.stop_when else None
        self._batch_size = scenario.training.batch_size
        self._step, self._epoch, self._iteration, self._offset, self._phase = 0, 1, 1, 0, 0
        self._perms: dict[int, np.ndarray] = {}    # the last two epochs' orders (a look ahead draws into the next)
        self._arange = np.arange(0)                 # the order of every epoch when not shuffled
        self._batch: tuple[np.ndarray, Any, Any] | None = None
        self._records: dict[str, Any] = {}
        self._lean = False                # a run in progress builds lean records
        self._lean_records = False        # some of _records are lean: _materialise before showing them
        self._lean_update = hasattr(backend, "update_lean")
        # On a device a run's finiteness flags stay there until the next value is read back
        # (the loss) or a condition is checked: (position after the phase, flag) pairs.
        self._defer = getattr(backend, "defer_checks", False)
        self._flags: list[tuple[int, Any]] = []
        self._norms_before: Any = None    # watch mode: update_norms.before, taken before the loop's step
        self._run_start = 0               # the step the current run began at (update_norms.measured)
        self._bad_at: int | None = None
        # attach mode keeps the batches of its last few iterations: a checkpoint at least that often
        self._lean_gap = getattr(backend, "keep", 2**62)
        # a run coarsens the checkpoints' grid while a period of it takes under half this (rewind.py)
        self.checkpoint_seconds = CHECKPOINT_SECONDS
        self.look_ahead = True            # a run may compute iterations before checking them (run_ahead.py)
        self._checkpoint_at, self._checkpoint_step = 0.0, 0
        self._settings = SettingsLog()
        self._history = HistoryArrays(tuple(n for n in backend.param_shapes if n in backend.trainable))
        # the lean update gives its ‖ΔW‖², ‖W_old‖² itself, in the history's order (numpy, torch)
        fused = getattr(backend, "update_lean_norms", None)
        self._update_norms_lean = fused if getattr(backend, "lean_norm_names", None) == self._history.norm_names else None
        # numpy: a run's forward, loss and backward in one call (gdstep.run_lean)
        self._fused_lean = self._update_norms_lean is not None and hasattr(backend, "forward_backward_lean") \
            and not attached
        # the history budget holds the checkpoints and what measuring ‖ΔW‖ keeps (torch: a copy
        # of the parameters): so gdstep's memory for history never exceeds it
        self._history_budget = history_budget
        measuring = self._measure_nbytes = getattr(backend, "update_norms_nbytes", 0)
        self._timeline = Timeline(backend.checkpoint_nbytes, budget=max(history_budget - measuring, 0))
        self._timeline.save(self._checkpoint())
        self._phase_fns = (self._forward, self._loss, self._backward, self._update)
        self._layer_names = tuple(f"{info.name} {info.kind}" for info in backend.layers)
        # A run checks the outputs of the layers that can turn finite inputs non-finite (a
        # linear layer's z, a custom module's output) and the last output: the others map
        # finite to finite, so this finds any non-finite activation.
        self._checked_layers = tuple(
            i for i, info in enumerate(backend.layers)
            if not (keeps_finite(info.kind) if info.keeps_finite is None else info.keeps_finite)
            or i == len(backend.layers) - 1)
        for text in scenario.breakpoints:
            self.add_breakpoint(text, log=False)
        for note in getattr(backend, "notes", ()):     # e.g. device "auto" fell back to the cpu
            self._log("info", note)
        # why a recomputed iteration differs from its first computation (None: none does)
        self.replay_inexact: str | None = None
        if hasattr(backend, "bind_session"):
            backend.bind_session(self)

    # -- where we are ------------------------------------------------------------------------

    @property
    def cursor(self) -> Cursor:
        return Cursor(self._epoch, self._iteration, PHASES[self._phase])

    @property
    def where(self) -> str:
        """The cursor in words: its epoch and iteration; in attach mode, where the loop's data
        is one batch an iteration, the loop's iteration due (counted from 1)."""
        if self.attached:
            return f"loop iteration {self._step + 1} · {PHASES[self._phase]} next"
        return str(self.cursor)

    @property
    def step_count(self) -> int:
        """Updates done so far (torch's optimizer `step`)."""
        return self._step

    @property
    def phase_due(self) -> str:
        return PHASES[self._phase]

    @property
    def last_phase(self) -> str | None:
        if self._phase:
            return PHASES[self._phase - 1]
        return "update" if self._step else None

    @property
    def position(self) -> int:
        """Phases run since the start: 4 per iteration."""
        return self._step * 4 + self._phase

    @property
    def batch_size(self) -> int:
        size = self._pending("batch_size", self._batch_size)
        return self.n if size is None else min(size, self.n)

    @property
    def optimizer(self):
        return self._pending("optimizer", self.backend.optimizer)

    @property
    def lr(self) -> float:
        return self.optimizer.lr

    @property
    def iterations_per_epoch(self) -> int:
        used = self._offset + (len(self._batch[0]) if self._batch and self._phase else 0)
        done = self._iteration - (0 if self._phase else 1)
        return done + math.ceil((self.n - used) / self.batch_size) if used < self.n else done

    def _pending(self, key: str, current: Any) -> Any:
        """A setting as it will be for the next iteration to start."""
        return current if self._phase else self._settings.pending(self._step, key, current)

    # -- the phases ----------------------------------------------------------------------------

    def _due(self, phase: int, called: str) -> None:
        if self._phase != phase:
            raise PhaseOrderError(called, PHASES[self._phase])

    def forward(self) -> ForwardRecord:
        self._due(0, "forward")
        self._single(0)
        return self._records["forward"]

    def loss(self) -> LossRecord:
        self._due(1, "loss")
        self._single(1)
        return self._records["loss"]

    def backward(self) -> BackwardRecord:
        self._due(2, "backward")
        self._single(2)
        return self._records["backward"]

    def update(self) -> UpdateRecord:
        self._due(3, "update")
        self._single(3)
        return self._records["update"]

    def next_phase(self):
        """Run whichever phase is due and return its record."""
        phase = self._phase
        self._single(phase)
        return self._records[PHASES[phase]]

    def _single(self, phase: int) -> None:
        with self.backend.moving() if self.attached else nullcontext():
            self._materialise()
            with np.errstate(all="ignore"):
                bad = self._phase_fns[phase](True)
        if bad is not None:
            self._log("nonfinite", f"{bad}{nonfinite.REWIND_HINT}")

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:                 # every epoch in order (attach mode: each iteration an epoch)
            if len(self._arange) != self.n:
                self._arange = np.arange(self.n)
            return self._arange
        perm = self._perms.get(epoch)
        if perm is None:
            perm = epoch_permutation(self.seed, epoch, self.n)
            if len(self._perms) >= 2:
                del self._perms[next(iter(self._perms))]
            self._perms[epoch] = perm
        return perm

    def next_batch_indices(self) -> np.ndarray:
        """The rows the next forward phase will use (or the current one's, mid-iteration)."""
        if self._phase:
            return self._batch[0]
        size = self.batch_size if self._settings else (self._batch_size or self.n)
        return self._epoch_order(self._epoch)[self._offset:self._offset + size]

    def _apply_settings(self) -> None:
        entry = self._settings.at(self._step)
        if not entry:
            return
        if "optimizer" in entry:
            self.backend.set_optimizer(entry["optimizer"])
        if "edit" in entry:
            self.backend.set_optimizer(entry["edit"], fresh_state=self._step == 0)   # no state before a step
        if "lr" in entry:
            self.backend.set_optimizer(dataclasses.replace(self.backend.optimizer, lr=entry["lr"]), fresh_state=False)
        if "groups" in entry:                   # one param group's hyperparameters (set lr 0.1 group=1)
            self.backend.set_groups(entry["groups"])
        if "batch_size" in entry:
            self._batch_size = entry["batch_size"]

    def _forward(self, check: bool) -> NonFinite | None:
        if self._settings:
            self._apply_settings()
        indices = self.next_batch_indices()
        x, y = self.backend.batch(indices)
        # A run where the backend can test outputs as they are made keeps none of them, once
        # the records are lean already (a reader recomputes the iteration anyway; after a
        # stop that showed full records, the first forward keeps them, as stepping would)
        lean = (self.backend.forward_lean(x, self._checked_layers, self._defer)
                if check and self._lean and self._lean_records and hasattr(self.backend, "forward_lean") else None)
        outputs = self.backend.forward(x) if lean is None else lean[0]
        self._batch = (indices, x, y)
        rec = self._records["forward"] = ForwardRecord(self._step, self._epoch, self._iteration, indices, x, outputs,
                                                       self._layer_names)
        self._phase = 1
        if lean is not None:
            self._lean_records = True          # the outputs are not kept: a reader recomputes them
            finite = lean[1]
            if not isinstance(finite, bool):     # on a device: read with the loss, in one transfer
                self._flags.append((self.position, finite))
            elif not finite:
                return LEAN_NONFINITE            # the culprit: the iteration again, with every output
        elif check:
            checked = [outputs[i] for i in self._checked_layers]
            if self._lean and self._defer:       # on a device: read with the loss, in one transfer
                self._flags.append((self.position, self.backend.finite_flag(checked)))
            elif not arrays.all_finite(checked):
                return nonfinite.in_forward(rec, getattr(self.backend, "call_order", None))
        return None

    def _loss(self, check: bool) -> NonFinite | None:
        indices, x, y = self._batch
        outputs = self._records["forward"].outputs
        bad_at = None
        lean = self._lean and self._lean_records      # records recomputed when read: no per-sample losses
        if self._lean and self._flags:
            pending, self._flags = self._flags, []
            per_sample, value, finite = self.backend.loss_lean(outputs, y, [flag for _, flag in pending], not lean)
            bad_at = next((at for (at, _), ok in zip(pending, finite) if not ok), None)
        else:
            per_sample, value = self.backend.loss(outputs, y, not lean)
        rec = self._records["loss"] = LossRecord(self._step, self.scenario.loss.kind, outputs[-1], y, per_sample, value)
        self._history.add_loss(value, self._epoch, len(indices))
        self._phase = 2
        if bad_at is not None:
            self._bad_at = bad_at
            return LEAN_NONFINITE
        return nonfinite.in_loss(rec) if check else None

    def _backward(self, check: bool) -> NonFinite | None:
        indices, x, y = self._batch
        outputs = self._records["forward"].outputs
        lean = self._lean and hasattr(self.backend, "backward_lean")
        if lean:       # the gradients without δ of every layer (torch asks autograd for less)
            grad_output, deltas, grads = None, (), self.backend.backward_lean(x, outputs, y)
            self._lean_records = True
        else:
            grad_output, deltas, grads = self.backend.backward(x, outputs, y)
        sq = self.backend.grad_sq_norms(grads)
        norms = {name: math.sqrt(v) for name, v in sq.items()}
        total = math.sqrt(sum(sq.values()))
        rec = self._records["backward"] = BackwardRecord(self._step, grad_output, deltas, grads, norms, total)
        self._history.add_grad_norms(norms)
        self._phase = 3
        # ‖∇L‖ is finite exactly when every gradient is finite and no square overflows,
        # which also keeps every optimizer state finite in the update that follows.
        if check and not math.isfinite(total):      # lean: the culprit may be a δ, searched in full
            return LEAN_NONFINITE if lean else nonfinite.in_backward(rec, self._layer_names)
        return None

    def _update(self, check: bool) -> NonFinite | None:
        grads = self._records["backward"].grads
        optimizer = self.backend.optimizer
        if self._lean and self._lean_update:
            return self._update_lean(grads, optimizer, check)
        updates = self.backend.update(grads)
        self._history.add_update_norms(update_norms.of_record(updates, self._history.norm_names,
                                                              self.backend.params()))
        rec = self._records["update"] = UpdateRecord(self._step, optimizer, optimizer.lr, updates)
        self._next_iteration()
        self._timeline.save(self._checkpoint())
        if check:
            ups = updates.values()
            guarded = getattr(optimizer, "guarded_state", None)
            values = [u.new for u in ups]
            values += [v for u in ups for k, v in u.state_after.items() if guarded is None or k in guarded]
            if not arrays.all_finite(values):
                return nonfinite.in_update(rec)
        return None

    def _next_iteration(self) -> None:
        """After an update: the cursor at the start of the next iteration."""
        self._offset += len(self._batch[0])
        self._step += 1
        if self._offset >= self.n:
            self._epoch, self._iteration, self._offset = self._epoch + 1, 1, 0
        else:
            self._iteration += 1
        self._phase = 0
        self._batch = None
        if self._timeline.edits and self._step in self._timeline.edits:     # recomputing: the loop's own change
            self.backend.load_params(self._timeline.edits[self._step])

    def _checkpoint(self) -> Checkpoint:
        return Checkpoint(self._step, self._epoch, self._iteration, self._offset, self._batch_size, self.backend.capture())

    # -- breakpoints --------------------------------------------------------------

    def add_breakpoint(self, condition: str, log: bool = True) -> Breakpoint:
        bp = self.breakpoints.add(self._condition(condition))
        if log:
            self._log("setting", f"breakpoint {bp.id}: {bp.text}")
        return bp

    def remove_breakpoint(self, id: int) -> Breakpoint:
        bp = self.breakpoints.remove(id)
        self._log("setting", f"breakpoint {bp.id} removed: {bp.text}")
        return bp

    def current_batch(self) -> tuple[np.ndarray, Any, Any]:
        """(indices, x, y) of the iteration in progress, or of the next one at a boundary."""
        if self._phase:
            return self._batch
        indices = self.next_batch_indices()
        x, y = self.backend.batch(indices)
        return indices, x, y

    # -- events -------------------------------------------------------------------------------

    def _log(self, kind: str, message: str) -> Event:
        event = Event(time.time(), self._step, kind, message)
        self.events.append(event)
        return event

    def log(self, kind: str, message: str) -> Event:
        """Add a line to the event log (the TUI and scripts report here too)."""
        return self._log(kind, message)

    def describe(self) -> str:
        s = self.scenario
        return f"{s.name}: {self.backend.name} on {self.backend.device}, {self.backend.dtype}, {self.where}"

    def __repr__(self) -> str:
        return f"<Session {self.describe()}>"


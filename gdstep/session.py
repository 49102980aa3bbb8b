"""The Session: training one phase at a time, remembering everything, rewinding exactly.

One object serves the TUI, scripts and notebooks. It owns the cursor, the batches, the
history, the breakpoints and the event log; the backend owns the parameters and the
optimizer state. Phases run strictly in order:

    forward → loss → backward → update        (one iteration = one mini-batch)

`step`, `epoch`, `run` and `run_to` are runs: they check breakpoints after each phase and
pause on any non-finite value, keeping the state from before the phase that made it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from gdstep import arrays
from gdstep.conditions import Condition, parse_condition
from gdstep.data import epoch_permutation
from gdstep.errors import GdstepError, PhaseOrderError
from gdstep.history import Boundary, Timeline
from gdstep.records import (PHASES, BackwardRecord, Cursor, Event, ForwardRecord, LossRecord, NonFinite,
                            RunResult, UpdateRecord)

SETTINGS = ("optimizer", "lr", "batch_size")


@dataclass
class Breakpoint:
    id: int
    condition: Condition
    enabled: bool = True
    hits: int = 0

    @property
    def text(self) -> str:
        return self.condition.text


class Session:
    def __init__(self, scenario, backend, history_budget: int = 64 * 2**20, attached: bool = False):
        self.scenario = scenario
        self.backend = backend
        self.attached = attached          # a user's own training loop (attach mode), not a scenario
        self.n = backend.n_samples
        self.seed = scenario.seed
        self.shuffle = scenario.training.shuffle
        self.epochs = scenario.training.epochs
        self.events: list[Event] = []
        self.breakpoints: list[Breakpoint] = []
        self.watches: list[tuple[str, tuple[int, ...]]] = []
        self.stop_when = parse_condition(scenario.training.stop_when).check_names(backend.param_shapes) \
            if scenario.training.stop_when else None
        self._next_breakpoint_id = 1
        self._batch_size = scenario.training.batch_size
        self._step, self._epoch, self._iteration, self._offset, self._phase = 0, 1, 1, 0, 0
        self._perm_epoch: int | None = None
        self._perm: np.ndarray | None = None
        self._batch: tuple[np.ndarray, Any, Any] | None = None
        self._records: dict[str, Any] = {}
        self._settings_log: dict[int, dict[str, Any]] = {}
        # Per-iteration history, compact (8 bytes a value) since it grows with every step:
        # the loss, its epoch and batch size, and ‖∂L/∂W‖ of each trainable parameter.
        self._losses = array("d")
        self._loss_epochs = array("q")
        self._loss_sizes = array("q")
        self._norm_names = tuple(n for n in backend.param_shapes if n in backend.trainable)
        self._grad_norms = array("d")         # len(_norm_names) values a step, nan where none
        self._by_phase: dict[str, list[Breakpoint]] = {p: [] for p in PHASES}
        self._timeline = Timeline(backend.snapshot_nbytes, budget=history_budget)
        self._timeline.save(self._boundary())
        self._phase_fns = (self._forward, self._loss, self._backward, self._update)
        self._layer_names = tuple(f"{info.name} {info.kind}" for info in backend.layers)
        # A run checks each linear layer's z and the last output: our activations map finite
        # inputs to finite outputs, so this finds any non-finite activation. Other layers (a
        # custom module's) are all checked.
        from gdstep.nn.layers import keeps_finite
        self._checked_layers = tuple(i for i, info in enumerate(backend.layers)
                                     if not keeps_finite(info.kind) or i == len(backend.layers) - 1)
        for text in scenario.breakpoints:
            self.add_breakpoint(text, log=False)
        for note in getattr(backend, "notes", ()):     # e.g. device "auto" fell back to the cpu
            self._log("info", note)

    # -- where we are ------------------------------------------------------------------------

    @property
    def cursor(self) -> Cursor:
        return Cursor(self._epoch, self._iteration, PHASES[self._phase])

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
        return self._pending("optimizer", self.backend.optimizer, with_lr=True)

    @property
    def lr(self) -> float:
        return self.optimizer.lr

    @property
    def iterations_per_epoch(self) -> int:
        used = self._offset + (len(self._batch[0]) if self._batch and self._phase else 0)
        done = self._iteration - (0 if self._phase else 1)
        return done + math.ceil((self.n - used) / self.batch_size) if used < self.n else done

    def _pending(self, key: str, current: Any, with_lr: bool = False) -> Any:
        """A setting as it will be for the next iteration to start."""
        if self._phase:
            return current
        entry = self._settings_log.get(self._step, {})
        value = entry.get(key, current)
        if with_lr and "lr" in entry:
            value = dataclasses.replace(value, lr=entry["lr"]) if dataclasses.is_dataclass(value) else value
        return value

    # -- values ------------------------------------------------------------------------------

    @property
    def params(self) -> dict[str, np.ndarray]:
        return {name: arrays.to_numpy(p).copy() for name, p in self.backend.params().items()}

    @property
    def grads(self) -> dict[str, np.ndarray]:
        rec = self._records.get("backward")
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
        return self._records.get(phase)

    @property
    def records(self) -> dict[str, Any]:
        return dict(self._records)

    @property
    def loss_value(self) -> float | None:
        return self._losses[-1] if self._losses else None

    @property
    def prev_loss(self) -> float | None:
        return self._losses[-2] if len(self._losses) > 1 else None

    @property
    def history(self) -> "History":
        """A copy of the per-iteration history (cheap: compact arrays are copied whole)."""
        return History(array("d", self._losses), array("q", self._loss_epochs), array("q", self._loss_sizes),
                       GradNormRows(self._norm_names, array("d", self._grad_norms)))

    def evaluate(self) -> tuple[float, float | None]:
        """Loss and, for classifiers, accuracy on the whole dataset with the current parameters."""
        return self.backend.evaluate()

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
        with np.errstate(all="ignore"):
            bad = self._phase_fns[phase](True)
        if bad is not None:
            self._log("nonfinite", f"{bad} (the phase ran; rewind with back)")

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._perm_epoch != epoch:
            self._perm = epoch_permutation(self.seed, epoch, self.n) if self.shuffle else np.arange(self.n)
            self._perm_epoch = epoch
        return self._perm

    def next_batch_indices(self) -> np.ndarray:
        """The rows the next forward phase will use (or the current one's, mid-iteration)."""
        if self._phase:
            return self._batch[0]
        size = self.batch_size if self._settings_log else (self._batch_size or self.n)
        return self._epoch_order(self._epoch)[self._offset:self._offset + size]

    def _apply_settings(self) -> None:
        entry = self._settings_log.get(self._step)
        if not entry:
            return
        if "optimizer" in entry:
            self.backend.set_optimizer(entry["optimizer"])
        if "lr" in entry:
            self.backend.set_optimizer(dataclasses.replace(self.backend.optimizer, lr=entry["lr"]), fresh_state=False)
        if "batch_size" in entry:
            self._batch_size = entry["batch_size"]

    def _forward(self, check: bool) -> NonFinite | None:
        if self._settings_log:
            self._apply_settings()
        indices = self.next_batch_indices()
        x, y = self.backend.batch(indices)
        outputs = self.backend.forward(x)
        self._batch = (indices, x, y)
        self._records["forward"] = ForwardRecord(self._step, self._epoch, self._iteration, indices, x, outputs,
                                                 self._layer_names)
        self._phase = 1
        if check and not arrays.all_finite([outputs[i] for i in self._checked_layers]):
            for i, out in enumerate(outputs):
                hit = arrays.first_nonfinite(out)
                if hit:
                    return NonFinite("forward", f"layer {self._layer_names[i]} output", hit[0], hit[1])
        return None

    def _loss(self, check: bool) -> NonFinite | None:
        indices, x, y = self._batch
        outputs = self._records["forward"].outputs
        per_sample, value = self.backend.loss(outputs, y)
        self._records["loss"] = LossRecord(self._step, self.scenario.loss.kind, outputs[-1], y, per_sample, value)
        self._losses.append(value)
        self._loss_epochs.append(self._epoch)
        self._loss_sizes.append(len(indices))
        self._phase = 2
        if check and not math.isfinite(value):
            hit = arrays.first_nonfinite(per_sample)
            if hit:
                return NonFinite("loss", "loss of sample", hit[0], hit[1])
            return NonFinite("loss", "loss (the sum over the batch overflowed)", None, value)
        return None

    def _backward(self, check: bool) -> NonFinite | None:
        indices, x, y = self._batch
        outputs = self._records["forward"].outputs
        grad_output, deltas, grads = self.backend.backward(x, outputs, y)
        sq = self.backend.grad_sq_norms(grads)
        norms = {name: math.sqrt(v) for name, v in sq.items()}
        total = math.sqrt(sum(sq.values()))
        self._records["backward"] = BackwardRecord(self._step, grad_output, deltas, grads, norms, total)
        self._grad_norms.extend([norms.get(n, math.nan) for n in self._norm_names])
        self._phase = 3
        if check and not math.isfinite(total):
            # ‖∇L‖ is finite exactly when every gradient is finite and no square overflows,
            # which also keeps every optimizer state finite in the update that follows.
            for name, g in grads.items():
                hit = arrays.first_nonfinite(g)
                if hit:
                    return NonFinite("backward", f"{name} gradient", hit[0], hit[1])
            for i, d in enumerate(deltas):
                hit = arrays.first_nonfinite(d)
                if hit:
                    return NonFinite("backward", f"δ of layer {self._layer_names[i]}", hit[0], hit[1])
            return NonFinite("backward", "‖∇L‖ (the squared gradient norm overflowed)", None, total)
        return None

    def _update(self, check: bool) -> NonFinite | None:
        grads = self._records["backward"].grads
        optimizer = self.backend.optimizer
        updates = self.backend.update(grads)
        self._records["update"] = UpdateRecord(self._step, optimizer, optimizer.lr, updates)
        self._offset += len(self._batch[0])
        self._step += 1
        if self._offset >= self.n:
            self._epoch, self._iteration, self._offset = self._epoch + 1, 1, 0
        else:
            self._iteration += 1
        self._phase = 0
        self._batch = None
        self._timeline.save(self._boundary())
        if check:
            ups = updates.values()
            guarded = getattr(optimizer, "guarded_state", None)
            values = [u.new for u in ups]
            values += [v for u in ups for k, v in u.state_after.items() if guarded is None or k in guarded]
            if not arrays.all_finite(values):
                for name, u in updates.items():
                    hit = arrays.first_nonfinite(u.new)
                    if hit:
                        return NonFinite("update", name, hit[0], hit[1])
                    for key, value in u.state_after.items():
                        hit = arrays.first_nonfinite(value)
                        if hit:
                            return NonFinite("update", f"{name} state {key}", hit[0], hit[1])
        return None

    def _boundary(self) -> Boundary:
        return Boundary(self._step, self._epoch, self._iteration, self._offset, self._batch_size, self.backend.capture())

    # -- runs --------------------------------------------------------------------------------

    def step(self, n: int = 1, **kw) -> RunResult:
        """Run n whole iterations (finishing the current one counts as the first)."""
        if n < 1:
            return self._no_run(n, "step")
        target = self._step + n
        return self._run(lambda: self._phase == 0 and self._step >= target, **kw)

    def epoch(self, n: int = 1, **kw) -> RunResult:
        """Run to the end of the n-th epoch from here (finishing the current one counts)."""
        if n < 1:
            return self._no_run(n, "epoch")
        target = self._epoch + n
        return self._run(lambda: self._phase == 0 and self._epoch >= target, **kw)

    def run_to(self, phase: str, **kw) -> RunResult:
        """Run phases until `phase` has just run (at most one iteration)."""
        if phase not in PHASES:
            raise GdstepError(f"no phase {phase!r} (phases: {', '.join(PHASES)})")
        target = (PHASES.index(phase) + 1) % 4
        return self._run(lambda: self._phase == target, **kw)

    def run(self, until: str | Condition | None = None, max_steps: int | None = None, **kw) -> RunResult:
        """Run until a breakpoint, `until`, the scenario's stop_when, max_steps iterations or
        the scenario's epoch limit, whichever comes first."""
        cond = self._condition(until) if until is not None else None
        if max_steps is not None and max_steps < 1:
            return self._no_run(max_steps, "run: max_steps", "max_steps")
        start = self._step
        done = (lambda: self._phase == 0 and self._step - start >= max_steps) if max_steps is not None else None
        return self._run(done, until=cond, epoch_limit=True, done_reason="max_steps", **kw)

    def _no_run(self, n: int, what: str, reason: str = "done") -> RunResult:
        """step(0), epoch(0), run(max_steps=0) run nothing (the run loop runs a phase before
        it checks whether it is done); a negative count is a mistake."""
        if n < 0:
            raise GdstepError(f"{what}: expected a whole number >= 0, got {n}")
        return RunResult(reason, 0, 0, self.cursor, "nothing to run (0 iterations)")

    def _condition(self, text: str | Condition) -> Condition:
        if isinstance(text, Condition):
            return text
        return parse_condition(text).check_names(self.backend.param_shapes)

    def _run(self, done: Callable[[], bool] | None, until: Condition | None = None, epoch_limit: bool = False,
             done_reason: str = "done", on_phase: Callable[[], bool] | None = None) -> RunResult:
        """The run loop. `on_phase` is called after every phase (from the caller's thread);
        returning True pauses the run there."""
        with np.errstate(all="ignore"):
            return self._run_loop(done, until, epoch_limit, done_reason, on_phase)

    def _run_loop(self, done, until, epoch_limit, done_reason, on_phase) -> RunResult:
        start_position, start_step = self.position, self._step
        stop_when = self.stop_when if epoch_limit else None   # the scenario's limits bound `run`, not step/epoch
        watch_until = until.phases if until else frozenset()
        watch_stop = stop_when.phases if stop_when else frozenset()
        reason = message = None
        bad: NonFinite | None = None
        phases = 0
        while True:
            if epoch_limit and self._phase == 0 and self._epoch > self.epochs:
                reason, message = "epochs", f"reached the epoch limit ({self.epochs})"
                break
            phase = self._phase
            name = PHASES[phase]
            bad = self._phase_fns[phase](True)
            if bad is not None:
                self._seek(self.position - 1)
                reason, message = "nonfinite", f"paused: {bad}; state kept from before {bad.phase}"
                self._log("nonfinite", message)
                break
            phases += 1
            hit = None
            for bp in self._by_phase[name]:
                if bp.enabled and bp.condition(self):
                    hit = bp
                    break
            if hit is not None:
                hit.hits += 1
                reason = "breakpoint"
                message = f"breakpoint {hit.id} hit: {hit.text} ({hit.condition.describe(self)})"
                self._log("breakpoint", message)
                break
            if until is not None and name in watch_until and until(self):
                reason, message = "until", f"until {until.text} ({until.describe(self)})"
                self._log("stop", message)
                break
            if stop_when is not None and name in watch_stop and stop_when(self):
                reason, message = "stop_when", f"stop_when {stop_when.text} ({stop_when.describe(self)})"
                self._log("stop", message)
                break
            if done is not None and done():
                reason, message = done_reason, ("done" if done_reason == "done" else "reached max_steps")
                break
            if on_phase is not None and on_phase():
                reason, message = "paused", "paused"
                break
        return RunResult(reason, phases, self._step - start_step, self.cursor, message, bad)

    # -- breakpoints and watches --------------------------------------------------------------

    def add_breakpoint(self, condition: str, log: bool = True) -> Breakpoint:
        bp = Breakpoint(self._next_breakpoint_id, self._condition(condition))
        self._next_breakpoint_id += 1
        self.breakpoints.append(bp)
        self._index_breakpoints()
        if log:
            self._log("setting", f"breakpoint {bp.id}: {bp.text}")
        return bp

    def remove_breakpoint(self, id: int) -> Breakpoint:
        for bp in self.breakpoints:
            if bp.id == id:
                self.breakpoints.remove(bp)
                self._index_breakpoints()
                self._log("setting", f"breakpoint {bp.id} removed: {bp.text}")
                return bp
        raise GdstepError(f"no breakpoint {id} (breakpoints: {', '.join(str(b.id) for b in self.breakpoints) or 'none'})")

    def _index_breakpoints(self) -> None:
        self._by_phase = {p: [bp for bp in self.breakpoints if p in bp.condition.phases] for p in PHASES}

    # -- settings ----------------------------------------------------------------------------

    def set(self, lr: float | None = None, optimizer: Any = None, batch_size: int | str | None = None,
            **hyperparameters: Any) -> int:
        """Change settings from the next iteration to start (this one, at a boundary).

        `optimizer` is a kind (`"adam"`) or an optimizer config; a new optimizer starts with
        fresh state and keeps the current lr unless `lr` is given; extra keyword arguments are
        its hyperparameters. A change made after a rewind starts a new branch: what was
        computed beyond this point is dropped. Returns the step the change takes effect at.
        """
        from gdstep.optim import make_optimizer

        changes: dict[str, Any] = {}
        current = self.optimizer
        if optimizer is not None or hyperparameters:
            if optimizer is None:
                kind = current.kind
            elif isinstance(optimizer, str):
                kind = optimizer
            else:
                kind = None
            if kind is not None:
                args = dict(hyperparameters)
                args.setdefault("lr", current.lr if lr is None else lr)
                if kind == current.kind and optimizer is None:
                    base = {f.name: getattr(current, f.name) for f in dataclasses.fields(current)}
                    base.update(args)
                    args = base
                try:
                    changes["optimizer"] = make_optimizer(kind, **args)
                except (ValueError, TypeError) as e:
                    raise GdstepError(f"set optimizer: {e}") from None
            else:
                changes["optimizer"] = optimizer
        elif lr is not None:
            if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr < 0:
                raise GdstepError(f"set lr: the learning rate must be a number >= 0, got {lr!r}")
            changes["lr"] = float(lr)
        if batch_size is not None:
            if batch_size == "full":
                changes["batch_size"] = None
            elif isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1:
                changes["batch_size"] = batch_size
            else:
                raise GdstepError(f"set batch_size: expected a positive integer or \"full\", got {batch_size!r}")
        if not changes:
            raise GdstepError("set: nothing to change (lr, optimizer or batch_size)")
        at = self._step + (1 if self._phase else 0)
        self._timeline.truncate_after(at)
        for step in [s for s in self._settings_log if s > at]:
            del self._settings_log[step]
        entry = self._settings_log.setdefault(at, {})
        if "optimizer" in changes:
            entry.pop("lr", None)
        entry.update(changes)
        when = "this iteration" if at == self._step else "the next iteration"
        for key, value in changes.items():
            shown = _describe_optimizer(value) if key == "optimizer" else ("full" if value is None else value)
            self._log("setting", f"{key} → {shown} from {when} (step {at})")
        return at

    # -- rewind -------------------------------------------------------------------------------

    def back(self, phases: int | None = None, iterations: int | None = None) -> Cursor:
        """Rewind by phases, or by whole iterations (to the same phase that many iterations
        earlier). Exact to the bit; clamps at the start."""
        if phases is None and iterations is None:
            phases = 1
        if phases is not None and iterations is not None:
            raise GdstepError("back: give phases or iterations, not both")
        count = phases if phases is not None else iterations * 4
        if not isinstance(count, int) or count < 0:
            raise GdstepError(f"back: expected a whole number >= 0, got {phases if phases is not None else iterations!r}")
        before = self.cursor
        target = max(0, self.position - count)
        self._seek(target)
        self._log("rewind", f"back from {before} to {self.cursor}")
        return self.cursor

    def seek(self, position: int) -> Cursor:
        """Go to an absolute position (phases since the start); forward means recomputing."""
        if position < 0:
            raise GdstepError("seek: position must be >= 0")
        self._seek(position)
        return self.cursor

    def _seek(self, target: int) -> None:
        with np.errstate(all="ignore"):
            self._seek_to(target)

    def _seek_to(self, target: int) -> None:
        t_step = target // 4
        if target >= self.position:
            while self.position < target:
                self._phase_fns[self._phase](False)
            return
        boundary = self._timeline.at_or_before(max(t_step - 1, 0))
        self.backend.restore(boundary.backend)
        self._step, self._epoch, self._iteration = boundary.step, boundary.epoch, boundary.iteration
        self._offset, self._batch_size, self._phase = boundary.offset, boundary.batch_size, 0
        self._batch, self._records = None, {}
        del self._losses[boundary.step:], self._loss_epochs[boundary.step:], self._loss_sizes[boundary.step:]
        del self._grad_norms[boundary.step * len(self._norm_names):]
        self._timeline.start_near()
        dense_from = t_step - self._timeline.recent
        while self.position < target:
            self._phase_fns[self._phase](False)
            if self._phase == 0 and self._step >= dense_from:
                self._timeline.save(self._boundary(), near=True)

    # -- explanation --------------------------------------------------------------------------

    def explain(self, name: str, index: tuple[int, ...] | int):
        from gdstep.explain import explain
        return explain(self, name, _as_index(index))

    def chain_rule(self, name: str, index: tuple[int, ...] | int):
        from gdstep.explain import chain_rule
        return chain_rule(self, name, _as_index(index))

    def compare_backends(self, steps: int = 5, device: str | None = None):
        """Run this scenario a few steps on numpy and torch (float64) from the start; see gdstep.parity."""
        from gdstep.parity import compare_backends
        return compare_backends(self.scenario, steps=steps, device=device)

    def gradcheck(self, name: str, index: tuple[int, ...] | int, h: float | None = None):
        from gdstep.gradcheck import gradcheck
        result = gradcheck(self, name, _as_index(index), h)
        self._log("gradcheck", str(result))
        return result

    def current_batch(self) -> tuple[np.ndarray, Any, Any]:
        """(indices, x, y) of the iteration in progress, or of the next one at a boundary."""
        if self._phase:
            return self._batch
        indices = self.next_batch_indices()
        x, y = self.backend.batch(indices)
        return indices, x, y

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
        if rec is None or (name is not None and name not in rec.params):
            return None
        return rec.update_ratio(name)

    def find_nonfinite(self) -> NonFinite | None:
        """The first non-finite value anywhere: parameters, optimizer state, latest records."""
        for name, p in self.backend.params().items():
            hit = arrays.first_nonfinite(p)
            if hit:
                return NonFinite(self.last_phase or "start", name, hit[0], hit[1])
        for name, state in self.backend.optimizer_state().items():
            for key, v in state.items():
                hit = arrays.first_nonfinite(v)
                if hit:
                    return NonFinite(self.last_phase or "start", f"{name} state {key}", hit[0], hit[1])
        fwd = self._records.get("forward")
        if fwd is not None:
            for i, out in enumerate(fwd.outputs):
                hit = arrays.first_nonfinite(out)
                if hit:
                    return NonFinite("forward", f"layer {self._layer_names[i]} output", hit[0], hit[1])
        loss = self._records.get("loss")
        if loss is not None and not math.isfinite(loss.value):
            return NonFinite("loss", "loss", None, loss.value)
        bwd = self._records.get("backward")
        if bwd is not None:
            for name, g in bwd.grads.items():
                hit = arrays.first_nonfinite(g)
                if hit:
                    return NonFinite("backward", f"{name} gradient", hit[0], hit[1])
        return None

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
        return f"{s.name}: {self.backend.name} on {self.backend.device}, {self.backend.dtype}, {self.cursor}"

    def __repr__(self) -> str:
        return f"<Session {self.describe()}>"


_VALUES: dict[str, Callable[[Session], Any]] = {
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


def _as_index(index: tuple[int, ...] | int) -> tuple[int, ...]:
    if isinstance(index, int):
        return (index,)
    return tuple(int(i) for i in index)


def _describe_optimizer(opt: Any) -> str:
    if dataclasses.is_dataclass(opt):
        args = ", ".join(f"{f.name}={getattr(opt, f.name)!r}" for f in dataclasses.fields(opt))
        return f"{opt.kind}({args})"
    return repr(opt)


class GradNormRows(Sequence):
    """‖∂L/∂W‖ per parameter for each iteration, stored flat; row i reads as a dict."""

    def __init__(self, names: tuple[str, ...], values: array):
        self.names, self.values = names, values

    def __len__(self) -> int:
        return len(self.values) // len(self.names) if self.names else 0

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        k = len(self.names)
        row = self.values[i * k:(i + 1) * k]
        return {name: v for name, v in zip(self.names, row) if not math.isnan(v)}


@dataclass(frozen=True)
class History:
    """Per-iteration values so far: the loss, its epoch and batch size, gradient norms."""

    losses: Sequence[float]
    epochs: Sequence[int]
    batch_sizes: Sequence[int]
    grad_norms: Sequence[Mapping[str, float]]

    def epoch_losses(self) -> list[tuple[int, float]]:
        """The mean loss of each epoch so far, weighted by batch size."""
        out: dict[int, list[float]] = {}
        for loss, epoch, size in zip(self.losses, self.epochs, self.batch_sizes):
            acc = out.setdefault(epoch, [0.0, 0.0])
            acc[0] += loss * size
            acc[1] += size
        return [(e, total / count) for e, (total, count) in out.items()]

    def grad_norm_series(self, name: str) -> list[float]:
        rows = self.grad_norms
        if isinstance(rows, GradNormRows) and name in rows.names:
            k, j = len(rows.names), rows.names.index(name)
            return list(rows.values[j::k])
        return [norms.get(name, math.nan) for norms in rows]

"""Running ahead: a run's iterations computed first, their phases checked after.

A run checks after each phase whether to stop (gdstep.run_loop): its history, its records,
its conditions. On a small model that Python costs a tenth of the iteration, and more when
it runs between the numerical work, whose arrays push the interpreter's own data out of
the cache. So where nothing the run checks needs the parameters of the moment — its
conditions read only the loss, the gradient norms, the learning rate and the cursor
(`AHEAD_NAMES`), and no caller looks in after each phase — the run computes up to `AHEAD`
whole iterations first: each one's lean phases and update exactly as the run loop calls
them, its finiteness tests, the checkpoints the timeline's grid keeps. (Where an update's
test reads the tensors, one test after the last update stands for all of them: see
`_compute_ahead`.) Then it takes their phases in order as the run loop would
(`_check_ahead`): the history, the records, and whether the run would stop after each.

Where a phase would stop the run — a breakpoint, `until`, `stop_when`, the count — or an
iteration had a non-finite value, the session goes back to where the look ahead began
(recomputed from the checkpoint at or before it, exactly as a rewind) and the run loop
runs the iterations again phase by phase up to that one, so it stops where and as it would
have, with its message, its hit count and its culprit. So that a run which stops soon
wastes little, a run's first iteration is not looked ahead of, nor the one after a stop,
and the look aheads then grow: 1, 2, 4, … up to `AHEAD`. Mixed into the Session.
"""

from __future__ import annotations

import math
import time
from typing import Callable

from gdstep.records import PHASES, BackwardRecord, ForwardRecord, LossRecord, UpdateRecord
from gdstep.update_norms import COPY_LARGE

AHEAD = 64                 # iterations computed before their phases are checked, at most (the
                           # first iteration of a run and after a stop: none; then 1, 2, 4, …)
AHEAD_SECONDS = 0.05       # or about this much time of them: a stop recomputes no more. The first
                           # iterations after a look ahead's checks run slower (torch's small MLP:
                           # ~0.4 ms in all): 50 ms rather than 20 gained 1.5 % there
DEVICE_CAPTURE_LARGE = 1 << 27    # bytes of parameters from which a look ahead on a device does not
                                  # run (it began with a capture of hundreds of megabytes; it takes
                                  # none now, but such models' look aheads are unmeasured on a GPU)
BATCHES_AHEAD_BYTES = 1 << 24     # of batches drawn before a look ahead's iterations, at most
AHEAD_NAMES = frozenset({"loss", "prev_loss", "grad_norm", "lr", "epoch", "iteration", "step", "phase"})


class RunAhead:
    def _can_run_ahead(self, conditions, on_phase) -> bool:
        """Whether this run may compute iterations before checking them (`look_ahead`, on by
        default): a backend whose recomputation is exact (the engine, a scenario's torch
        model under 1 MiB of parameters on the CPU, under `DEVICE_CAPTURE_LARGE` on a
        device, whose look aheads read back once: gdstep.backends.torch_ahead), no caller
        called after each phase, and conditions that read nothing but the history and the
        cursor (not a parameter, `update_ratio`, `nan`, another lane)."""
        self._ahead_reads = frozenset().union(*(cond.names for cond in conditions if cond is not None))
        self._ahead_by_name = any(label.startswith("grad_norm(") for cond in conditions if cond is not None
                                  for label, _ in cond.reads)       # a parameter's own gradient norm
        device = self._defer and hasattr(self.backend, "iteration_on_device")
        if (not self.look_ahead or on_phase is not None or self.attached or (self._defer and not device)
                or not self._lean_update or not getattr(self.backend, "runs_ahead", False)
                or self.replay_inexact is not None
                # a model of 1 MiB or more on the CPU: its look aheads are an iteration or two, and measured
                # slower (784-1024-1024-10, one an iteration: 34.1 ms an iteration against 32.5)
                or self._measure_nbytes >= (DEVICE_CAPTURE_LARGE if device else COPY_LARGE)
                or not (self._fused_lean or hasattr(self.backend, "forward_lean"))):
            return False
        for cond in conditions:
            if cond is None:
                continue
            if (not cond.names <= AHEAD_NAMES or any(index is not None for _, index, _ in cond.params)
                    or any(label.startswith("lane(") for label, _ in cond.reads)):
                return False
        return True

    def _run_ahead(self, stops_after: Callable[[str], list], done, epoch_limit: bool, size: int) -> int | None:
        """From the start of an iteration: compute up to `size` iterations ahead, then check
        their phases (`stops_after(phase)`: the conditions the run loop asks after it; and
        `done` after each update). Returns None where the session
        stands after the last one's update, whose checks are the caller's; else the session
        is back where it began (`_back_to_start`), for the run loop to run the iterations
        again phase by phase up to the returned step, the one that stops (or was not
        finite), where it may look ahead again."""
        start = (self._step, self._epoch, self._iteration, self._offset, self._batch_size)
        kept = (dict(self._records), self._lean_records, list(self._flags))
        try:
            rows, bad, last = self._compute_ahead(done, epoch_limit, size)
            end = (self._step, self._epoch, self._iteration, self._offset)
            stop = None if bad == "updates" else self._check_ahead(
                rows, [[condition.fn for condition in stops_after(name)] for name in PHASES], done)
            if stop is None and not bad:
                self._step, self._epoch, self._iteration, self._offset = end
                self._phase, self._batch = 0, None
                self._last_records(rows[-1], last)
                return None
            again = end[0] if stop is None else rows[stop][0][0]
            self._back_to_start(start, kept)
            return again + 1
        except BaseException:           # an interrupt (Ctrl-C), a backend's error: as before the look ahead
            self._back_to_start(start, kept)
            raise

    def _back_to_start(self, start: tuple, kept: tuple) -> None:
        """The session where a look ahead began: the backend's state then, recomputed from
        the timeline's checkpoint at or before it by the run's own lean phases (exact to
        the bit, as a rewind; no capture is taken at a look ahead's start: it would copy the
        parameters and the optimizer's state each time for a stop that comes once a run);
        the cursor, the history, the records as they were. The checkpoints taken meanwhile
        stay: they hold the iterations the run loop then computes again, the same to the
        bit. A device's pending finiteness flags, from the iteration before, are pending
        again (the recomputed iterations' own were read before the look ahead). Interrupted
        midway, the session stands whole at that checkpoint, as an interrupted rewind
        leaves it (`_recompute`)."""
        records, lean, flags = kept
        step = start[0]
        checkpoint = self._timeline.at_or_before(step)
        try:
            self._at_checkpoint(checkpoint)
            while self._step < step:
                self._phase_fns[self._phase](False)
        except BaseException:
            self._at_checkpoint(checkpoint)
            self._lean_records = True
            raise
        self._flags = flags
        self._step, self._epoch, self._iteration, self._offset, self._batch_size = start
        self._phase, self._batch = 0, None
        self._history.truncate(step)
        self._records.clear()
        self._records.update(records)
        self._lean_records = lean

    def _compute_ahead(self, done, epoch_limit: bool, size: int) -> tuple[list, str | None, tuple | None]:
        """Whole iterations, as the run loop's lean phases compute them, until `size` of
        them or `AHEAD_SECONDS` (on a device, of launching them), the run's end, a settings
        change, or one with a non-finite value. Returns (a row per iteration: its cursor,
        batch size, loss, ‖∂L/∂W‖², the update's norms; None, or "next" where the next
        iteration had a non-finite value, or "updates" where one of the rows' updates did
        (on a device: where any value was not finite); the last row's records' values).

        Where the update's test reads what it changed (`update_test_reads`: no bounds),
        one test after the last update stands for all of them: a parameter or a guarded
        state (Adam's v, RMSprop's and Adagrad's sums) once non-finite stays so in every
        update after (x − y, β·v + …, max(v, …) of a NaN or an infinity are not finite)."""
        backend, checked, fused = self.backend, self._checked_layers, self._fused_lean
        fused = backend.forward_backward_lean if fused else getattr(backend, "iteration_ahead", None)
        device = self._defer             # on a device: each iteration's values stay there (`_read_rows`)
        deferred = device or getattr(backend, "update_test_reads", False)
        rows: list = []
        self._device_rows = [] if device else None
        last = None
        if self._settings and self._settings.at(self._step):     # a change: from a look ahead of its own
            self._apply_settings()
        batches = self._batches_ahead(min(size, self._ahead_fits + 1))
        started = time.perf_counter()
        while True:
            if rows and self._settings and self._settings.at(self._step):
                return self._tested(rows, None, last, deferred)
            at = (self._step, self._epoch, self._iteration, self._offset)
            if len(rows) < len(batches):
                indices, x, y = batches[len(rows)]
            else:
                indices = self.next_batch_indices()
                x, y = backend.batch(indices)
            if device:
                outputs, grads, row = backend.iteration_on_device(x, y, checked)
                self._device_rows.append(row)
                per_sample = value = sq = None
            elif fused is not None:        # the engine's fused phases; torch's on the CPU, its row read at once
                outputs, per_sample, value, grads, sq, finite = fused(x, y, checked)
            else:
                outputs, finite = backend.forward_lean(x, checked)
                per_sample, value = backend.loss(outputs, y, False)
                grads = backend.backward_lean(x, outputs, y) if finite and math.isfinite(value) else {}
                sq = backend.grad_sq_norms(grads)
            if not device and not (finite and math.isfinite(value)
                                   and math.isfinite(sum(sq.values() if isinstance(sq, dict) else sq))):
                return self._tested(rows, "next", last, deferred)
            finite, update_sq = self._lean_step(grads, not deferred)
            if not finite:                       # tested by itself
                return rows, "next", last
            self._batch = (indices, x, y)
            self._next_iteration()
            self._lean_checkpoint()
            rows.append((at, len(indices), value, sq, update_sq))
            last = (indices, x, y, outputs, per_sample, grads)
            if time.perf_counter() - started > AHEAD_SECONDS:
                self._ahead_fits = len(rows)      # about as many fit in the next one's time
                return self._tested(rows, None, last, deferred)
            if len(rows) >= size or (done is not None and done()) or (epoch_limit and self._epoch > self.epochs):
                return self._tested(rows, None, last, deferred)

    _ahead_fits = AHEAD        # iterations the last look ahead stopped by its time computed

    def _batches_ahead(self, count: int) -> list:
        """The batches of the next `count` iterations, (indices, x, y) as the cursor will
        reach them (their batch size is the one the settings give now: a change ends the
        look ahead). Drawn before its iterations, so that less Python runs between one
        iteration's numbers and the next: there it costs many times what it costs alone
        (measured: a plain torch loop on the MLP 64-128-128-10 that turns each batch's
        indices into a tensor between iterations, ~1 µs alone, takes 15 µs longer an
        iteration than one that turned them all before; drawing the batches here gained
        3.6 % on a torch run of it, and on the engine, whose iteration is one call, ~0.3 %)."""
        offset, epoch, n = self._offset, self._epoch, self.n
        size = self.batch_size if self._settings else (self._batch_size or n)
        batches: list = []
        while len(batches) < count:
            indices = self._epoch_order(epoch)[offset:offset + size]
            batches.append((indices, *self.backend.batch(indices)))
            if len(batches) == 1:          # large batches: fewer drawn before, the rest as they come
                nbytes = sum(getattr(a, "nbytes", 0) for a in batches[0][1:] if a is not None)
                count = min(count, max(1, BATCHES_AHEAD_BYTES // max(nbytes, 1)))
            offset += len(indices)
            if offset >= n:
                epoch, offset = epoch + 1, 0
        return batches

    def _tested(self, rows: list, bad: str | None, last: tuple | None, deferred: bool) -> tuple:
        """`_compute_ahead`'s result, its updates tested where they were not one by one."""
        if self._device_rows is not None:
            return self._read_rows(rows, last)
        if deferred and rows and not self.backend.updated_finite(last[-1]):
            return rows, "updates", last
        return rows, bad, last

    def _read_rows(self, rows: list, last: tuple | None) -> tuple:
        """On a device: the values each iteration left there, read back in one transfer with
        the last update's finiteness flag and any pending from before the look ahead, into
        the rows. Where one is not finite, "updates": the run loop runs them all again
        phase by phase (the backend's state is past the iteration that had it)."""
        pending, self._device_rows = self._device_rows, None
        if not rows:
            return rows, None, last
        grads = last[-1]
        values, finite = self.backend.read_ahead(pending, grads, [flag for _, flag in self._flags])
        self._flags = []
        for j, ((at, size, _, _, update_sq), row) in enumerate(zip(rows, values)):
            finite = finite and all(map(math.isfinite, row))       # the loss, the outputs' and gradients' norms
            norms = row[len(row) - len(grads):]
            rows[j] = (at, size, row[0], {name: v * v for name, v in zip(grads, norms)}, update_sq)
        return rows, None if finite else "updates", last

    def _check_ahead(self, rows: list, stops: list[list], done) -> int | None:
        """The computed iterations' phases in order, as the run loop takes them: the
        history, the gradient norms' record (where a condition reads a parameter's own),
        and whether the run would stop after the phase (`stops`: each phase's conditions,
        their functions; `done`, after an update; the last update's checks are the
        caller's). Returns the iteration where it would, or None. The conditions read an
        `AheadValues`: the values the session gives after each phase, kept as the phases
        are taken."""
        history, records = self._history, self._records
        losses, names = history.losses, history.norm_names
        forward, loss, backward, update = stops
        by_name = self._ahead_by_name
        total = "grad_norm" in self._ahead_reads
        values = {name: self.value(name) for name in ("loss", "prev_loss", "grad_norm", "lr")
                  if name in ("loss", "prev_loss") or name in self._ahead_reads}
        context = AheadValues(values, self.grad_norm)
        last, ordered = len(rows) - 1, None      # ordered: torch's norms come in the history's order
        for j, (at, size, value, sq, update_sq) in enumerate(rows):
            if j:
                self._phase = 0
                values["phase"] = "update"
                for holds in update:
                    if holds(context):
                        return j - 1
                if done is not None and done():
                    return j - 1
            else:
                self._step, self._epoch, self._iteration, self._offset = at
                values["step"], values["epoch"], values["iteration"] = at[0], at[1], at[2]
            self._phase = 1
            values["phase"] = "forward"
            for holds in forward:
                if holds(context):
                    return j
            history.add_loss(value, self._epoch, size)
            values["prev_loss"], values["loss"] = values["loss"], losses[-1]    # as the history gives them
            self._phase = 2
            values["phase"] = "loss"
            for holds in loss:
                if holds(context):
                    return j
            if isinstance(sq, dict):                  # torch: by name
                squares = sq.values()
                if ordered is None:
                    ordered = tuple(sq) == names
                if ordered:                           # every one, in the history's order
                    history.add_grad_squares(squares)
                    norms = None
                else:
                    norms = {name: math.sqrt(v) for name, v in sq.items()}
                    history.add_grad_norms(norms)
            else:                                     # the engine: every one, in the history's order
                squares = sq
                history.add_grad_squares(sq)
                norms = None
            if by_name or j == last:
                if norms is None:
                    norms = dict(zip(names, map(math.sqrt, squares)))
                records["backward"] = BackwardRecord(self._step, None, (), {}, norms, math.sqrt(sum(squares)))
                values["grad_norm"] = records["backward"].grad_norm
            elif total:
                values["grad_norm"] = math.sqrt(sum(squares))      # the record's own sum
            self._phase = 3
            values["phase"] = "backward"
            for holds in backward:
                if holds(context):
                    return j
            history.add_update_norms(update_sq)
            if j < last:                        # the cursor after the update: the next one's start
                at = rows[j + 1][0]
                self._step, self._epoch, self._iteration, self._offset = at
                values["step"], values["epoch"], values["iteration"] = at[0], at[1], at[2]
        return None

    def _last_records(self, row: tuple, last: tuple) -> None:
        """The lean records of the last iteration computed, as its phases would have left
        them (a reader recomputes them in full)."""
        (step, epoch, iteration, _), _, value, _, _ = row
        indices, x, y, outputs, per_sample, grads = last
        records = self._records
        backward = records["backward"]
        records["forward"] = ForwardRecord(step, epoch, iteration, indices, x, outputs, self._layer_names)
        records["loss"] = LossRecord(step, self.scenario.loss.kind, outputs[-1], y, per_sample, value)
        records["backward"] = backward._replace(grads=grads)
        optimizer = self.backend.optimizer
        records["update"] = UpdateRecord(step, optimizer, optimizer.lr, {})
        self._lean_records = True


class AheadValues:
    """What a condition reads while a look ahead's phases are checked: the names of
    `AHEAD_NAMES` from a dict that `_check_ahead` keeps as the session would give them
    after each phase (one lookup a read, not the session's properties), and a parameter's
    own gradient norm from the session's records."""

    __slots__ = ("value", "grad_norm")

    def __init__(self, values: dict, grad_norm: Callable[[str | None], float | None]):
        self.value = values.__getitem__
        self.grad_norm = grad_norm

"""Rewinding and records on demand: restore the nearest checkpoint and recompute, exactly.

Rewinds restore the checkpoint at or before the target and run the phases again with full
records (the engine is deterministic, so the result is exact to the bit). A run's update
keeps no before/after values (`_update_lean`); the first read of its records recomputes them
the same way (`_materialise`). Mixed into the Session, whose state machine it drives.
"""

from __future__ import annotations

import sys

import time
from contextlib import nullcontext

import numpy as np

from gdstep import update_norms
from gdstep.errors import BackwardAgain, BatchesGone, GdstepError
from gdstep.records import LEAN_NONFINITE, Cursor, NonFinite, UpdateRecord


MAX_GRID = 1024          # a run coarsens the grid for its speed up to this many steps


class Rewind:
    def _update_lean(self, grads, optimizer, check: bool) -> NonFinite | None:
        """The update of a run: the optimizer's step and one fused finiteness test of what it
        changed, no before/after values; a checkpoint only where the timeline keeps one
        without being asked to (its grid), or where attach mode's kept batches end."""
        try:
            finite, norms = self._lean_step(grads, check)
        except BaseException:          # an interrupt (Ctrl-C) after the step, in its test
            self._update_undone()
            raise
        self._history.add_update_norms(norms)
        self._records["update"] = UpdateRecord(self._step, optimizer, optimizer.lr, {})
        self._lean_records = True
        self._next_iteration()
        self._lean_checkpoint()
        if not isinstance(finite, bool):         # a flag on the device, read later
            self._flags.append((self.position, finite))
        elif check and not finite:
            return LEAN_NONFINITE
        return None

    def _update_undone(self) -> None:
        """An update that did not finish (it raised, or was interrupted after the optimizer
        stepped): the parameters and the optimizer's state as they were before it (an exact
        recomputation to where the cursor stands), so that they agree with the cursor. Not
        in attach mode, whose loop owns its step, nor where a recomputation is not exact."""
        if not self.attached and self.replay_inexact is None:
            self._recompute_to(self.position)

    def _lean_step(self, grads, check: bool) -> tuple:
        """The optimizer's step of a run's update: (whether what it changed is finite — a
        bool, or a flag left on the device —, the update's [‖ΔW‖²…, ‖W_old‖²…] where this
        update is measured (update_norms.measured), else None)."""
        names = self._history.norm_names
        # watch mode: the parameters as they were before the loop's own step (taken in its pre-hook)
        kept, self._norms_before = self._norms_before, None
        measure = update_norms.measured(self._step, None if self.attached else self._step - self._run_start,
                                        self._measure_nbytes)
        if kept is None and measure and self._update_norms_lean is not None:     # the step and its norms at once
            return self._update_norms_lean(grads, check, defer=self._defer)
        if kept is None and measure:
            kept = update_norms.before(self.backend.params(), names)
        finite = self.backend.update_lean(grads, check, defer=self._defer)
        return finite, (update_norms.after(self.backend.params(), names, kept) if measure else None)

    def _lean_checkpoint(self) -> None:
        """After a run's update (the cursor at the next iteration): a checkpoint where the
        timeline's grid has one, or where attach mode's kept batches end."""
        step, timeline = self._step, self._timeline
        on_grid = step % timeline.interval == 0
        if on_grid and self._grid_cheap(step):
            timeline.coarsen()
            on_grid = step % timeline.interval == 0
        if on_grid or self._lean_gap < timeline.interval:
            gap = step - timeline.at_or_before(step).step
            if on_grid or gap >= self._lean_gap:
                timeline.make_room()
                timeline.save(self._checkpoint())
                self._checkpoint_at, self._checkpoint_step = time.thread_time(), step

    def keep_loop_edit(self, values: dict, horizon: int, log: bool = True) -> None:
        """Attach mode, at an iteration boundary: the loop changed these parameters in place
        since the update (`values`: copies, as it left them). Checkpoints and recomputations
        from here on hold them, so a rewind or a recomputed record never undoes the change."""
        first = not self._timeline.edits
        self._timeline.edit(self._checkpoint(), values, horizon)
        if first and log:
            self._log("info", f"iteration {self._step + 1}: the loop changed {edit_names(values)} in place "
                              "after the update (clipping, pruning, a buffer reset or assigned anew, or a forward "
                              "that writes its weights: an Embedding's max_norm): rewinds and recomputations keep its changes")

    def _grid_cheap(self, step: int) -> bool:
        """Whether the timeline's grid is too fine for this run: a grid period of its
        iterations takes under half of `checkpoint_seconds` (CPU time of the thread that runs
        them, whatever else the machine does). A checkpoint costs about one small iteration
        (fresh memory, every page of it faulted in once), so a run of small iterations
        coarsens the grid (as a full budget does) until one costs a small share of the
        run, and a rewind or materialisation recomputes under that time. Measured over at
        least 8 iterations of this run."""
        steps = step - self._checkpoint_step
        if steps < 8 or self._timeline.interval >= MAX_GRID:
            return False
        per_step = (time.thread_time() - self._checkpoint_at) / steps
        return per_step * self._timeline.interval < self.checkpoint_seconds / 2

    def _flush(self) -> bool:
        """Read the pending finiteness flags back (one transfer): True when one failed."""
        if not self._flags:
            return False
        pending, self._flags = self._flags, []
        finite = self.backend.read_flags([flag for _, flag in pending])
        self._bad_at = next((at for (at, _), ok in zip(pending, finite) if not ok), None)
        return self._bad_at is not None

    def _lean_culprit(self) -> NonFinite | None:
        """A fused test failed after the phase that ends at `_bad_at` (or the one just run):
        recompute from the start of that iteration to here with full records and checks,
        and name the first value that went bad; the cursor is then after its phase. None
        when there was none (a sum of finite values overflowed): the run is back here."""
        here = self.position
        first = self._bad_at if self._bad_at is not None else here
        self._bad_at, self._flags = None, []
        live = self.backend.capture() if self.attached else None     # the loop's own values, as they are
        self._seek(4 * ((first - 1) // 4))
        bad = self._checked_to(here)
        if bad is None and live is not None:   # finite recomputed where the loop's values were not: not gdstep's to undo
            return self._edited_culprit(live, here)
        return bad

    def _checked_to(self, here: int) -> NonFinite | None:
        """The phases from here to `here`, with full records and checks: the first
        non-finite value (the cursor after its phase), or None."""
        lean, self._lean = self._lean, False
        try:
            while self.position < here:
                bad = self._phase_fns[self._phase](True)
                if bad is not None:
                    return bad
        finally:
            self._lean = lean
        return None

    def _edited_culprit(self, live, here: int) -> NonFinite | None:
        """Attach mode: a fused test failed on the loop's values (`live`, as they stood at
        `here`), and the iteration recomputed from its checkpoint holds no non-finite value:
        the loop changed a value where no version counter saw it (through `.data`).
        Before the update (the parameters as at the iteration's start), the parameters that
        differ are kept as a loop's edit there (every recomputation from then on replays
        it) and the phases run again on them, with full records, to name the culprit. After
        the update, which mixes the edit into every parameter, the loop's values are put
        back as they stood, and the culprit is named in them."""
        current = self.backend.params()                 # recomputed, at `here`
        edited = {name: value for name, value in live.params.items()
                  if name in current and not current[name].equal(value)}
        after_update = here % 4 == 0
        if not edited and not after_update:
            return None
        what = "parameters and optimizer state, after the update," if after_update else ", ".join(sorted(edited))
        message = (f"iteration {(here - 1) // 4 + 1}: your loop's {what} held values no recomputation gives "
                   "(changed through .data, which torch counts no version for): "
                   + ("it goes on from its own values; records recomputed from here show other numbers" if after_update
                      else "kept as the loop's change from this iteration on"))
        self._log("inexact", message)
        print(f"gdstep: {message}", file=sys.stderr)
        if after_update:            # the loop's own values, kept at this boundary: recomputations after it hold them
            self.backend.restore(live, check=False)
            kept = dict(live.params)
            kept.update({(name, k): v for name, state in live.state.items() for k, v in state.items()
                         if isinstance(v, self.backend._torch.Tensor)})
            self.keep_loop_edit(kept, horizon=self.backend.kept_batches + 2)
            return nonfinite_in(self.backend, live)
        self._seek(4 * ((here - 1) // 4))           # the iteration's start, recomputed
        self.backend.load_params(edited)
        self.keep_loop_edit(edited, horizon=self.backend.kept_batches + 2)
        return self._checked_to(here)

    def _materialise(self) -> None:
        """Replace lean records by full ones: recompute from the nearest checkpoint to where
        the session stands. In attach mode the live state is kept as it is (the loop may
        have changed it since), and put back after."""
        if not self._lean_records:
            return
        self._lean_records = False
        reading = getattr(self.backend, "reading", None)          # attach mode: the loop's tensors held, and put back
        held = reading is not None                                 # at their versions (no edit of the loop's is seen)
        live = self.backend.capture() if self.attached and self._phase == 0 and not held else None
        differed = set(getattr(self.backend, "differed", ()))
        try:
            with np.errstate(all="ignore"), (reading() if reading else nullcontext()):
                self._recompute_to(self.position)
        finally:                # the loop's own tensors as it left them, even after an interrupt
            if live is not None:
                self.backend.restore(live, check=False)
            if live is not None or held:
                self.backend.differed.intersection_update(differed)    # what differed here is not kept
            if reading is not None:
                self.backend.read_done()

    # -- rewind ----------------------------------------------------------------------------------

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
        before = self.where
        if self.position == 0 and count:
            self._log("rewind", f"nothing to rewind: this is the start ({before})")
            return self.cursor
        target = max(0, self.position - count)
        self._seek(target)
        self._log("rewind", f"back from {before} to {self.where}")
        return self.cursor

    def seek(self, position: int) -> Cursor:
        """Go to an absolute position (phases since the start); forward means recomputing."""
        if position < 0:
            raise GdstepError("seek: position must be >= 0")
        self._seek(position)
        return self.cursor

    def _seek(self, target: int) -> None:
        with np.errstate(all="ignore"), (self.backend.moving() if self.attached else nullcontext()):
            self._seek_to(target)

    def _seek_to(self, target: int) -> None:
        if target >= self.position and not self._lean_records:
            while self.position < target:
                self._phase_fns[self._phase](False)
            return
        self._recompute_to(target)

    def _recompute_to(self, target: int) -> None:
        """Restore the checkpoint before the iteration of `target` (the one before it, whose
        records a boundary shows) and run the phases with full records up to `target`."""
        lean, self._lean = self._lean, False
        try:
            try:
                self._recompute(target)
            except BackwardAgain:        # (its backward by loss.backward() now: once more from the checkpoint)
                self._recompute(target)
        finally:
            self._lean = lean

    def _recompute(self, target: int) -> None:
        t_step = target // 4
        # not beyond the cursor: the history between would be skipped (a seek forward
        # across a checkpoint kept from before a rewind)
        checkpoint = self._timeline.at_or_before(max(min(t_step - 1, self._step), 0))
        through = t_step if target % 4 else t_step - 1       # the last iteration whose phases run
        if self.attached:          # refused before anything moves where one cannot be recomputed
            checkpoint = self._attached_checkpoint(checkpoint, target, through)
        self._lean_records = False
        try:
            self._at_checkpoint(checkpoint)
            self._timeline.start_near()
            dense_from = t_step - self._timeline.recent
            while self.position < target:
                self._phase_fns[self._phase](False)
                if self._phase == 0 and self._step >= dense_from:
                    self._timeline.save(self._checkpoint(), near=True)
        except BaseException:
            # an interrupt (Ctrl-C) or an error midway, in the restore or a phase: the session
            # whole at that checkpoint, its records recomputed when read
            self._at_checkpoint(checkpoint)
            self._lean_records = True
            raise

    def _attached_checkpoint(self, checkpoint, target: int, through: int):
        """Attach mode: `checkpoint` where the loop's kept batches reach back to it; else the
        checkpoint at the start of the target's iteration (its records then, without the
        update before it, which needs the checkpoint before: a history budget smaller than
        two checkpoints keeps none before it); else refused, in one line that says why."""
        try:
            self.backend.check_recompute(checkpoint.backend, through)
            return checkpoint
        except BatchesGone as e:          # (an iteration that cannot be recomputed is refused as it is)
            refused = e
        t_step = target // 4
        nearer = self._timeline.at_or_before(min(t_step, self._step))
        if nearer.step > checkpoint.step:
            try:
                self.backend.check_recompute(nearer.backend, through)
                return nearer
            except GdstepError:
                pass
        size, budget = self._timeline.checkpoint_size, self._timeline.budget
        if size and 2 * size > budget:
            raise GdstepError(f"{refused}; its nearest checkpoint is before them: one takes {size / 2**20:.1f} MiB "
                              f"and the history budget is {budget / 2**20:.1f} MiB (gdstep.attach(..., "
                              "history_budget=N) keeps more)") from None
        raise refused

    def _at_checkpoint(self, checkpoint) -> None:
        """The session where a checkpoint was taken: the backend's state, the cursor, the
        history up to it; no records yet. (In attach mode `_recompute` checked first that
        the iterations it runs from there can be recomputed.)"""
        if self.attached:
            self.backend.restore(checkpoint.backend, check=False)
        else:
            self.backend.restore(checkpoint.backend)
        self._step, self._epoch, self._iteration = checkpoint.step, checkpoint.epoch, checkpoint.iteration
        self._offset, self._batch_size, self._phase = checkpoint.offset, checkpoint.batch_size, 0
        self._batch, self._records = None, {}
        self._history.truncate(checkpoint.step)


def nonfinite_in(backend, checkpoint) -> NonFinite | None:
    """The first non-finite element of a checkpoint's parameters, then optimizer state."""
    torch = backend._torch
    tensors = [(name, t) for name, t in checkpoint.params.items()]
    tensors += [(f"{name} state {key}", t) for name, state in checkpoint.state.items() for key, t in state.items()
                if isinstance(t, torch.Tensor)]
    for where, t in tensors:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            index = tuple(int(i) for i in (~torch.isfinite(t)).nonzero()[0])
            return NonFinite("update", where, index or None, float(t[index] if index else t), kept_after=True)
    return None


def edit_names(keys) -> str:
    """What a loop's edit changed, for a message: parameters by name, optimizer state by its
    key, "the optimizer's exp_avg of 0.bias, 0.weight" (keys as `changed_params` gives them)."""
    params = sorted(k for k in keys if isinstance(k, str))
    state: dict = {}
    for k in keys:
        if not isinstance(k, str):
            state.setdefault(k[1], []).append(k[0])
    return "; ".join(([", ".join(params)] if params else [])
                     + [f"the optimizer's {k} of {', '.join(sorted(v))}" for k, v in sorted(state.items())])

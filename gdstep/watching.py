"""Attach mode's watch: a loop that calls backward() and step() itself hands gdstep the
iteration with `dbg.watch(loss, y)`; gdstep's hooks on the optimizer's step record the update.
Each observed phase is checked as it is recorded; at a break the debugger only looks, and
puts back what it changed (`_look`). A mixin of `Debugger`."""

from __future__ import annotations

import sys

import numpy as np

from gdstep import update_norms
from gdstep.backends.detachable import detachable
from gdstep.errors import BreakpointHit, GdstepError
from gdstep.frames import first_outside, gdsteps
from gdstep.nonfinite import REWIND_HINT
from gdstep.records import LEAN_NONFINITE
from gdstep.resuming import HANDED_OVER
from gdstep.rewind import edit_names

OBSERVED = ("forward", "loss", "backward")    # the phases watch() receives at once


def _caller() -> tuple:
    """The frame that called gdstep's hook (torch's, running the optimizer's step), as
    (its id, its code): not the frame itself, which would hold the loop's locals alive."""
    frame = first_outside(2, gdsteps)
    return (id(frame), frame.f_code if frame is not None else None)


def _on_stack(caller: tuple) -> bool:
    """Whether that frame is still running (an exception out of it ends it; a frame of the
    same code at the same address since is a later step's, whose pre-hook noted it anew)."""
    f = sys._getframe(1)
    while f is not None and (id(f) != caller[0] or f.f_code is not caller[1]):
        f = f.f_back
    return f is not None


class Watching:
    _lost: str | None = None      # why the session could not come back to where the loop stands (_back_to_loop)
    _lost_at = 0                  # and in which of the loop's iterations
    _step_began = None            # (the optimizer whose step the loop is in, torch's frame of it): between its hooks

    def watch(self, loss, y=None) -> float:
        """Record the iteration the loop has just run forward and backward on (call it
        between `loss.backward()` and `optimizer.step()`); returns the loss."""
        b = self.backend
        self._mode = "watch"
        began, self._step_began = self._step_began, None
        if began is not None and not _on_stack(began[1]):     # its step raised (a closure before its watch())
            began = None
        began = began and began[0]
        lost, self._lost = self._lost, None
        why = lost or self._changed_model()
        if why is not None:       # model.double(), requires_grad_, add_param_group; a way back that failed
            self._attach_again(why, watching=True, step=self._lost_at + 1 if lost else None)
            return float(loss.detach().reshape(()).item()) if hasattr(loss, "detach") else float(loss)
        b.loop_goes_on()
        if b.last_call is None:
            raise GdstepError("watch: the model has not run forward since attach (call it as model(x): model.forward(x) "
                              "runs no hooks, so gdstep does not see it)")
        self._hook_optimizer()
        s = self.session or self._first_session()
        unmoved = self._check_loop_edits()
        if not b.watching:
            b.start_watching()
        if s.phase_due == "update" and s.position == 4 * self._loop_step + 3:
            b.observe_no_step()            # the loop did not step after the last watch()
            self._advance("update")
            self._loop_step = s.step_count
            if not getattr(self, "_told_no_step", False):       # once: a loop that updates itself does so each time
                self._told_no_step = True
                s.log("info", f"iteration {s.step_count}: the loop did not call optimizer.step() after watch() "
                              "(a GradScaler skipped it, gradients accumulate, or the loop updates the parameters "
                              "itself): recorded with no update, as is each such iteration (said once)")
        self._resync()
        if not b.has_grads():
            raise GdstepError("watch(loss) goes between loss.backward() and optimizer.step(): "
                              "there are no gradients yet")
        self._sync_groups()
        args, kwargs = b.last_call
        b.add_batch(s.step_count, args[0] if args else None, y, args[1:], kwargs)
        s.n = b.n_samples
        lean = b.observe_iteration(loss, lean=self._may_be_lean(), versions=unmoved)
        self._lean_now = lean
        b.watch_deltas = not lean         # the next forward's δ, for full records where this one had none
        for phase in OBSERVED:
            if self._advance(phase):
                break
        # (the versions are noted after the loop's step: `_check_loop_edits` reads them at an
        # iteration's start only, and a watch() leaves one mid-way)
        b.new_iteration()
        if began is None:
            self._raise_pending()
        elif self._lost is None and s.phase_due == "update":    # inside `optimizer.step(closure)`: its update
            self._before_update(began)                          # follows at once, and its post-hook raises a
                                                                # break's hit out of the step, the update made
        return s.loss_value if self._lost is None else b._seen_loss

    def _first_session(self):
        """The Session, at the first watch(): its first checkpoint holds the buffers as the
        loop's forward found them (that forward moved BatchNorm's statistics already), so
        its iteration recomputes from where the loop began it."""
        b = self.backend
        b.start_buffers = b.call_buffers[1] if b.call_buffers is not None else None
        try:
            return self._session(b.layers_seen())
        finally:
            b.start_buffers = None

    def _raise_pending(self) -> None:
        """on_break="raise": the BreakpointHit of a watched phase, raised once the iteration
        is recorded and the loop's state put back, so a loop that catches it goes on."""
        hit, self._raise_later = self._raise_later, None
        if hit is not None:
            if isinstance(hit, BreakpointHit):
                self.backend.handed_over = HANDED_OVER      # until the loop's next call of gdstep's
            raise hit

    def _unhook_optimizer(self) -> None:
        if self._step_hooks:
            for h in self._step_hooks:
                h.remove()
            self._step_hooks = []
            self.backend.own_step_hooks = set()

    def _hook_optimizer(self) -> None:
        """Hooks on the optimizer's step (at attach: a loop's first step may run its watch()
        inside it, `optimizer.step(closure)`; again at a watch() after step mode or a fresh
        attach removed them)."""
        if self._step_hooks:
            return
        opt = self.backend.torch_optimizer

        def before(optimizer, args, kwargs):
            s = self.session
            b = self.backend
            if b.driving or self._handling or b._reading or self._lost is not None:    # gdstep's own step (a
                return                                                                # recomputation); or lost
            b.loop_goes_on()                      # the loop's own step: a handler's hold is over
            self._step_began = (optimizer, _caller())      # (a watch() inside it, `optimizer.step(closure)`, ends by
            if s is not None and s.phase_due == "update":      # what is done here)
                self._before_update(optimizer)

        def after(optimizer, args, kwargs):
            self._step_began = None
            s, b = self.session, self.backend
            if b.driving or self._handling or self._lost is not None:
                return
            b.loop_turns += 1
            if s is None or s.phase_due != "update":      # the step of an iteration not watched: the next
                b.forwards_stepped()                      # one's forwards are counted from none
                return
            if self.backend.observe_after_step():
                self._take_changed_before_step()    # (before the phase: its records may restore a checkpoint)
                self._advance("update")
                self._loop_step = self.session.step_count
                self._keep_changed_before_step()    # (DDP: Ranks.advance ran the phase)
                self._note_versions()
                self._raise_pending()          # out of the loop's optimizer.step(): the update is done

        for o in getattr(opt, "optimizers", [opt]):
            self._step_hooks += [o.register_step_pre_hook(detachable(before)), o.register_step_post_hook(detachable(after))]
        self.backend.own_step_hooks = {h.id for h in self._step_hooks}     # not the loop's (update bounds)

    def _before_update(self, optimizer) -> None:
        """Right before the loop's optimizer updates the iteration watched: its lr, what the
        loop changed since watch(), the gradients the step uses (from the step's pre-hook; or
        at the end of a watch() inside the step, in `optimizer.step(closure)`)."""
        s, b = self.session, self.backend
        self._sync_groups()               # an lr set between watch() and step(): this update's
        moved = b.changed_since_watch()
        if moved:                         # the step runs on the loop's changed values: full records
            self._lean_now = False
            self._changed_before_step = (moved, b.param_versions())
        b.observe_before_step(optimizer)
        if self._lean_now and update_norms.measured(s.step_count, None):   # compared with the parameters before the step
            s._norms_before = update_norms.before(b.params(), s._history.norm_names)

    def _take_changed_before_step(self) -> None:
        """Right after a step that ran on values the loop changed after watch(): copies of
        what the step made (everything that moved since the step's pre-hook)."""
        changed = getattr(self, "_changed_before_step", None)
        if changed is not None:
            names, versions = changed
            self._changed_before_step = (names, self.backend.changed_params(versions))

    def _keep_changed_before_step(self) -> None:
        """The loop changed parameters or optimizer state between watch() and step(): what the
        step made is kept as the loop's edit, so recomputations from here on start from it;
        said once."""
        changed, self._changed_before_step = getattr(self, "_changed_before_step", None), None
        if changed is None:
            return
        names, made = changed
        b, s = self.backend, self.session
        s.keep_loop_edit(made, horizon=b.kept_batches + 2, log=False)
        b._announce_once("changed before step", f"iteration {s.step_count}: the loop changed {edit_names(names)} "
                         "in place between watch() and optimizer.step() (weight decay by hand, a projection, a reset "
                         "of the optimizer's state): the update shows the values the step ran on, and the iterations "
                         "after it start from the loop's; a rewind into such an iteration recomputes its update "
                         "without the change")

    def _advance(self, phase: str) -> bool:
        """Run one observed phase, then check: True when it broke (the rest is unchecked)."""
        if self.ranks is not None:
            return self.ranks.advance(self, phase)
        s = self.session
        seen = len(s.events)
        self._run_phase(s, phase)
        if phase == "update":
            self._keep_changed_before_step()    # before a break may rewind across it
        message = next((e.message for e in s.events[seen:] if e.kind == "nonfinite"), None)
        if message is not None and (self._repeated_nonfinite(phase) or not s.breakpoints.breaks_on("nonfinite")):
            message = None
        if message is None:
            hit = s.breakpoints.first_hit(s, phase)
            if hit is not None:
                message = hit.hit_message(s)
                s.log("breakpoint", message)
        if message is None:
            return False
        self._look(message)
        if phase in OBSERVED and self._lost is None:     # (lost: the session stays behind, untouched)
            for rest in OBSERVED[OBSERVED.index(phase) + 1:]:
                self._run_phase(s, rest)
        return True

    def _may_be_lean(self) -> bool:
        """Whether this iteration may keep lean records (records on demand): on unless turned
        off (`dbg.lean_watch = False`), with one model and optimizer, no GradScaler, one
        process (DDP keeps full records)."""
        b = self.backend
        lean = (self.lean_watch and self.ranks is None and b.scaler is None
                and not hasattr(b.torch_optimizer, "optimizers"))
        return lean

    def _run_phase(self, s, phase: str) -> None:
        """The phase due, observed: with full records, or (a lean iteration) as a run builds
        them — no δ, no copies of the step, a checkpoint on the timeline's grid — which the
        first read recomputes from the nearest checkpoint (`Session._materialise`)."""
        if not self._lean_now:
            if s._lean_records:       # recompute the lean records, then give the loop back what it holds
                held, differed = self.backend.loop_state(), set(self.backend.differed)
                try:
                    s._materialise()
                finally:
                    self.backend.put_back(held)
                self.backend.differed.intersection_update(differed)     # its values are back: nothing changed
            s.next_phase()
            return
        lean, update, defer = s._lean, s._lean_update, s._defer
        s._lean, s._lean_update, s._defer = True, True, False     # flags read at once: no run to end
        try:
            with np.errstate(all="ignore"):
                bad = s._phase_fns[s._phase](True)
        finally:
            s._lean, s._lean_update, s._defer = lean, update, defer
        if bad is LEAN_NONFINITE:        # a fused test failed: the culprit, where the loop's values are
            bad = s.find_nonfinite()
        if bad is not None:
            s.log("nonfinite", f"{bad}{REWIND_HINT}")
        if phase == "update":           # the loop's gradients are its own again: hold none of them
            self._lean_now = False
            rec = s._records.get("backward")
            if rec is not None and rec.grads:
                s._records["backward"] = rec._replace(grads={})     # lean: the first read recomputes them
            self.backend.release_grads()

    def _repeated_nonfinite(self, phase: str) -> bool:
        """The update of an iteration that already broke on a non-finite value (watch mode):
        one break an iteration, not one for the forward and one for the update it spoils."""
        step = self.session.step_count - (phase == "update")
        repeated, self._nonfinite_step = phase == "update" and self._nonfinite_step == step, step
        return repeated

    def _look(self, message: str) -> None:
        """Watch mode: open the debugger, then put back what it changed."""
        s, b = self.session, self.backend
        position = s.position
        held = b.loop_state()
        try:
            self._break(message)
        except BreakpointHit as hit:           # on_break="raise": after the bookkeeping (_raise_pending)
            self._raise_later = hit
        except BaseException as error:         # on_break's function raised: the same, so the loop's state is
            self._raise_later = error          # put back and the iteration recorded before the loop sees it
        self._back_to_loop(position, held)

    def _back_to_loop(self, position: int, held: tuple) -> None:
        """After the debugger looked (and maybe moved): the session back where the loop
        stands, and the loop's own tensors put back (`loop_state`)."""
        s = self.session
        try:
            if s.position != position:
                s.seek(position)
        except GdstepError as e:
            print(f"gdstep: could not return to where the loop is: {e}", file=sys.stderr)
        except Exception as e:
            # a recomputation on the way raised (the loop's loss_fn or model): the session stays
            # behind, and the next watch() attaches afresh (gdstep.reattach)
            self._lost = (f"the debugger could not come back to where your loop stands (recomputing "
                          f"raised {type(e).__name__}: {e})")
            self._lost_at = (position + 3) // 4           # the loop's iteration (its update's break: position 4k)
            print(f"gdstep: iteration {self._lost_at}: {self._lost}; your loop's own tensors are put back and it "
                  "goes on unchanged", file=sys.stderr)
        finally:          # whatever the way back raised (the loop's loss_fn, recomputing), its tensors are its own
            self.backend.put_back(held)


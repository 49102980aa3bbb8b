"""How the loop goes on after a break: the session brought back to where the loop stands
(`_resync`), an iteration a break left unfinished finished as the loop would have
(`_finish_iteration`; after on_break="raise", at the loop's first call that follows), and a
line where a recomputation on the way came out otherwise than the loop computed it. A mixin
of `Debugger`."""

from __future__ import annotations

import sys

from gdstep.errors import GdstepError

HANDED_OVER = ("attach mode: your loop goes on from where it stands when this handler returns, so the session stays "
               "at the break (its records, history and explain can be read); to rewind or step, pass "
               "on_break=<function> (gdstep brings your loop back after it), or let breaks open the app (the default)")
"""Why a BreakpointHit's handler may not move the session (AttachBackend.handed_over)."""


class Resuming:
    def _resync(self) -> None:
        """Stand at the loop's iteration boundary (after a debugger session moved us)."""
        s = self.session
        target = 4 * self._loop_step
        if s.position != target:
            s.seek(target)
        self._tell_if_recomputed()

    def _user_moves(self) -> None:
        """The loop's own code moves the session between its calls of gdstep (`dbg.session.
        seek(…)` to look back while training goes on): the loop's tensors are held now and,
        at its next call of its model or of gdstep, or at `dbg.close()`, put back with the
        session where the loop stands, as after a break — the param groups, gradients and
        scaler as the loop has them then (AttachBackend.moving). A parameter the loop
        changed in place meanwhile was changed on the weights looked at: said, lost."""
        b = self.backend
        position, held = self.session.position, b.loop_state()
        live, _, observed, _, versions, outer, output = held

        def back() -> None:
            loop = b._loop_side()
            edited = [name for (name, p), v in zip(b._named, b._moved_versions) if p._version != v]
            if b._session_side is not None:     # the way back steps on from where the session stands
                b._set_side(b._session_side)
                b._session_side = None
            with b.loops_generator():
                self._back_to_loop(position, (live, [], observed, None, versions, outer, output))
            b._set_side(loop)
            if edited:
                message = (f"iteration {(position + 3) // 4 + 1}: your loop changed {', '.join(edited[:4])} in place "
                           "while it looked back (dbg.session.seek): the change was made on the weights looked at, "
                           "which are its own again now, so it is lost (training goes on without it); look back where "
                           "the loop changes nothing before its next call of the model or of gdstep")
                self.session.log("inexact", message)
                print(f"gdstep: {message}", file=sys.stderr)
            if self._lost is None and self.session.position != position:     # no way back (its batches are gone)
                self._lost = ("the session, moved by your loop's code (dbg.session.seek, back) to where it could not "
                              "come back from")
                self._lost_at = (position + 3) // 4

        b._user_hold = back

    def _tell_if_recomputed(self) -> None:
        """Where an iteration recomputed since the loop last handed one over (a rewind, and
        the way back to where the loop stands) came out otherwise than the loop computed it
        (gdstep.backends.attach_replay), the loop may not go on as it would have: from values
        recomputed otherwise (step mode), or from a random number generator gdstep does not
        own, which the recomputing drew from. Say so, once."""
        differed = self.backend.differed
        if differed:
            first, last = min(differed) + 1, max(differed) + 1
            which = f"iteration {first}" if first == last else f"iterations {first}–{last}"
            if self._mode == "watch":     # its own values are put back after a break (Watching._look)
                then = ("your loop's own values are put back, but if a random number generator gdstep does not own "
                        "made the difference, the recomputing drew from it and your loop goes on with it advanced")
            else:
                then = "your loop goes on from the recomputed values, not its own"
            message = f"{which} recomputed otherwise than your loop computed it (the inexact events say why): {then}"
            differed.clear()
            self.session.log("inexact", message)
            print(f"gdstep: {message}", file=sys.stderr)

    def open(self, message: str = "set_trace") -> None:
        """Open the debugger now, on the latest iteration (what `gdstep.set_trace()` does).
        Wherever the debugger moves the session, the loop goes on from where it stands, with
        its own random generator: in step mode the session comes back there; in watch mode
        (the debugger only looks) the loop's tensors are put back, as after a watched break;
        a handler that raises too."""
        s, b = self.session, self.backend
        if s is None:
            raise GdstepError("set_trace: no iteration has run through gdstep yet (dbg.step or dbg.watch)")
        b.loop_goes_on()        # a handler's hold, if any, is over: the loop calls gdstep
        position = s.position
        held = b.loop_state() if self._mode == "watch" and self.ranks is None else None
        with b.loops_generator():
            try:                # DDP: every rank calls it; one debugs, the others follow
                self.ranks.pause(self, self.ranks.everywhere(message)) if self.ranks is not None else self._break(message)
            finally:
                if held is not None:        # watch mode: as after a watched break (Watching._look)
                    self._back_to_loop(position, held)
                elif self._mode in ("step", None) and s.position != 4 * self._loop_step:
                    try:
                        self._resync()
                    except GdstepError as e:
                        print(f"gdstep: {e}", file=sys.stderr)

    def _hand_over(self) -> None:
        """Step mode, on_break="raise": the session stands at the break for the loop's
        handler; the loop's first call after it (`loop_goes_on`) finishes the iteration
        with the hyperparameters it had (a scheduler the loop steps meanwhile sets the
        next one's), and says so where the loop changed a parameter before then."""
        b = self.backend
        b.handed_over = HANDED_OVER
        b.on_loop_call = self._finish_unfinished
        b.held_versions = b.param_versions()      # (noted again after each record the handler reads)
        self._raised_groups = b.group_values()
        self._raised_at = self.session.position

    def _finish_unfinished(self) -> None:
        """The iteration on_break="raise" left at its break, finished as the loop would have."""
        if not self._unfinished:
            return
        self._unfinished = False
        b, s = self.backend, self.session
        moved = self._moved_model()
        if moved is not None:         # its checkpoints and batch hold the old dtype: it cannot be finished on this model
            message = (f"iteration {self._loop_step + 1}: its update, left at its break, was not made: your loop moved "
                       f"the model ({moved}) before its next call of gdstep, its model or a state_dict(); it goes on "
                       "from the values at the break (a bare loop would have updated first)")
            s.log("inexact", message)
            print(f"gdstep: {message}", file=sys.stderr)
            return
        groups, versions = self._raised_groups, b.held_versions
        updating = s.position != 4 * (self._loop_step + 1)          # (a break after the update: it is done)
        edited = sorted(k for k in b.changed_params(versions) if isinstance(k, str)) if updating else []
        on_loops = bool(edited) and s.position == getattr(self, "_raised_at", None)    # (the handler did not move it)
        if edited:
            message = (f"iteration {self._loop_step + 1}: the loop changed {', '.join(edited)} after catching its "
                       "break and before the iteration's update, which then " + (
                           "ran on the loop's values with the gradients of the weights its forward used (a bare loop would have updated "
                           "first); a rewind into this iteration recomputes its update without the change" if on_loops
                           else "ran on the values of the break, as the session was moved meanwhile: the change is lost"))
            s.log("inexact", message)
            print(f"gdstep: {message}", file=sys.stderr)
        now = b.group_values()
        rng = b._rng_state()          # the loop's: the iteration's forward drew before the break, the loop since
        b.set_group_values(groups)
        try:
            if on_loops:              # the rest of the iteration on the loop's values, then kept as the loop's edit
                while s.position < 4 * (self._loop_step + 1):
                    s.next_phase()
                s.keep_loop_edit(b.changed_params(versions), horizon=b.kept_batches + 2, log=False)
            else:
                self._finish_iteration()
        finally:
            b.set_group_values(now)
            b._set_rng(rng)           # (finishing recomputes from a checkpoint, whose generator is the iteration's)
        self._loop_step += 1
        if updating:
            self._note_versions()      # gdstep's own update: no edit of the loop's
        else:                          # a break after the update: what the handler changed is the loop's edit
            self._versions = versions  # (`_check_loop_edits`, next, keeps it)

    def _finish_iteration(self) -> None:
        """After a break in `step`: finish this iteration as the loop would have (unchecked)."""
        s = self.session
        target = 4 * (self._loop_step + 1)
        if s.position != target:
            try:
                s.seek(target)
            except GdstepError as e:
                print(f"gdstep: the loop goes on from {s.where}: {e}", file=sys.stderr)
        self._tell_if_recomputed()

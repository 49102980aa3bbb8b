"""The run loop: phases one after another until something says stop.

A run checks, after each phase, only what that phase can have changed: a non-finite value
(then it steps back to before that phase), the breakpoints that read its values, `until`,
the scenario's `stop_when`, the requested count, and the caller's pause request. Mixed into
the Session, whose state machine it drives.
"""

from __future__ import annotations

import contextlib
import time
from typing import Callable

import numpy as np

from gdstep import run_ahead
from gdstep.conditions import Condition, parse_condition
from gdstep.errors import GdstepError
from gdstep.records import LEAN_NONFINITE, PHASES, NonFinite, RunResult, StopReason


class RunLoop:
    def step(self, n: int = 1, **kw) -> RunResult:
        """Run n whole iterations (finishing the current one counts as the first)."""
        if n < 1:
            return self._no_run(n, "step")
        target = self._step + n
        return self._run(lambda: self._phase == 0 and self._step >= target, ahead=True, **kw)

    def epoch(self, n: int = 1, **kw) -> RunResult:
        """Run to the end of the n-th epoch from here (finishing the current one counts)."""
        if n < 1:
            return self._no_run(n, "epoch")
        target = self._epoch + n
        return self._run(lambda: self._phase == 0 and self._epoch >= target, ahead=True, **kw)

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
            return self._no_run(max_steps, "run: max_steps", StopReason.MAX_STEPS)
        start = self._step
        done = (lambda: self._phase == 0 and self._step - start >= max_steps) if max_steps is not None else None
        return self._run(done, until=cond, epoch_limit=True, done_reason=StopReason.MAX_STEPS, ahead=True, **kw)

    def _no_run(self, n: int, what: str, reason: StopReason = StopReason.DONE) -> RunResult:
        """step(0), epoch(0), run(max_steps=0) run nothing (the run loop runs a phase before
        it checks whether it is done); a negative count is a mistake."""
        if n < 0:
            raise GdstepError(f"{what}: expected a whole number >= 0, got {n}")
        return RunResult(reason, 0, 0, self.cursor, "nothing to run (0 iterations)")

    def _condition(self, text: str | Condition) -> Condition:
        condition = text if isinstance(text, Condition) else parse_condition(text)
        return condition.check_names(self.backend.param_shapes, attached=self.attached)

    def _run(self, done: Callable[[], bool] | None, until: Condition | None = None, epoch_limit: bool = False,
             done_reason: StopReason = StopReason.DONE, on_phase: Callable[[], bool] | None = None,
             ahead: bool = False) -> RunResult:
        """The run loop. `on_phase` is called after every phase (from the caller's thread);
        returning True pauses the run there. `ahead`: `done` holds only at an iteration's
        end, so iterations may be computed before they are checked (gdstep.run_ahead)."""
        with np.errstate(all="ignore"), (self.backend.moving() if self.attached else contextlib.nullcontext()):
            return self._run_loop(done, until, epoch_limit, done_reason, on_phase, ahead)

    def _run_loop(self, done, until, epoch_limit, done_reason, on_phase, ahead=False) -> RunResult:
        # The scenario's limits bound `run`, not step/epoch; an explicit `until` replaces stop_when.
        stop_when = self.stop_when if epoch_limit and until is None else None
        # Records on demand: the run keeps lean records; the update's full record only when
        # a condition reads it (update_ratio).
        self._lean_update = self._can_skip_update_record(until, stop_when)
        self._lean = True
        self._run_start = self._step
        self._checkpoint_at, self._checkpoint_step = time.thread_time(), self._step
        try:
            ahead = ahead and self._can_run_ahead(
                [bp.condition for bp in self.breakpoints if bp.enabled] + [until, stop_when], on_phase)
            return self._run_phases(done, until, stop_when, epoch_limit, done_reason, on_phase, ahead)
        finally:
            self._lean = False

    def _can_skip_update_record(self, *conditions: Condition | None) -> bool:
        """Whether a run may leave the update's before/after values out: no condition it
        checks reads them (update_ratio)."""
        for cond in [bp.condition for bp in self.breakpoints if bp.enabled] + list(conditions):
            if cond is not None and "update_ratio" in cond.names:
                return False
        return hasattr(self.backend, "update_lean")

    def _run_phases(self, done, until, stop_when, epoch_limit, done_reason, on_phase, ahead=False) -> RunResult:
        start_step = self._step
        watch_until = until.phases if until else frozenset()
        watch_stop = stop_when.phases if stop_when else frozenset()
        # after which phases a condition is checked: pending finiteness flags are read first
        # (not for on_phase: a progress bar or a frame may show a value a flag will refuse;
        # the run stops on it at the next read, or at its end)
        checked = {name: name in watch_until or name in watch_stop or self.breakpoints.checked_after(name)
                   for name in PHASES}
        reason = message = None
        bad: NonFinite | None = None
        phases = 0

        def after(name: str) -> tuple[StopReason, str] | None:
            """The checks after a phase that ran with no non-finite value: why to stop, or None."""
            nonlocal phases
            phases += 1
            hit = self.breakpoints.first_hit(self, name)
            if hit is not None:
                message = hit.hit_message(self)
                self._log("breakpoint", message)
                return StopReason.BREAKPOINT, message
            if until is not None and name in watch_until and until(self):
                message = f"until {until.text} ({until.describe(self)})"
                self._log("stop", message)
                return StopReason.UNTIL, message
            if stop_when is not None and name in watch_stop and stop_when(self):
                message = f"stop_when {stop_when.text} ({stop_when.describe(self)})"
                self._log("stop", message)
                return StopReason.STOP_WHEN, message
            if done is not None and done():
                return done_reason, ("done" if done_reason == StopReason.DONE else "reached max_steps")
            if on_phase is not None and on_phase():
                return StopReason.PAUSED, "paused"
            return None

        def stops_after(name: str) -> list:
            """The conditions `after(name)` asks whether to stop, in its order: the enabled
            breakpoints', `until`'s, `stop_when`'s (gdstep.run_ahead checks them over the
            iterations it computed; `done`, which there holds only after an update, apart)."""
            conditions = self.breakpoints.enabled_after(name)
            if until is not None and name in watch_until:
                conditions.append(until)
            if stop_when is not None and name in watch_stop:
                conditions.append(stop_when)
            return conditions

        # records on demand, numpy: forward, loss and backward of an iteration in one call
        fused = self._fused_lean and not self._defer
        # looking ahead: not at the first iteration a run begins (nor the rest of one it
        # began in), nor up to and at an iteration where a look ahead stopped (the run loop
        # runs them again); then 1, 2, 4, … at a time
        ahead_from, size = self._step + (2 if self._phase else 1), 1
        try:
            while True:
                if epoch_limit and self._phase == 0 and self._epoch > self.epochs:
                    reason, message = StopReason.EPOCHS, f"reached the epoch limit ({self.epochs})"
                    break
                if ahead and self._phase == 0 and self._step >= ahead_from:
                    steps = self._step
                    resume = self._run_ahead(stops_after, done, epoch_limit, size)
                    if resume is not None:       # back where it began: phase by phase up to `resume`
                        ahead_from, size = resume, 1
                        continue
                    phases += 4 * (self._step - steps) - 1
                    size = min(2 * size, run_ahead.AHEAD)
                    bad, stop = None, after("update")
                elif fused and self._phase == 0:
                    bad, stop = self._fused_phases(after)
                else:
                    name = PHASES[self._phase]
                    bad = self._phase_fns[self._phase](True)
                    if bad is None and self._flags and checked[name] and self._flush():
                        bad = LEAN_NONFINITE
                    stop = after(name) if bad is None else None
                if bad is LEAN_NONFINITE:        # name the culprit: the iteration again, with full records
                    bad = self._lean_culprit()
                    if bad is None:              # none (a sum of finite values overflowed): on from here
                        stop = after(PHASES[(self._phase - 1) % 4])
                if bad is not None:
                    break
                if stop is not None:
                    reason, message = stop
                    break
            if bad is None and self._flush():    # a flag still on the device said non-finite
                bad = self._lean_culprit()
            if bad is not None:
                if not bad.kept_after:
                    keep = getattr(self.backend, "loops_generator", None)     # attach mode: the loop's generator
                    with keep() if keep is not None else contextlib.nullcontext():
                        self._seek(self.position - 1)
                kept = f"your loop's own values kept after {bad.phase}" if bad.kept_after else f"state kept from before {bad.phase}"
                reason, message = StopReason.NONFINITE, f"paused: {bad}; {kept}"
                self._log("nonfinite", message)
        finally:
            self._flags, self._bad_at = [], None
        return RunResult(reason, phases, self._step - start_step, self.cursor, message, bad)

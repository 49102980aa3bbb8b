"""Runs of a DDP session that every rank makes in lockstep.

The Session's own run stops the moment a condition holds and may step back to undo a
non-finite phase; on one rank alone either would leave the others waiting in the next
gradient all-reduce. Here every phase runs on every rank (`next_phase`: it always runs),
each rank checks its conditions on its own values, and the ranks combine their verdicts
after the loss (before the backward's all-reduce), after the update and wherever the run
would end; any rank's hit stops all of them at the same phase. Nothing is undone: the
state is where the hit was found, and `back` rewinds on every rank alike.
"""

from __future__ import annotations

from typing import Callable

from gdstep.conditions import Condition, parse_condition
from gdstep.distributed.verdict import BREAKPOINT, NONE, NONFINITE, SEVERITY, STOP_WHEN, UNTIL, combine
from gdstep.errors import GdstepError
from gdstep.nonfinite import REWIND_HINT
from gdstep.records import PHASES, RunResult, StopReason

SYNC_AFTER = ("loss", "update")
RUNS = ("step", "epoch", "run", "run_to")


def lockstep_run(s, ranks, kind: str, *args, on_phase: Callable[[], bool] | None = None, loop: bool = False,
                 **kw) -> RunResult:
    """`s.step(n)`, `s.epoch(n)`, `s.run(until, max_steps)` or `s.run_to(phase)`, on every rank.
    `loop`: the training loop's own iteration (dbg.step), where a dismissed non-finite value
    does not stop the ranks (a run in the app still stops on one)."""
    until = stop_when = None
    epoch_limit = False
    if kind in ("step", "epoch"):
        n = args[0] if args else kw.get("n", 1)
        if n < 1:
            return getattr(s, kind)(n)
        if kind == "step":
            target = s.step_count + n
            done = lambda: s.phase_due == "forward" and s.step_count >= target
        else:
            target = s.cursor.epoch + n
            done = lambda: s.phase_due == "forward" and s.cursor.epoch >= target
    elif kind == "run_to":
        phase = args[0] if args else kw["phase"]
        if phase not in PHASES:
            raise GdstepError(f"no phase {phase!r} (phases: {', '.join(PHASES)})")
        after = PHASES[(PHASES.index(phase) + 1) % 4]
        done = lambda: s.phase_due == after
    elif kind == "run":
        text = args[0] if args else kw.get("until")
        max_steps = args[1] if len(args) > 1 else kw.get("max_steps")
        until = _condition(s, text) if text is not None else None
        stop_when = s.stop_when if until is None else None
        if max_steps is not None and max_steps < 1:
            return s.run(until=text, max_steps=max_steps)
        start = s.step_count
        done = (lambda: s.phase_due == "forward" and s.step_count - start >= max_steps) if max_steps is not None else None
        epoch_limit = True
    else:
        raise GdstepError(f"no run {kind!r}")
    return _loop(s, ranks, done, until, stop_when, epoch_limit, on_phase, loop)


def _condition(s, text) -> Condition:
    return text if isinstance(text, Condition) else parse_condition(text).check_names(s.backend.param_shapes, attached=True)


def _loop(s, ranks, done, until, stop_when, epoch_limit, on_phase, loop=False) -> RunResult:
    start_step, phases = s.step_count, 0
    found, message = NONE, None            # this rank's first hit since the last combine
    while True:
        if epoch_limit and s.phase_due == "forward" and s.cursor.epoch > s.epochs:
            return _result(s, StopReason.EPOCHS, phases, start_step, f"reached the epoch limit ({s.epochs})")
        name = s.phase_due
        seen = len(s.events)
        s.next_phase()
        phases += 1
        if found == NONE:
            found, message = check(s, name, seen, until, stop_when, loop)
        finished = done is not None and done()
        paused = not finished and on_phase is not None and bool(on_phase())
        if name in SYNC_AFTER or finished or paused:
            verdict = combine(ranks, found, message)
            found, message = NONE, None
            if verdict.hit:
                text = verdict.message()
                reason = StopReason(SEVERITY[verdict.code])
                s.log("nonfinite" if verdict.code == NONFINITE else
                      "breakpoint" if verdict.code == BREAKPOINT else "stop", f"paused: {text}")
                ranks.last_verdict = verdict
                return _result(s, reason, phases, start_step, text)
        if finished:
            if epoch_limit:
                return _result(s, StopReason.MAX_STEPS, phases, start_step, "reached max_steps")
            return _result(s, StopReason.DONE, phases, start_step, "done")
        if paused:
            return _result(s, StopReason.PAUSED, phases, start_step, "paused")


def check(s, name: str, seen: int, until, stop_when, loop: bool = False) -> tuple[int, str | None]:
    """This rank's own verdict after phase `name`: a non-finite value it made (logged by the
    phase; in the loop's own iteration, unless dismissed), a breakpoint, `until`, the
    scenario's stop_when."""
    bad = next((e.message for e in s.events[seen:] if e.kind == "nonfinite"), None)
    if bad is not None and not (loop and not s.breakpoints.breaks_on("nonfinite")):
        return NONFINITE, bad.replace(REWIND_HINT, "")
    hit = s.breakpoints.first_hit(s, name)
    if hit is not None:
        return BREAKPOINT, hit.hit_message(s)
    if until is not None and name in until.phases and until(s):
        return UNTIL, f"until {until.text} ({until.describe(s)})"
    if stop_when is not None and name in stop_when.phases and stop_when(s):
        return STOP_WHEN, f"stop_when {stop_when.text} ({stop_when.describe(s)})"
    return NONE, None


def _result(s, reason, phases, start_step, message) -> RunResult:
    return RunResult(reason, phases, s.step_count - start_step, s.cursor, message)

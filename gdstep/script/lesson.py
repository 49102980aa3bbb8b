"""Playing a script as a lesson, one step at a time, with room to explore in between.

A step runs the commands up to and including the next `say` (a script without any `say`
steps one command at a time; commands after the last `say` are a step of their own), so a
`say` narrates what the commands before it just did. After each step the player keeps a
Bookmark of the session and the Runner's own state (watches, the recording). The learner
may then do anything (step, rewind, `set lr`, open lanes…): the app calls `leave()`, and
the next `advance()` comes back to the bookmark, exactly, without running anything; the one
after runs the next step. A step interrupted (a run paused) is undone and run again whole by
the next `advance()` (by the one after it, when the learner explored in between).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from gdstep.bookmark import Bookmark
from gdstep.script.outcome import Outcome
from gdstep.script.parser import Command

LONG = ("run", "step", "epoch", "next", "lanes", "landscape", "line")


def split_steps(commands: list[Command] | tuple[Command, ...]) -> tuple[tuple[Command, ...], ...]:
    if not any(c.name == "say" for c in commands):
        return tuple((c,) for c in commands)
    steps, current = [], []
    for command in commands:
        current.append(command)
        if command.name == "say":
            steps.append(tuple(current))
            current = []
    if current:
        steps.append(tuple(current))
    return tuple(steps)


@dataclass(frozen=True)
class Advance:
    """What one press did: `resumed` came back to the lesson; else the step's outcomes."""

    step: int                                    # steps done after it
    total: int
    narration: str
    outcomes: tuple[Outcome, ...] = ()
    resumed: bool = False
    interrupted: bool = False                    # a run in the step was paused: it is undone

    @property
    def problems(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if not o.ok)


@dataclass
class _Mark:
    session: Bookmark
    lines: int
    watches: list
    shown: dict = field(default_factory=dict)


class LessonPlayer:
    def __init__(self, runner, commands: list[Command] | tuple[Command, ...], title: str = ""):
        self.runner = runner
        self.title = title
        self.steps = split_steps(commands)
        self.done = 0
        self.narration = ""
        self.said: list[str] = []                # the narration after each step done, in order
        self.away = False                        # the learner has acted since the last step
        self._redo = False                       # the last step was interrupted
        self._mark = self._take()

    @property
    def total(self) -> int:
        return len(self.steps)

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    @property
    def where(self) -> str:
        return f"{self.done} of {self.total}"

    def long(self) -> bool:
        """The next press runs training (a run, lanes…), not only a say."""
        return not (self.away and not self._redo) and not self.finished and \
            any(c.name in LONG for c in self.steps[self.done])

    def leave(self) -> None:
        """The learner acts on their own: the next advance comes back to the lesson first
        (and only that, even after an interrupted step)."""
        self.away = True
        self._redo = False

    def advance(self, on_phase: Callable[[], bool] | None = None) -> Advance:
        if self.away:
            self._restore()
            if not self._redo:
                return Advance(self.done, self.total, self.narration, resumed=True)
            self._redo = False
        if self.finished:
            return Advance(self.done, self.total, self.narration)
        outcomes, narration = [], self.narration
        for command in self.steps[self.done]:
            outcome = self.runner.execute(command, on_phase)
            outcomes.append(outcome)
            if outcome.result is not None and outcome.result.reason == "paused":
                self.away = self._redo = True
                return Advance(self.done, self.total, self.narration, tuple(outcomes), interrupted=True)
            if command.name == "say" and outcome.ok:
                narration = outcome.lines[0]
        self.done += 1
        self.narration = narration
        self.said.append(narration)
        self._mark = self._take()
        return Advance(self.done, self.total, narration, tuple(outcomes))

    def _take(self) -> _Mark:
        r = self.runner
        return _Mark(Bookmark.take(r.session), len(r.lines), list(r.watches), dict(r._shown))

    def _restore(self) -> None:
        r, mark = self.runner, self._mark
        mark.session.restore(r.session)
        del r.lines[mark.lines:]
        r.watches[:] = mark.watches
        r._shown = dict(mark.shown)
        self.away = False
        r.session.log("info", f"back to the lesson where it was: step {self.where}, {r.session.cursor}")

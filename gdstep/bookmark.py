"""A Bookmark: the state of a session (and of its open lanes) kept cheaply, to come back to
exactly — how a lesson resumes where it was after the learner explored on their own.

Taking one copies no arrays: it keeps the session's attributes (references and counters),
a copy of its settings log and breakpoints, its position, and the same for each open lane.
Coming back puts them in place and recomputes the position from the nearest checkpoint
that still holds — one made under the same settings, with the loss history complete up to
it — with the rewind machinery (gdstep.rewind), so the state is the bookmarked one to the
bit, whatever the learner did in between: stepping, rewinding, `set`, `break`, new lanes,
or adopting a lane (which swaps the session's backend and timeline for the lane's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

KEEP = ("events",)          # what happened while away stays in the log


@dataclass(frozen=True)
class LanesMark:
    lanes: Any                                        # the Lanes object open at the mark
    closed: bool
    lanes_state: tuple[tuple[Any, Any, "Bookmark"], ...]   # (lane, its result, its bookmark)


@dataclass(frozen=True)
class Bookmark:
    attrs: dict[str, Any]
    settings: Any                                     # a copy of the SettingsLog
    breakpoints: Any                                  # a copy of the Breakpoints
    position: int
    lanes: LanesMark | None

    @classmethod
    def take(cls, session) -> "Bookmark":
        attrs = {k: v for k, v in vars(session).items() if k not in KEEP}
        open_lanes = getattr(session, "_open_lanes", None)
        lanes = None
        if open_lanes is not None:
            lanes = LanesMark(open_lanes, open_lanes.closed,
                              tuple((lane, lane.result, cls.take(lane.session)) for lane in open_lanes.lanes))
        return cls(attrs, session._settings.copy(), session.breakpoints.copy(), session.position, lanes)

    def restore(self, session) -> None:
        """Bring `session` back to the bookmarked state, exactly."""
        for key in [k for k in vars(session) if k not in self.attrs and k not in KEEP]:
            delattr(session, key)                     # e.g. lanes opened since
        session.__dict__.update(self.attrs)
        timeline, history = session._timeline, session._history
        # Checkpoints beyond the first step whose settings differ, and beyond the history
        # kept (a rewind since shortened it), are not the bookmarked run's: recompute past them.
        holds = min(_first_difference(self.settings, session._settings), _steps_recorded(history))
        session._settings = self.settings.copy()
        session.breakpoints = self.breakpoints.copy()
        if holds != float("inf"):
            timeline.truncate_after(holds)
        session._recompute_to(self.position)
        if self.lanes is not None:
            self.lanes.lanes.closed = self.lanes.closed
            for lane, result, mark in self.lanes.lanes_state:
                lane.result = result
                mark.restore(lane.session)


def _first_difference(a, b) -> float:
    """The first step at which two settings logs differ (inf when they are the same)."""
    steps = [step for step in set(a._log) | set(b._log) if a.at(step) != b.at(step)]
    return min(steps) if steps else float("inf")


def _steps_recorded(history) -> int:
    """Iterations whose loss and gradient norms the history holds."""
    k = len(history.norm_names)
    return min(len(history.losses), len(history.grad_norms) // k if k else len(history.losses))

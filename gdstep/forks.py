"""Copies of a session that go their own way (lanes), taking one over again, and what is
computed on copies: the landscape, the line along the next update, the other backend (parity).

Mixed into the Session: a fork is a new Session on a fresh backend of the same kind, brought
to the same point by recomputing under the same settings log — exact to the bit, because
every phase is deterministic — and `adopt` makes another session's state this one's.
"""

from __future__ import annotations

from typing import Self

from gdstep.errors import GdstepError


class Forks:
    def fork(self, position: int | None = None) -> Self:
        """An independent session at this same point, equal to the bit: the same scenario on
        a fresh backend of the same kind, the same settings changes and breakpoints, the
        same history. Training the fork leaves this session as it is (lanes are forks).
        `position`: an earlier point to fork at instead (a phase count, as `seek` takes)."""
        position = self.position if position is None else min(position, self.position)
        fresh = getattr(self.backend, "fresh", None)
        if fresh is None or self.attached:
            raise GdstepError("fork: only a session opened on a scenario file can be copied: a Python scenario's "
                              "or an attached loop's model and optimizer are your own objects, which gdstep does "
                              "not copy")
        twin = type(self)(self.scenario, fresh(), history_budget=self.checkpoint_budget)
        twin.breakpoints = self.breakpoints.copy()
        twin.stop_when, twin.epochs = self.stop_when, self.epochs
        twin.look_ahead, twin.checkpoint_seconds = self.look_ahead, self.checkpoint_seconds     # the user's switches
        twin._settings = self._settings.copy()
        if getattr(self.backend, "shares_checkpoints", False):      # start from the nearest checkpoint
            # before the iteration before, as a rewind does: the previous update's records are made too
            checkpoint = self._timeline.at_or_before(max(min(self._step, position // 4) - 1, 0))
            twin.backend.restore(checkpoint.backend)
            twin._step, twin._epoch, twin._iteration = checkpoint.step, checkpoint.epoch, checkpoint.iteration
            twin._offset, twin._batch_size = checkpoint.offset, checkpoint.batch_size
            twin._history.extend_from(self._history, checkpoint.step)
            twin._timeline.save(checkpoint)
        twin.seek(position)               # recomputed under the same settings: exact to the bit
        return twin

    def adopt(self, other: Self) -> None:
        """Continue from another session's state (a lane's): its backend, cursor, settings,
        history and checkpoints become this session's. This session's events, breakpoints
        and switches (`look_ahead`, `checkpoint_seconds`) are kept: the breakpoints are the
        user's, who may have added or removed some since the fork (a lane runs with a copy
        made at the fork). `other` must not be used afterwards."""
        if other.scenario is not self.scenario:
            raise GdstepError("adopt: the session to continue from runs another scenario")
        kept = ("events", "_phase_fns", "breakpoints", "look_ahead", "checkpoint_seconds")
        self.__dict__.update({k: v for k, v in vars(other).items() if k not in kept})

    def compare_backends(self, steps: int = 5, device: str | None = None):
        """Run this scenario a few steps on numpy and torch (float64) from the start; see gdstep.parity."""
        from gdstep.parity import compare_backends
        return compare_backends(self.scenario, steps=steps, device=device, session_class=type(self))

    @property
    def checkpoint_budget(self) -> int:
        """The `history_budget` this session was opened with: bytes its rewind checkpoints
        and its ‖ΔW‖ measurement may hold together (the checkpoints take what the
        measurement leaves of it)."""
        return self._history_budget

    def lanes(self, specs):
        """Fork lanes from here (see gdstep.lanes): `s.lanes(["sgd lr=0.1", "adam lr=0.01"])`.
        They are the session's open lanes until adopted or closed (conditions read them as
        `lane(K).loss`)."""
        from gdstep.lanes import Lanes
        self._open_lanes = Lanes(self, specs)
        return self._open_lanes

    @property
    def open_lanes(self):
        """The lanes forked last, while they are open; else None."""
        lanes = getattr(self, "_open_lanes", None)
        return None if lanes is None or lanes.closed else lanes

    def lane_value(self, number: int, name: str):
        """What `lane(K).NAME` reads: a value of lane K of the open lanes; none (comparisons
        false, as for any value that does not exist) when there is no such lane."""
        lane = self._open_lane(number)
        return None if lane is None else lane.session.value(name)

    def lane_param(self, number: int, name: str, index: tuple[int, ...]) -> float | None:
        """What `lane(K).NAME[i,j]` reads: an element of a parameter of lane K (or none)."""
        lane = self._open_lane(number)
        return None if lane is None else lane.session.param(name, index)

    def _open_lane(self, number: int):
        lanes = self.open_lanes
        return lanes.lanes[number - 1] if lanes is not None and 1 <= number <= len(lanes.lanes) else None

    def landscape(self, directions: str = "pca", span: float | None = None, resolution: tuple[int, int] = (40, 40),
                  data: str = "full", path: int = 32, seed: int = 0, stop=None):
        """A 2-D slice of the loss around the current weights, with the recent path
        (gdstep.landscape); `stop()`, checked between grid points, gives it up when True."""
        from gdstep.landscape import landscape
        return landscape(self, directions, span, resolution, data, path, seed, stop)

    def line(self, t: tuple[float, float] = (-0.5, 3.0), points: int = 50):
        """The loss along the update about to be taken, L(W + t·ΔW), on its batch (gdstep.landscape)."""
        from gdstep.landscape import line
        return line(self, t, points)

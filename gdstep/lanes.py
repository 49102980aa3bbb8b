"""Lanes: the same training forked into 2–6 sessions that differ in one thing — optimizer,
learning rate, batch size or starting point — run in lockstep on the same data order and
compared side by side.

    lanes = s.lanes(["sgd lr=0.1", "sgd lr=0.1 momentum=0.9", "adam lr=0.01"])
    lanes.run(200)              # each lane 200 iterations, one iteration of each at a time
    print(lanes.summary())      # a table: each lane's settings, loss, steps, why it stopped
    lanes.adopt(3)              # the session goes on from lane 3 (lanes are numbered from 1)

Every lane is an exact, recorded session: it equals, bit for bit, a separate session
brought to the fork point and given the lane's settings there (`Session.fork` + `set`). A
lane `seed=K` starts afresh from the starting values drawn with seed K (same data, same
batches, the session's settings as they are now): another start, for local minima.
`adopt` keeps the session's own breakpoints (those added or removed since the fork).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from gdstep.errors import GdstepError
from gdstep.fmt import num
from gdstep.records import RunResult

MAX_LANES = 6


@dataclass(frozen=True)
class LaneSpec:
    """What a lane changes: an optimizer kind with its arguments (fresh state, torch's
    default lr unless given), or an lr / hyperparameters alone, a batch size, a seed."""

    text: str
    optimizer: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    batch_size: int | str | None = None
    seed: int | None = None


def parse_lane(text: str) -> LaneSpec:
    """`adam lr=0.01 betas=0.9,0.99`, `lr=0.05`, `momentum=0.9`, `batch_size=8`, `seed=3`."""
    from gdstep.optim import OPTIMIZERS

    words = text.split()
    if not words:
        raise GdstepError("lanes: an empty lane (write e.g. sgd lr=0.1 | adam lr=0.01)")
    optimizer = None
    if "=" not in words[0]:
        optimizer = words.pop(0)
        if optimizer not in OPTIMIZERS:
            raise GdstepError(f"lanes: unknown optimizer {optimizer!r} (expected one of: {', '.join(OPTIMIZERS)})")
    args: dict[str, Any] = {}
    batch_size = seed = None
    for word in words:
        name, eq, value = word.partition("=")
        if not eq or not name or not value:
            raise GdstepError(f"lanes: expected NAME=VALUE, such as lr=0.01, got {word!r}")
        if name == "batch_size":
            batch_size = "full" if value == "full" else _whole(name, value)
        elif name == "seed":
            seed = _whole(name, value, minimum=0)
        else:
            args[name] = _value(name, value)
    return LaneSpec(text.strip(), optimizer, args, batch_size, seed)


def _whole(name: str, value: str, minimum: int = 1) -> int:
    if not value.isdigit() or int(value) < minimum or len(value) > 12:
        raise GdstepError(f"lanes: {name} must be a whole number >= {minimum}, got {value!r}")
    return int(value)


def _value(name: str, word: str) -> Any:
    try:
        if word in ("true", "false"):
            return word == "true"
        if "," in word:
            return tuple(float(w) for w in word.split(","))
        return float(word)
    except ValueError:
        raise GdstepError(f"lanes: {name}: expected a number, true/false or numbers separated by commas, "
                          f"got {word!r}") from None


@dataclass
class Lane:
    number: int                     # 1-based, as the screen and scripts name lanes
    spec: LaneSpec
    session: Any
    result: RunResult | None = None

    @property
    def label(self) -> str:
        return f"lane {self.number}: {self.spec.text}"


class Lanes:
    """Lanes forked from a session; they run until `close()` or `adopt(k)`."""

    def __init__(self, session, specs: Sequence[str | LaneSpec]):
        if not 1 <= len(specs) <= MAX_LANES:
            raise GdstepError(f"lanes: give 1 to {MAX_LANES} lanes, got {len(specs)}")
        self.session = session
        self.fork_position = session.position
        self.lanes: tuple[Lane, ...] = tuple(
            Lane(k + 1, spec, _start(session, spec))
            for k, spec in enumerate(parse_lane(s) if isinstance(s, str) else s for s in specs))
        self.closed = False

    def __len__(self) -> int:
        return len(self.lanes)

    def lane(self, number: int) -> Lane:
        self._open()
        if not isinstance(number, int) or not 1 <= number <= len(self.lanes):
            raise GdstepError(f"no lane {number!r} (lanes 1 to {len(self.lanes)})")
        return self.lanes[number - 1]

    def run(self, steps: int | None = None, until: str | None = None) -> list[RunResult]:
        """Run every lane, one iteration of each in turn: `steps` iterations (as `step` does:
        breakpoints and a non-finite value stop a lane), or until `until` holds for it (as
        `run until` does, to the epoch limit at most). A lane that stops waits while the
        others go on. `until` reads each lane's own values (`loss`, not `lane(1).loss`)."""
        self._open()
        if steps is None and until is None:
            raise GdstepError("lanes run: give a number of iterations or a condition (lanes run 200, run until loss < 0.1)")
        if steps is not None and (not isinstance(steps, int) or steps < 1):
            raise GdstepError(f"lanes run: expected a whole number >= 1, got {steps!r}")
        if until is not None and "lane(" in until.replace(" ", ""):
            raise GdstepError("lanes run until reads each lane's own values: write e.g. loss < 0.1, not lane(1).loss")
        conditions = {lane.number: lane.session._condition(until) for lane in self.lanes} if until else {}
        going = {lane.number: steps if steps is not None else math.inf for lane in self.lanes}
        results: dict[int, RunResult] = {}
        while going:
            for lane in self.lanes:
                left = going.get(lane.number)
                if left is None:
                    continue
                result = lane.session.step(1) if until is None else lane.session.run(
                    until=conditions[lane.number], max_steps=1)
                results[lane.number] = result
                left -= 1
                if result.reason not in ("done", "max_steps") or left <= 0:
                    del going[lane.number]
                else:
                    going[lane.number] = left
        for lane in self.lanes:
            lane.result = results[lane.number]
        self.session.log("lanes", "lanes ran: " + "; ".join(
            f"lane {lane.number} loss {num(lane.session.loss_value) if lane.session.loss_value is not None else '—'}"
            for lane in self.lanes))
        return [lane.result for lane in self.lanes]

    def histories(self):
        return [lane.session.history for lane in self.lanes]

    def summary(self) -> str:
        """One row a lane: its settings, step, loss and why it stopped."""
        rows = [("lane", "settings", "step", "loss", "stopped")]
        for lane in self.lanes:
            s = lane.session
            rows.append((str(lane.number), lane.spec.text, str(s.step_count),
                         num(s.loss_value) if s.loss_value is not None else "—",
                         lane.result.reason if lane.result else "—"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)

    def adopt(self, number: int) -> None:
        """The session goes on from lane `number`: its settings, state and history."""
        lane = self.lane(number)
        self.session.adopt(lane.session)
        self.session.log("lanes", f"adopted {lane.label} at {self.session.cursor}")
        self.closed = True

    def close(self) -> None:
        self.closed = True

    def _open(self) -> None:
        if self.closed:
            raise GdstepError("these lanes are closed (adopted or closed): fork new ones with lanes")


def _start(session, spec: LaneSpec):
    """A lane's session: a fork with the lane's settings, or (seed=K) a fresh start."""
    if spec.seed is not None:
        lane = _fresh_start(session, spec.seed)
    else:
        lane = session.fork()
    changes: dict[str, Any] = dict(spec.args)
    if spec.optimizer is not None:
        changes["optimizer"] = spec.optimizer
    if spec.batch_size is not None:
        changes["batch_size"] = spec.batch_size
    if changes:
        lr = changes.pop("lr", None)
        lane.set(lr=lr, **changes)
    return lane


def _fresh_start(session, seed: int):
    """A new session on the same data and batches, from the starting values of `seed`."""
    from gdstep.nn.init import initial_params

    problem = getattr(session.backend, "problem", None)
    if problem is None or getattr(session.backend, "fresh", None) is None:
        raise GdstepError("lanes: seed= needs a scenario file's session (the model's own init is not gdstep's)")
    scenario = problem.scenario
    start = initial_params(problem.model, scenario.model.init, scenario.model.init_scale, seed, dict(scenario.init))
    fresh = session.backend.fresh(dataclasses.replace(problem, start=start))
    twin = type(session)(session.scenario, fresh, history_budget=session.checkpoint_budget)
    twin.breakpoints = session.breakpoints.copy()
    twin.stop_when, twin.epochs = session.stop_when, session.epochs
    _same_settings(session, twin)
    return twin


def _same_settings(session, twin) -> None:
    """A fresh start trains with the settings the session has now (as `set` left them: the
    optimizer with its hyperparameters and lr, the batch size), not the scenario's, so a
    seed lane differs from the others in its start alone."""
    changes: dict[str, Any] = {}
    if session.optimizer != twin.optimizer:
        changes["optimizer"] = session.optimizer
    if session.batch_size != twin.batch_size:
        changes["batch_size"] = session.batch_size
    if changes:
        twin.set(lr=session.lr, **changes)

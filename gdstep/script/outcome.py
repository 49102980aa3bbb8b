"""What one command did: the Outcome the Runner returns, and its JSON form for `replay --json`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gdstep.gradcheck import GradCheck
from gdstep.records import Cursor, RunResult


@dataclass(frozen=True)
class Outcome:
    """What one command did."""

    command: str
    line: int | None
    ok: bool
    lines: tuple[str, ...]
    message: str
    cursor: Cursor
    step: int
    loss: float | None
    values: dict[str, Any] = field(default_factory=dict)
    result: RunResult | None = None
    gradcheck: GradCheck | None = None          # what `gradcheck NAME[i,j]` found
    failed_expect: bool = False
    error: bool = False
    exception: Exception | None = field(default=None, repr=False, compare=False)  # the GdstepError behind error

    def to_json(self) -> dict[str, Any]:
        return {"command": self.command, "line": self.line, "ok": self.ok,
                "cursor": {"epoch": self.cursor.epoch, "iteration": self.cursor.iteration, "phase": self.cursor.phase},
                "step": self.step, "loss": _json_number(self.loss), "printed": {k: _jsonable(v) for k, v in self.values.items()},
                "message": self.message}


def _json_number(x: float | None) -> float | str | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else repr(x)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()] if value.ndim else _json_number(float(value))
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _json_number(value)
    return str(value)

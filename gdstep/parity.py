"""Parity: the numpy engine and the torch backend run the same scenario from the same start,
both in float64, and the largest difference per parameter says whether they agree."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gdstep.errors import GdstepError

TOLERANCE = 1e-9        # relative; float64 agreement is ~1e-15 per step


@dataclass(frozen=True)
class ParityRow:
    name: str
    shape: tuple[int, ...]
    max_abs: float            # max |numpy − torch| over the elements
    scale: float              # max |numpy|, for the relative difference

    @property
    def relative(self) -> float:
        if math.isnan(self.max_abs):
            return math.nan
        return self.max_abs / self.scale if self.scale > 0 else self.max_abs


@dataclass(frozen=True)
class Parity:
    scenario: str
    steps: int
    device: str
    rows: tuple[ParityRow, ...]
    tolerance: float = TOLERANCE

    @property
    def max_relative(self) -> float:
        values = [r.relative for r in self.rows]
        return math.nan if any(math.isnan(v) for v in values) else max(values, default=0.0)

    @property
    def ok(self) -> bool:
        return self.max_relative <= self.tolerance

    def __str__(self) -> str:
        width = max([len("parameter")] + [len(r.name) for r in self.rows])
        lines = [f"parity: numpy vs torch ({self.device}), float64, {self.steps} step{'s' * (self.steps != 1)} "
                 f"from the same start — {self.scenario}",
                 f"  {'parameter':<{width}}  {'shape':<12}  {'max |numpy − torch|':>19}  {'relative':>9}"]
        for r in self.rows:
            lines.append(f"  {r.name:<{width}}  {str(r.shape):<12}  {r.max_abs:>19.3e}  {r.relative:>9.2e}")
        verdict = "agree" if self.ok else "DIFFER"
        lines.append(f"  {verdict}: largest relative difference {self.max_relative:.2e} (tolerance {self.tolerance:g})")
        return "\n".join(lines)


def _row(name: str, a, b) -> ParityRow:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    with np.errstate(all="ignore"):
        diff = np.abs(a - b)
        same_bad = (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b))
        diff = np.where(same_bad, 0.0, diff)
        max_abs = float(np.nan if np.isnan(diff).any() else diff.max(initial=0.0))
        finite = np.abs(a[np.isfinite(a)])
    return ParityRow(name, tuple(a.shape), max_abs, float(finite.max(initial=0.0)))


def compare_backends(scenario, steps: int = 5, device: str | None = None, *, session_class) -> Parity:
    """Run `steps` iterations on the numpy engine and on the torch backend (float64, on
    `device`) from the same start; compare every parameter, the optimizer state and the loss.
    `session_class` is gdstep's Session (handed in: the Session offers this comparison)."""
    from gdstep.backends.numpy_backend import NumpyBackend
    from gdstep.backends.python_scenario import PythonScenario
    from gdstep.backends.torch_backend import TorchBackend
    from gdstep.problem import prepare
    from gdstep.scenario import Scenario, load_scenario

    if not isinstance(scenario, Scenario):
        from gdstep.bundled import resolve
        path = resolve(scenario if isinstance(scenario, (str, Path)) else None)
        if path.suffix == ".py":
            raise GdstepError(f"{path}: parity compares the numpy and torch backends on a .toml scenario; "
                              "a Python scenario runs on torch only")
        scenario = load_scenario(path)
    if isinstance(scenario, PythonScenario):
        raise GdstepError(f"{scenario.file}: parity compares the numpy and torch backends on a .toml scenario; "
                          "a Python scenario runs on torch only")
    if not isinstance(steps, int) or steps < 1:
        raise GdstepError(f"parity: steps must be a whole number >= 1, got {steps!r}")
    problem = prepare(scenario)
    reference = session_class(scenario, NumpyBackend(problem, "float64"))
    torch_backend = TorchBackend(problem, device=device, dtype="float64")
    candidate = session_class(scenario, torch_backend)
    for s in (reference, candidate):
        s.seek(4 * steps)            # unchecked: parity reports differences, it does not stop on them
    rows = []
    theirs = candidate.params
    for name, value in reference.params.items():
        rows.append(_row(name, value, theirs[name]))
    state_ref, state_torch = reference.optimizer_state, candidate.optimizer_state
    for name, state in state_ref.items():
        for key, value in state.items():
            other = state_torch.get(name, {}).get(key)
            if value is None or other is None or key == "step":
                continue
            rows.append(_row(f"{name} {key}", value, other))
    rows.append(_row("loss", reference.loss_value, candidate.loss_value))
    return Parity(scenario.name, steps, torch_backend.device, tuple(rows))

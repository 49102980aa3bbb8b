"""Gradient check: the analytic gradient of one element against a central finite difference,
on the current batch with the current parameters."""

from __future__ import annotations

from dataclasses import dataclass

from gdstep import arrays
from gdstep.errors import GdstepError, index_problem
from gdstep.fmt import index_text, num


@dataclass(frozen=True)
class GradCheck:
    name: str
    index: tuple[int, ...]
    analytic: float
    numeric: float
    h: float
    abs_error: float
    rel_error: float
    ok: bool
    batch: str = ""          # which batch, at which parameters

    def __str__(self) -> str:
        mark = "ok" if self.ok else "MISMATCH"
        where = f" ({self.batch})" if self.batch else ""
        return (f"gradcheck {self.name}{index_text(self.index)}: analytic {num(self.analytic)}, "
                f"numeric {num(self.numeric)} (h = {self.h:g}), relative error {self.rel_error:.2e} — {mark}{where}")


def gradcheck(session, name: str, index: tuple[int, ...], h: float | None = None) -> GradCheck:
    backend = session.backend
    if name not in backend.param_shapes:
        raise GdstepError(f"no parameter {name!r} (parameters: {', '.join(backend.param_shapes)})")
    shape = backend.param_shapes[name]
    problem = index_problem(name, shape, index)
    if problem:
        raise GdstepError(problem)
    float64 = backend.dtype == "float64"
    _, x, y = session.current_batch()
    w = arrays.element(backend.params()[name], index)
    if h is None:
        h = (1e-6 if float64 else 1e-2) * max(1.0, abs(w))
    plus = backend.loss_value(x, y, {name: (index, w + h)})
    minus = backend.loss_value(x, y, {name: (index, w - h)})
    numeric = (plus - minus) / (2 * h)
    analytic = arrays.element(backend.gradients(x, y)[name], index)
    abs_error = abs(analytic - numeric)
    rel_error = abs_error / max(abs(analytic), abs(numeric), 1e-300)
    rtol, atol = (1e-5, 1e-8) if float64 else (2e-2, 1e-3)
    cursor = session.cursor
    which = "this iteration's batch" if session.phase_due != "forward" else "the next iteration's batch"
    batch = f"{which}, epoch {cursor.epoch} · iteration {cursor.iteration}, at the current parameters"
    return GradCheck(name, index, analytic, numeric, h, abs_error, rel_error, abs_error <= atol or rel_error <= rtol, batch)

"""Gradient check: the analytic gradient of one element against central finite differences,
on the current batch with the current parameters.

The step is chosen by the dtype's precision: h = ε^(1/3)·max(1, |w|) balances the rounding
error of a central difference (about δ/h, δ the noise of one loss value) against its
truncation error (about h²·f'''/6). The loss is evaluated at ±h, ±h/2 and ±h/4:

- the numeric derivative is the Richardson extrapolation (4·D(h/2) − D(h))/3, which
  cancels the h² term; its error is estimated from how far D(h), D(h/2), D(h/4) stray from
  it (the curvature, or many ReLU boundaries packed closer than h/4) and from δ/h (δ
  measured as the scatter of the loss a few ulps around w, where the loss is linear);
  where that estimate allows, the step grows fourfold (up to ε^(1/5)), and where a kink
  is found it shrinks fourfold, twice at most;
- a smooth loss has second differences s(t) = f(w+t) − 2f(w) + f(w−t) ≈ t²·f'', so
  s(h) ≈ 4·s(h/2) ≈ 16·s(h/4); a kink within the step (a ReLU, abs or max whose boundary
  is crossed between w − h and w + h) breaks that scaling. There the finite difference
  does not measure the derivative at w, and the check says so instead of a mismatch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gdstep import arrays
from gdstep.errors import GdstepError, index_problem
from gdstep.fmt import index_text, num

# machine epsilon of each dtype a parameter may have
EPS = {"float64": float(np.finfo(np.float64).eps), "float32": float(np.finfo(np.float32).eps),
       "float16": float(np.finfo(np.float16).eps), "bfloat16": 2.0 ** -7}
RTOL = {"float64": 1e-5, "float32": 1e-3}       # besides the estimated error, relative
SAFETY = 4.0                                    # the error estimate is rough: a mismatch is well beyond it


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
    tolerance: float = 0.0   # the error the numeric value may have (rounding and truncation, estimated)
    kink: bool = False       # a kink lies within ±h: the finite difference does not apply

    @property
    def verdict(self) -> str:
        if self.ok:
            return "ok"
        return "kink within ±h" if self.kink else "MISMATCH"

    def __str__(self) -> str:
        where = f" ({self.batch})" if self.batch else ""
        head = (f"gradcheck {self.name}{index_text(self.index)}: analytic {num(self.analytic)}, "
                f"numeric {num(self.numeric)} (h = {self.h:g}, ± {self.tolerance:.1e}), "
                f"relative error {self.rel_error:.2e} — {self.verdict}")
        if self.ok and self.tolerance > 0.1 * max(abs(self.analytic), abs(self.numeric)):
            head += f" to ± {self.tolerance:.1e}: finite differences resolve no finer here"
        if self.kink and not self.ok:
            head += (": a ReLU/abs/max boundary lies between w − h and w + h, so the difference quotient "
                     "is not the derivative at w (not a wrong gradient; check another element)")
        return head + where


def step_for(dtype: str, w: float) -> float:
    """h = ε^(1/3)·max(1, |w|): the central difference's best step for that precision."""
    eps = EPS.get(dtype, EPS["float32"])
    return eps ** (1 / 3) * max(1.0, abs(w))


def gradcheck(session, name: str, index: tuple[int, ...], h: float | None = None) -> GradCheck:
    backend = session.backend
    if name not in backend.param_shapes:
        raise GdstepError(f"no parameter {name!r} (parameters: {', '.join(backend.param_shapes)})")
    shape = backend.param_shapes[name]
    problem = index_problem(name, shape, index)
    if problem:
        raise GdstepError(problem)
    param = backend.params()[name]
    dtype = arrays.dtype_name(param)
    eps = EPS.get(dtype, EPS["float32"])
    _, x, y = session.current_batch()
    w = arrays.element(param, index)
    given = h
    if h is None:
        h = step_for(dtype, w)

    def f(at: float) -> float:
        return backend.loss_value(x, y, {name: (index, at)})

    def at(t: float) -> tuple[float, float]:
        """w + t as the parameter's dtype holds it: the step taken, and f there."""
        moved = _held(param, w + t)
        return moved - w, f(moved)

    f0 = f(w)
    analytic = arrays.element(backend.gradients(x, y)[name], index)
    noise = _noise(at, f0, analytic, eps * max(abs(w), 1.0), eps)
    est = _estimate(at, f0, h, noise)
    if given is None:           # follow the local curvature: a longer step where it is flat, shorter at a kink
        longest = eps ** (1 / 5) * max(1.0, abs(w))
        for _ in range(2):
            if est.kink:
                t = h / 4
            elif est.truncation < est.rounding / 4 and h * 4 <= longest * 1.01:
                t = h * 4
            else:
                break
            other = _estimate(at, f0, t, noise)
            if other.kink and not est.kink:      # the longer step reaches a kink: keep the shorter
                break
            shrinking = est.kink
            h, est = t, other
            if shrinking and not est.kink:
                break
    numeric, tolerance, kink = est.numeric, SAFETY * (est.truncation + est.rounding), est.kink
    abs_error = abs(analytic - numeric)
    rel_error = abs_error / max(abs(analytic), abs(numeric), 1e-300)
    # at a kink the spread of the differences measures the kink, not an error: only a close match is ok
    ok = math.isfinite(abs_error) and ((abs_error <= tolerance and not kink) or rel_error <= RTOL.get(dtype, RTOL["float32"]))
    if session.phase_due != "forward":
        batch = f"this iteration's batch, {session.where.rsplit(' · ', 1)[0]}"    # (attach mode: the loop's iteration)
    elif session.attached and not session.backend.has_batch(session.step_count):    # not given yet: the latest
        batch = f"the loop's latest batch, loop iteration {session.step_count}"
    elif session.attached:          # a rewind to a boundary: the next iteration's, kept
        batch = f"the next iteration's batch, loop iteration {session.step_count + 1}"
    else:
        batch = f"the next iteration's batch, {session.where.rsplit(' · ', 1)[0]}"
    batch += ", at the current parameters"
    return GradCheck(name, index, analytic, numeric, h, abs_error, rel_error, ok, batch, tolerance, kink)


@dataclass(frozen=True)
class _Estimate:
    numeric: float        # Richardson: (4·D(h/2) − D(h))/3
    truncation: float     # how far D(h), D(h/2), D(h/4) stray from it: what the curvature costs
    rounding: float       # about 3δ/h
    kink: bool


def _estimate(at, f0: float, h: float, noise: float) -> _Estimate:
    sides = {t: (at(t), at(-t)) for t in (h, h / 2, h / 4)}
    d = {t: (fp - fm) / (tp - tm) for t, ((tp, fp), (tm, fm)) in sides.items()}
    s = {t: fp - 2 * f0 + fm for t, ((_, fp), (_, fm)) in sides.items()}
    kink = any(abs(s[t] - 4 * s[t / 2]) > 16 * noise + 1e-3 * abs(s[t]) for t in (h, h / 2))
    numeric = (4 * d[h / 2] - d[h]) / 3
    spread = max(abs(v - numeric) for v in d.values())     # smooth: about h²·f'''; kinks closer than h/4: more
    return _Estimate(numeric, spread, 3 * noise / h, kink)


def _held(param, value: float) -> float:
    """`value` rounded to the parameter's dtype (float32, bfloat16 …), as writing it does."""
    if arrays.is_torch(param):
        import torch
        return float(torch.tensor(value, dtype=param.dtype).item())
    return float(np.asarray(value, dtype=param.dtype))


def _noise(at, f0: float, slope: float, ulp: float, eps: float) -> float:
    """The rounding noise of one loss value near w: a few ulps away the loss is linear, so
    what is left after the slope is rounding (at least ε·|f(w)|)."""
    scatter = []
    for k in (-2, 1, 3):
        t, ft = at(k * ulp)
        scatter.append(abs(ft - f0 - slope * t))
    return max(eps * abs(f0), *(v for v in scatter if math.isfinite(v)), 1e-300)

"""The loss landscape of the real network around the current weights, and the loss along
the update about to be taken.

`landscape` is a 2-D slice: L(W + α·d₁ + β·d₂) on a grid, for two directions d₁, d₂ in the
space of all trainable parameters —

- "pca": the top two principal directions of the recent path (Li et al. 2018, §7): the only
  choice on which the path's projection is faithful (the note says how much of its
  variance the plane holds);
- "random": filter-normalised Gaussian directions (Li et al. 2018, §4): each row of a weight
  matrix (one output unit's filter) scaled to that row's norm, biases left out (zero);
- "gradient": −∇L and the last update (made orthogonal to it), each as long as ‖W‖.

With exactly two trainable numbers the slice is the true surface: the axes are the two
parameters themselves and the path is the recorded values. `line` is L(W + t·ΔW) for the
update ΔW the optimizer is about to take, on its batch; t = 1 is that step (computed at
W_new itself), so overshooting shows at a glance.

Nothing here changes the session: the path and the next update are computed on forks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from gdstep.errors import GdstepError
from gdstep.fmt import index_text
from gdstep.landscape_grid import grid_losses, never, stop_if_asked

DIRECTIONS = ("pca", "random", "gradient")


@dataclass(frozen=True)
class Landscape:
    directions: str                      # "pca", "random", "gradient" or "parameters" (two numbers)
    axes: tuple[str, str]
    alphas: np.ndarray                   # (C,) coordinates along d₁
    betas: np.ndarray                    # (R,) coordinates along d₂
    loss: np.ndarray                     # (R, C): loss[i, j] at W₀ + alphas[j]·d₁ + betas[i]·d₂
    path: np.ndarray                     # (K, 2) the recent path in these coordinates; the last row is now
    steps: tuple[int, ...]               # the step of each path point
    data: str                            # "full" or "batch"
    note: str
    origin: dict[str, np.ndarray] = field(repr=False)
    d1: dict[str, np.ndarray] = field(repr=False)
    d2: dict[str, np.ndarray] = field(repr=False)
    lane_paths: tuple[np.ndarray, ...] = ()  # each open lane's recent path, projected the same way
    off_plot: str = ""                   # where points of the path lie outside the grid, said (else "")

    def weights_at(self, alpha: float, beta: float) -> dict[str, np.ndarray]:
        return {n: self.origin[n] + alpha * self.d1[n] + beta * self.d2[n] for n in self.origin}

    def project(self, params: dict[str, np.ndarray]) -> tuple[float, float]:
        """(α, β) of the point of the plane nearest to these weights (least squares)."""
        names = list(self.origin)
        basis = np.stack([_flat(self.d1, names), _flat(self.d2, names)], axis=1)
        offset = _flat(params, names) - _flat(self.origin, names)
        a, b = np.linalg.lstsq(basis, offset, rcond=None)[0]
        return float(a), float(b)


@dataclass(frozen=True)
class Line:
    t: np.ndarray                        # the points along the update
    loss: np.ndarray                     # L(W + t·ΔW) on the update's batch
    step: int                            # the update (0 = the first)
    at_zero: float                       # the loss before the update
    at_one: float                        # the loss after it (t = 1)


def landscape(session, directions: str = "pca", span: float | None = None, resolution: tuple[int, int] = (40, 40),
              data: str = "full", path: int = 32, seed: int = 0, stop=None) -> Landscape:
    """`stop`: checked between grid points; when it returns True the computation is given
    up (`gdstep.errors.Abandoned`)."""
    if directions not in DIRECTIONS:
        raise GdstepError(f"landscape: directions are {', '.join(DIRECTIONS)}, got {directions!r}")
    if data not in ("full", "batch"):
        raise GdstepError(f"landscape: data is \"full\" or \"batch\", got {data!r}")
    _copyable(session, "landscape")
    cols, rows = _resolution(resolution)
    if span is not None and not (isinstance(span, (int, float)) and math.isfinite(span) and span > 0):
        raise GdstepError(f"landscape: span is a number > 0, got {span!r}")
    stop = stop or never
    stop_if_asked(stop)
    names = [n for n in session.backend.param_shapes if n in session.backend.trainable]
    if not names:
        raise GdstepError("landscape: nothing is trainable")
    w0 = {n: np.asarray(v, dtype=np.float64) for n, v in session.params.items() if n in names}
    steps, points = _trajectory(session, max(0, path), stop)
    flat0 = _flat(w0, names)
    absolute = np.array([_flat(p, names) for p in points])
    offsets = absolute - flat0
    lanes = session.open_lanes
    lane_points = [np.array([_flat(p, names) for p in _trajectory(lane.session, _since_fork(lanes, lane, path), stop)[1]])
                   for lane in (lanes.lanes if lanes is not None else ())]
    lanes_moved = sum(len(p) - 1 for p in lane_points) >= 2
    if flat0.size == 2:
        kind, axes = "parameters", tuple(f"{n}{index_text(i)}" for n in names for i in np.ndindex(w0[n].shape))
        d1, d2 = np.eye(2)
        note = "two trainable numbers: the true loss surface, and the recorded path"
    elif directions == "pca" and lanes_moved:          # the plane the lanes spread over from the fork
        d1, d2, share = _principal(np.concatenate(lane_points) - flat0)
        kind, axes = "pca", ("PC1", "PC2")
        note = f"PCA of the lanes' paths since the fork: the plane holds {share:.1%} of their variance"
    elif directions == "pca":
        if len(points) < 3:
            raise GdstepError("landscape pca: the path has fewer than 3 points; step further or use random directions")
        d1, d2, share = _principal(offsets)
        kind, axes = "pca", ("PC1", "PC2")
        note = f"PCA of the last {len(points)} steps: the plane holds {share:.1%} of the path's variance"
    elif directions == "random":
        rng = np.random.default_rng(seed)
        d1, d2 = (_flat(_filter_normalised(w0, names, rng), names) for _ in range(2))
        kind, axes = "random", ("d₁ (random)", "d₂ (random)")
        note = "filter-normalised random directions: the path is a projection, not the real path"
    else:
        d1, d2 = _gradient_directions(session, w0, names, data, flat0)
        kind, axes = "gradient", ("−∇L", "last update ⊥")
        note = "−∇L and the last update: the path is a projection, not the real path"
    stop_if_asked(stop)
    basis = np.stack([d1, d2], axis=1)
    origin = w0 if kind != "parameters" else {n: np.zeros_like(v) for n, v in w0.items()}

    def project(points: np.ndarray) -> np.ndarray:
        if kind == "parameters":                       # the values themselves
            return points.copy()
        return np.linalg.lstsq(basis, (points - flat0).T, rcond=None)[0].T

    coords = project(absolute)
    lane_paths = tuple(project(p) for p in lane_points)
    alphas, betas = _grid(np.concatenate([coords, *lane_paths]), kind, span, cols, rows)
    x, y = _data(session, data)
    loss = grid_losses(session.backend, x, y, origin, _unflat(d1, w0, names), _unflat(d2, w0, names), alphas, betas,
                       stop=stop)
    return Landscape(kind, axes, alphas, betas, loss, coords, tuple(steps), data, note,
                     origin, _unflat(d1, w0, names), _unflat(d2, w0, names), lane_paths,
                     _off_the_plot(coords, alphas, betas))


def copyable(session) -> bool:
    """Whether the session can be copied (forked) for the landscape and the line: one opened
    on a .toml scenario, whose model and optimizer are gdstep's own."""
    return not session.attached and getattr(session.backend, "fresh", None) is not None


def _copyable(session, what: str) -> None:
    """The path and the next update are computed on copies of the session (forks), which
    only a session opened on a scenario file gives: said up front, in the view's own words."""
    if not copyable(session):
        whose = "an attached loop" if session.attached else "a Python scenario"
        raise GdstepError(f"{what}: not drawn for {whose}: it is drawn on copies of the session, and {whose}'s "
                          "model and optimizer are your own objects, which gdstep does not copy (a .toml "
                          "scenario's are gdstep's)")


def line(session, t: tuple[float, float] = (-0.5, 3.0), points: int = 50) -> Line:
    """L(W + t·ΔW) along the next update (after backward: the update due; otherwise the
    next iteration's, computed on a fork) on the batch that update uses."""
    lo, hi = t
    if not (lo < 1 < hi) or points < 3:
        raise GdstepError("line: t runs over an interval around 1 (the step), such as (-0.5, 3)")
    _copyable(session, "line")
    twin = session.fork()
    while twin.phase_due != "update":
        twin.next_phase()
    _, x, y = twin.current_batch()
    names = [n for n in twin.backend.param_shapes if n in twin.backend.trainable]
    rec = twin.update()
    old = {n: np.asarray(rec.params[n].old, dtype=np.float64) for n in names if n in rec.params}
    new = {n: np.asarray(rec.params[n].new, dtype=np.float64) for n in old}
    ts = np.unique(np.concatenate([np.linspace(lo, hi, points), [0.0, 1.0]]))
    losses = np.empty(len(ts))
    for k, tk in enumerate(ts):
        params = old if tk == 0 else new if tk == 1 else {n: old[n] + tk * (new[n] - old[n]) for n in old}
        losses[k] = twin.backend.loss_at(x, y, params)
    return Line(ts, losses, rec.step, float(losses[ts == 0][0]), float(losses[ts == 1][0]))


# -- pieces -------------------------------------------------------------------------------------

def _resolution(resolution) -> tuple[int, int]:
    cols, rows = resolution
    if not all(isinstance(v, int) and 2 <= v <= 400 for v in (cols, rows)):
        raise GdstepError(f"landscape: resolution is two whole numbers from 2 to 400, got {resolution!r}")
    return cols, rows


def _flat(params: dict[str, np.ndarray], names: list[str]) -> np.ndarray:
    return np.concatenate([np.asarray(params[n], dtype=np.float64).ravel() for n in names])


def _unflat(flat: np.ndarray, like: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    out, start = {}, 0
    for n in names:
        size = like[n].size
        out[n] = flat[start:start + size].reshape(like[n].shape)
        start += size
    return out


def _trajectory(session, path: int, stop=never) -> tuple[list[int], list[dict[str, np.ndarray]]]:
    """The parameters after each of the last `path` updates and now, read from a fork."""
    now = session.step_count
    first = max(0, now - path)
    twin = session.fork(4 * first)
    steps, points = [], []
    for step in range(first, now + 1):
        stop_if_asked(stop)
        if step > first:
            twin.seek(4 * step)
        steps.append(step)
        points.append({n: np.asarray(v, dtype=np.float64) for n, v in twin.params.items()})
    points[-1] = {n: np.asarray(v, dtype=np.float64) for n, v in session.params.items()}
    return steps, points


def _principal(offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The top two principal directions of points (rows), and the share of their variance."""
    _, s, vt = np.linalg.svd(offsets - offsets.mean(axis=0), full_matrices=False)
    second = vt[1] if len(vt) > 1 else np.zeros_like(vt[0])
    return vt[0], second, float((s[:2] ** 2).sum() / max((s ** 2).sum(), 1e-300))


def _since_fork(lanes, lane, path: int) -> int:
    """How many of a lane's last steps to draw: those since the fork (a fresh start's all),
    at most `path`."""
    since = lane.session.step_count if lane.spec.seed is not None else \
        lane.session.step_count - lanes.fork_position // 4
    return max(0, min(path, since))


def _filter_normalised(w0, names, rng) -> dict[str, np.ndarray]:
    out = {}
    for n in names:
        w = w0[n]
        if w.ndim < 2:
            out[n] = np.zeros_like(w)                 # biases: left out, as in Li et al.'s default
            continue
        d = rng.standard_normal(w.shape)
        rows_w = np.linalg.norm(w.reshape(w.shape[0], -1), axis=1)
        rows_d = np.linalg.norm(d.reshape(d.shape[0], -1), axis=1)
        scale = np.where(rows_d > 0, rows_w / np.where(rows_d > 0, rows_d, 1.0), 0.0)
        out[n] = d * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    return out


def _gradient_directions(session, w0, names, data, flat0):
    x, y = _data(session, data)
    g = session.backend.gradients(x, y)
    g = _flat({n: np.asarray(_numpy(g[n]), dtype=np.float64) for n in names}, names)
    length = max(np.linalg.norm(flat0), 1e-12)
    if not np.linalg.norm(g):
        raise GdstepError("landscape gradient: the gradient is zero here; use pca or random directions")
    d1 = -g / np.linalg.norm(g)
    upd = session.record("update")
    if upd is not None and all(n in upd.params for n in names):
        step = _flat({n: np.asarray(_numpy(upd.params[n].new), dtype=np.float64) -
                      np.asarray(_numpy(upd.params[n].old), dtype=np.float64) for n in names}, names)
    else:
        step = np.random.default_rng(0).standard_normal(d1.shape)
    step = step - (step @ d1) * d1
    if np.linalg.norm(step) < 1e-12:
        step = np.random.default_rng(1).standard_normal(d1.shape)
        step -= (step @ d1) * d1
    return d1 * length, step / np.linalg.norm(step) * length


def _numpy(a):
    from gdstep import arrays
    return arrays.to_numpy(a)


def _grid(coords: np.ndarray, kind: str, span: float | None, cols: int, rows: int):
    if kind == "random":
        reach = (span or 1.0,) * 2
        centre = (0.0, 0.0)
    elif kind == "gradient":
        reach = (span or 0.1,) * 2
        centre = (0.0, 0.0)
    else:                                              # around the path, with a margin
        coords = coords[np.isfinite(coords).all(axis=1)]
        coords = np.clip(coords, -1e150, 1e150) if len(coords) else np.zeros((1, 2))
        lo, hi = coords.min(axis=0), coords.max(axis=0)
        centre = (lo + hi) / 2
        size = max(1.0, float(np.linalg.norm(coords[-1])))  # the weights' magnitude
        extent = float(np.max(hi - lo)) / 2
        if extent < 1e-3 * size:                       # no path yet: the bowl around the point
            half = np.full(2, size)
        else:                                          # each axis at least a quarter of the other
            half = np.maximum((hi - lo) / 2, max(0.25 * extent, 0.05 * size)) * 1.25
        reach = tuple(half * (span or 1.0))
        centre = tuple(centre)
    return (np.linspace(centre[0] - reach[0], centre[0] + reach[0], cols),
            np.linspace(centre[1] - reach[1], centre[1] + reach[1], rows))


def _off_the_plot(coords: np.ndarray, alphas: np.ndarray, betas: np.ndarray) -> str:
    """Where points of the path lie outside the grid (a run that diverged: the grid stops
    at ±1e150, where the loss would overflow), said with the last one's coordinates."""
    with np.errstate(invalid="ignore"):
        inside = (np.isfinite(coords).all(axis=1) & (coords[:, 0] >= alphas[0]) & (coords[:, 0] <= alphas[-1])
                  & (coords[:, 1] >= betas[0]) & (coords[:, 1] <= betas[-1]))
    if inside.all():
        return ""
    last = coords[~inside][-1]
    now = " (◆now among them)" if not inside[-1] else ""
    with np.errstate(invalid="ignore"):
        clipped = " (the grid stops at ±1e150)" if not (np.abs(coords) <= 1e150).all() else ""
    return (f"off the plot: {int((~inside).sum())} of {len(coords)} path points{now}, the last at "
            f"({last[0]:.3g}, {last[1]:.3g}){clipped}")


def _data(session, data: str):
    if data == "batch":
        _, x, y = session.current_batch()
        return x, y
    return session.backend.x, session.backend.y

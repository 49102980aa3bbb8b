"""The numbers behind the descent plots: the landscape around the weights with the paths on
it (the session's and each open lane's), and the loss along the next update.

Computed on the worker as a background job after the user's jobs (driver.py), first coarse
then fine; this module does not import Textual.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gdstep import arrays
from gdstep.errors import GdstepError
from gdstep.landscape import Landscape, Line, _data, _flat, _grid, _losses, _trajectory, _unflat

COARSE = (16, 16)
FINE = (40, 40)
PATH = 32
SPAN = 1.6                               # pca and the true surface: room around the path to see the bowl


@dataclass(frozen=True, eq=False)
class LanePath:
    number: int
    label: str
    points: np.ndarray                       # (K, 2) on the landscape's plane; the last row is the lane now


@dataclass(frozen=True, eq=False)
class LandscapePicture:
    landscape: Landscape | None
    lanes: tuple[LanePath, ...] = ()
    fine: bool = True
    error: str = ""                          # why there is no landscape (then landscape is None)
    fallback: str = ""                       # the directions asked for, when others were drawn instead


@dataclass(frozen=True, eq=False)
class LinePicture:
    line: Line | None
    error: str = ""


def _lanes_key(session) -> tuple:
    lanes = session.open_lanes
    if lanes is None:
        return ()
    return (id(lanes),) + tuple(lane.session.position for lane in lanes.lanes)


def landscape_key(session, directions: str) -> tuple:
    return (session.position, directions, _lanes_key(session))


def line_key(session) -> tuple:
    return (session.position,)


def lane_paths(landscape: Landscape, session, path: int = PATH) -> tuple[LanePath, ...]:
    """Each open lane's recent path (from its fork on, at most `path` steps) projected onto
    the plane of `landscape` by least squares."""
    lanes = session.open_lanes
    if lanes is None:
        return ()
    out = []
    for lane in lanes.lanes:
        ls = lane.session
        since_fork = max(0, ls.step_count - lanes.fork_position // 4)
        _, points = _trajectory(ls, min(path, since_fork))
        coords = np.array([landscape.project({n: arrays.to_numpy(v) for n, v in p.items()}) for p in points])
        out.append(LanePath(lane.number, lane.label, coords.reshape(-1, 2)))
    return tuple(out)


def lanes_landscape(session, resolution: tuple[int, int], path: int = PATH) -> Landscape:
    """With lanes open, PCA over every lane's path since the fork (at most `path` steps
    each), around the fork point: the plane the lanes spread over, which the session's own
    path (it stops at the fork) does not give."""
    lanes = session.open_lanes
    names = [n for n in session.backend.param_shapes if n in session.backend.trainable]
    w0 = {n: np.asarray(arrays.to_numpy(v), dtype=np.float64) for n, v in session.params.items() if n in names}
    flat0 = _flat(w0, names)
    offsets = []
    for lane in lanes.lanes:
        ls = lane.session
        _, points = _trajectory(ls, min(path, max(0, ls.step_count - lanes.fork_position // 4)))
        offsets += [_flat({n: arrays.to_numpy(p[n]) for n in names}, names) - flat0 for p in points]
    offsets = np.array(offsets)
    if len(offsets) < 3 or flat0.size < 3:
        raise GdstepError("the lanes have not moved yet")
    _, sv, vt = np.linalg.svd(offsets - offsets.mean(axis=0), full_matrices=False)
    d1, d2 = vt[0], vt[1] if len(vt) > 1 else np.zeros_like(vt[0])
    share = float((sv[:2] ** 2).sum() / max((sv ** 2).sum(), 1e-300))
    coords = np.vstack([offsets @ np.stack([d1, d2], axis=1), [[0.0, 0.0]]])
    cols, rows = resolution
    alphas, betas = _grid(coords, "pca", SPAN, cols, rows)
    x, y = _data(session, "full")
    u1, u2 = _unflat(d1, w0, names), _unflat(d2, w0, names)
    loss = _losses(session.backend, x, y, w0, u1, u2, alphas, betas)
    note = f"PCA of the lanes' paths since the fork: the plane holds {share:.1%} of their variance"
    return Landscape("pca", ("PC1", "PC2"), alphas, betas, loss, np.zeros((1, 2)), (session.step_count,), "full",
                     note, w0, u1, u2)


def _trainable_numbers(session) -> int:
    backend = session.backend
    return sum(int(np.prod(shape)) for n, shape in backend.param_shapes.items() if n in backend.trainable)


def make_landscape(session, directions: str, resolution: tuple[int, int]) -> LandscapePicture:
    """The landscape now; PCA before the path has 3 points falls back to random directions.
    With lanes open and moved, PCA is over the lanes' paths (lanes_landscape)."""
    fallback = ""
    try:
        lanes = session.open_lanes
        if directions == "pca" and lanes is not None and _trainable_numbers(session) != 2 and \
                any(lane.session.step_count > lanes.fork_position // 4 for lane in lanes.lanes):
            landscape = lanes_landscape(session, resolution)
            return LandscapePicture(landscape, lane_paths(landscape, session), resolution == FINE)
        try:
            landscape = session.landscape(directions=directions, resolution=resolution, path=PATH,
                                          span=SPAN if directions == "pca" else None)
        except GdstepError:
            if directions != "pca":
                raise
            fallback = directions
            landscape = session.landscape(directions="random", resolution=resolution, path=PATH)
        return LandscapePicture(landscape, lane_paths(landscape, session), resolution == FINE, "", fallback)
    except Exception as e:                   # a user mistake or a failure: said in the plot, not retried
        return LandscapePicture(None, (), True, str(e) if isinstance(e, GdstepError) else f"{type(e).__name__}: {e}")


def make_line(session) -> LinePicture:
    try:
        return LinePicture(session.line())
    except Exception as e:
        return LinePicture(None, str(e) if isinstance(e, GdstepError) else f"{type(e).__name__}: {e}")


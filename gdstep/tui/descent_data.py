"""The numbers behind the descent plots: the landscape around the weights with the paths on
it (the session's and each open lane's), and the loss along the next update.

Computed on the worker as a background job after the user's jobs (driver.py), first coarse
then fine; this module does not import Textual.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gdstep.errors import Abandoned, GdstepError
from gdstep.landscape import Landscape, Line, copyable
from gdstep.tui.plot_data import lane_labels

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


def lower_plots(session, boundary: bool) -> list[str]:
    """The lower plots in the order `v` shows them: the landscape and the line, drawn on
    copies of the session, last where it has none (a Python scenario, an attached loop)."""
    pictures = ["landscape-plot", "line-plot"]
    return (["boundary-plot"] if boundary else []) + \
        (pictures + ["health-plot"] if copyable(session) else ["health-plot"] + pictures)


def _lanes_key(session) -> tuple:
    lanes = session.open_lanes
    if lanes is None:
        return ()
    return (id(lanes),) + tuple(lane.session.position for lane in lanes.lanes)


def landscape_key(session, directions: str) -> tuple:
    return (session.position, directions, _lanes_key(session))


def line_key(session) -> tuple:
    return (session.position,)


def lane_paths(landscape: Landscape, session) -> tuple[LanePath, ...]:
    """Each open lane's path on the landscape's plane (computed with it: Landscape.lane_paths)."""
    lanes = session.open_lanes
    if lanes is None:
        return ()
    return tuple(LanePath(lane.number, label, points.reshape(-1, 2))
                 for lane, label, points in zip(lanes.lanes, lane_labels(lanes), landscape.lane_paths))


def make_landscape(session, directions: str, resolution: tuple[int, int], stop=None) -> LandscapePicture:
    """The landscape now; PCA before the path has 3 points falls back to random directions.
    With lanes open and moved, PCA is over the lanes' paths (gdstep.landscape). `stop()`
    true between grid points gives it up (Abandoned, raised)."""
    fallback = ""
    try:
        try:
            landscape = session.landscape(directions=directions, resolution=resolution, path=PATH,
                                          span=SPAN if directions == "pca" else None, stop=stop)
        except GdstepError:
            if directions != "pca":
                raise
            fallback = directions
            landscape = session.landscape(directions="random", resolution=resolution, path=PATH, stop=stop)
        return LandscapePicture(landscape, lane_paths(landscape, session), resolution == FINE, "", fallback)
    except Abandoned:
        raise
    except Exception as e:                   # a user mistake or a failure: said in the plot, not retried
        return LandscapePicture(None, (), True, str(e) if isinstance(e, GdstepError) else f"{type(e).__name__}: {e}")


def make_line(session) -> LinePicture:
    try:
        return LinePicture(session.line())
    except Exception as e:
        return LinePicture(None, str(e) if isinstance(e, GdstepError) else f"{type(e).__name__}: {e}")


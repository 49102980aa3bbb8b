"""The numbers behind the plots: loss and gradient-norm curves (the session's and each open
lane's), the decision boundary of a 2-D classifier. The landscape's are in descent_data.

Everything here is computed on the thread that runs the session (a worker), never while
the UI thread waits. This module does not import Textual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from gdstep import arrays

MAX_POINTS = 150


# -- curves ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Curves:
    """Loss per iteration and per epoch, gradient norm per layer; x is the iteration (1-based)."""

    n: int
    x: tuple[float, ...]
    loss: tuple[float, ...]
    epoch_x: tuple[float, ...]
    epoch_loss: tuple[float, ...]
    grad_norms: tuple[tuple[str, tuple[float, ...], tuple[float, ...]], ...]   # (layer, x, ‖∇‖)
    lanes: tuple[LaneCurve, ...] = ()


@dataclass(frozen=True)
class LaneCurve:
    """An open lane's loss per iteration from the fork on (joined to the session's last
    loss before it: the part before the fork is the session's own curve)."""

    number: int
    label: str                          # "2: adam lr=0.01", less what all lanes share
    x: tuple[float, ...]
    loss: tuple[float, ...]
    steps: int = 0                      # the lane's iterations so far


ABBREVIATIONS = {"momentum": "mom", "nesterov=true": "nesterov", "weight_decay": "wd", "batch_size": "batch"}


def _abbreviated(word: str) -> str:
    key, eq, value = word.partition("=")
    if word.lower() in ABBREVIATIONS:
        return ABBREVIATIONS[word.lower()]
    return ABBREVIATIONS.get(key, key) + eq + value


def distinct_labels(texts: list[str]) -> list[str]:
    """Each lane's settings less the words every lane shares, abbreviated ("mom=0.9
    nesterov"): what tells the lanes apart in a legend. All the words where nothing is shared."""
    words = [text.split() for text in texts]
    common = set.intersection(*(set(w) for w in words)) if len(words) > 1 else set()
    out = []
    for ws in words:
        kept = [w for w in ws if w not in common] or ws
        out.append(" ".join(_abbreviated(w) for w in kept))
    return out


def lane_labels(lanes) -> list[str]:
    """"2: mom=0.9 nesterov" for each lane of an open Lanes."""
    return [f"{lane.number}: {short}" for lane, short in
            zip(lanes.lanes, distinct_labels([lane.spec.text for lane in lanes.lanes]))]


def lane_curves(session) -> tuple[LaneCurve, ...]:
    lanes = session.open_lanes
    if lanes is None:
        return ()
    out = []
    start = max(0, lanes.fork_position // 4 - 1)
    for lane, label in zip(lanes.lanes, lane_labels(lanes)):
        losses = lane.session.history.losses
        picked = [start + i for i in sample(max(0, len(losses) - start)) if math.isfinite(losses[start + i])]
        out.append(LaneCurve(lane.number, label, tuple(float(i + 1) for i in picked),
                             tuple(float(losses[i]) for i in picked), len(losses)))
    return tuple(out)


def sample(n: int, limit: int = MAX_POINTS) -> range | list[int]:
    if n <= limit:
        return range(n)
    stride = math.ceil(n / limit)
    picked = list(range(0, n, stride))
    if picked[-1] != n - 1:
        picked.append(n - 1)
    return picked


def curves(history, layers, cache: dict[str, Any], lanes: tuple[LaneCurve, ...] = ()) -> Curves:
    """`cache` keeps the epoch sums between calls, so a long run costs O(new iterations)."""
    losses = history.losses
    n = len(losses)
    picked = sample(n)
    x, y = [], []
    for i in picked:
        v = losses[i]
        if math.isfinite(v):
            x.append(float(i + 1))
            y.append(float(v))
    # the mean loss of each epoch, weighted by batch size, kept incrementally
    done = cache.get("n", 0)
    if done > n:
        cache.clear()
        done = 0
    epochs: list[int] = cache.setdefault("epochs", [])      # epoch numbers, in order
    totals: list[float] = cache.setdefault("totals", [])
    counts: list[float] = cache.setdefault("counts", [])
    ends: list[int] = cache.setdefault("ends", [])          # the iteration where each epoch's data ends
    for i in range(done, n):
        epoch, size = history.epochs[i], history.batch_sizes[i]
        if not epochs or epochs[-1] != epoch:
            epochs.append(epoch)
            totals.append(0.0)
            counts.append(0.0)
            ends.append(0)
        totals[-1] += losses[i] * size
        counts[-1] += size
        ends[-1] = i + 1
    cache["n"] = n
    ex, ey = [], []
    for k in sample(len(epochs)):
        mean = totals[k] / counts[k] if counts[k] else math.nan
        if math.isfinite(mean):
            ex.append(float(ends[k]))
            ey.append(mean)
    norms = []
    grad_norms = history.grad_norms
    m = len(grad_norms)
    gpicked = sample(m)
    for info in layers:
        if not info.params:
            continue
        gx, gy = [], []
        for i in gpicked:
            row = grad_norms[i]
            sq = sum(row.get(p, 0.0) ** 2 for p in info.params if p in row)
            if math.isfinite(sq) and any(p in row for p in info.params):
                gx.append(float(i + 1))
                gy.append(math.sqrt(sq))
        if gx:
            norms.append((f"{info.name} {info.kind}", tuple(gx), tuple(gy)))
    return Curves(n, tuple(x), tuple(y), tuple(ex), tuple(ey), tuple(norms), lanes)


# -- the decision boundary ------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Boundary:
    """The predicted class over a grid of the input plane, and the data on it."""

    grid_x: np.ndarray
    grid_y: np.ndarray
    grid_class: np.ndarray
    grid_sure: np.ndarray              # the prediction is confident (p ≥ 0.75 or its softmax share)
    x: np.ndarray                      # the data points (a sample of at most 600)
    y: np.ndarray
    label: np.ndarray
    classes: int
    step: int


class BoundaryMaker:
    """For 2-D classification data on a backend that can `predict`."""

    def __init__(self, session, max_points: int = 600):
        self.session = session
        backend = session.backend
        x, y = backend.batch(np.arange(backend.n_samples))
        x, y = arrays.to_numpy(x).astype(float), arrays.to_numpy(y)
        if len(x) > max_points:
            keep = np.random.default_rng(0).choice(len(x), max_points, replace=False)
            x, y = x[keep], y[keep]
        self.x = x
        self.label = (y.reshape(len(y), -1)[:, 0] > 0.5).astype(int) if y.dtype.kind == "f" else y.reshape(-1).astype(int)
        self.classes = int(max(2, self.label.max(initial=0) + 1))
        lo, hi = self.x.min(axis=0), self.x.max(axis=0)
        pad = (hi - lo) * 0.08 + 1e-9
        self.box = (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])
        self._last: tuple[tuple, Boundary] | None = None

    @staticmethod
    def supported(session) -> bool:
        backend = session.backend
        if not hasattr(backend, "predict") or not session.scenario.is_classifier:
            return False
        try:
            x, _ = backend.batch(np.arange(min(1, backend.n_samples)))
        except Exception:
            return False
        return len(arrays.shape(x)) == 2 and arrays.shape(x)[1] == 2

    def compute(self, cols: int = 64, rows: int = 32) -> Boundary:
        """The boundary now; the same object again while the parameters have not changed."""
        s = self.session
        key = (s.step_count, s.loss_value, cols, rows)
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        boundary = self._compute(cols, rows)
        self._last = (key, boundary)
        return boundary

    def _compute(self, cols: int, rows: int) -> Boundary:
        x0, x1, y0, y1 = self.box
        gx, gy = np.meshgrid(np.linspace(x0, x1, cols), np.linspace(y0, y1, rows))
        points = np.column_stack([gx.ravel(), gy.ravel()])
        out = arrays.to_numpy(self.session.backend.predict(points)).astype(float)
        out = out.reshape(len(points), -1)
        with np.errstate(all="ignore"):
            if out.shape[1] == 1:
                p = out[:, 0]
                cls = (p > 0.5).astype(int)
                sure = np.abs(p - 0.5) >= 0.25
            else:
                cls = out.argmax(axis=1)
                e = np.exp(out - out.max(axis=1, keepdims=True))
                share = e.max(axis=1) / e.sum(axis=1)
                sure = share >= 0.75
        cls = np.where(np.isfinite(out).all(axis=1), cls, -1)
        return Boundary(points[:, 0], points[:, 1], cls, sure, self.x[:, 0], self.x[:, 1], self.label, self.classes,
                        self.session.step_count)


# -- two trainable numbers -----------------------------------------------------------------------

def two_numbers(session) -> tuple[tuple[str, tuple[int, ...]], tuple[str, tuple[int, ...]]] | None:
    """The model's trainable numbers when there are exactly two, as (name, index) pairs."""
    shapes = session.backend.param_shapes
    found = []
    for name in shapes:
        if name not in session.backend.trainable:
            continue
        shape = tuple(shapes[name])
        for index in np.ndindex(*shape) if shape else [()]:
            found.append((name, tuple(int(i) for i in index)))
            if len(found) > 2:
                return None
    return (found[0], found[1]) if len(found) == 2 else None

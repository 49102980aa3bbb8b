"""The numbers behind the health plot: ‖ΔW‖/‖W‖ per layer at each update (from the
history's update norms, complete through fast runs), ‖∇W‖ per layer (the curves'), and
histograms of the selected parameter's weights and latest gradient.

Computed on the worker; no Textual here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gdstep import arrays
from gdstep.tui.plot_data import sample

RULE_OF_THUMB = 1e-3          # ‖ΔW‖/‖W‖ of a healthy update (Karpathy's rule of thumb)
BINS = 24


@dataclass(frozen=True, eq=False)
class Histogram:
    label: str                        # "W 0.weight (32×2)", "∇W (step 300)"
    edges: np.ndarray                 # (BINS + 1,)
    counts: np.ndarray                # (BINS,)
    size: int


@dataclass(frozen=True, eq=False)
class Health:
    ratios: tuple[tuple[str, tuple[float, ...], tuple[float, ...]], ...]   # (layer, update, ‖ΔW‖/‖W‖)
    updates: int
    measured: int                     # updates whose norms were measured (a run's: every update_norms.EVERY-th)
    name: str | None                  # the parameter the histograms are of
    weights: Histogram | None
    grads: Histogram | None
    note: str                         # why a histogram is missing


def ratios(history, layers) -> tuple[tuple[str, tuple[float, ...], tuple[float, ...]], ...]:
    """‖ΔW‖/‖W_old‖ of each layer with parameters, at (a sample of) every update; x is the
    iteration (1-based) whose update it is."""
    norms = history.update_norms
    if norms is None or not len(norms):
        return ()
    m = norms.matrix()
    k = len(norms.names)
    rows_measured = measured_rows(m)
    picked = rows_measured[np.asarray(list(sample(len(rows_measured))), dtype=np.int64)]
    rows = m[picked]
    out = []
    for info in layers:
        cols = [norms.names.index(p) for p in info.params if p in norms.names]
        if not cols:
            continue
        delta = rows[:, cols].sum(axis=1)
        weight = rows[:, [k + c for c in cols]].sum(axis=1)
        with np.errstate(all="ignore"):
            ratio = np.sqrt(delta / weight)
        keep = np.isfinite(ratio) & (ratio > 0)
        if keep.any():
            out.append((f"{info.name} {info.kind}", tuple(float(i + 1) for i in picked[keep]),
                        tuple(float(v) for v in ratio[keep])))
    return tuple(out)


def measured_rows(m: np.ndarray) -> np.ndarray:
    """The updates whose norms were measured (a run measures every update_norms.EVERY-th;
    the others are NaN throughout their row)."""
    return np.flatnonzero(~np.isnan(m).all(axis=1)) if m.size else np.zeros(0, dtype=np.int64)


def histogram(label: str, a) -> Histogram | None:
    """Counts in BINS equal bins from the smallest finite value to the largest, binned on
    values scaled to [−1, 1] (so that values near the float limits, or all alike, still
    bin); None when nothing is finite."""
    values = arrays.to_numpy(a).astype(np.float64, copy=False).ravel()
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    scale = float(np.abs(values).max()) or 1.0
    scaled = values / scale
    lo, hi = float(scaled.min()), float(scaled.max())
    if hi - lo <= 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(scaled, bins=BINS, range=(lo, hi))
    with np.errstate(over="ignore"):
        return Histogram(label, edges * scale, counts, int(values.size))


def selected_parameter(session, name: str | None, layer: str | None) -> str | None:
    """The selection's parameter, a selected layer's first, or the model's first trainable."""
    backend = session.backend
    if name in backend.param_shapes:
        return name
    if layer is not None:
        info = next((i for i in backend.layers if i.name == layer), None)
        if info is not None and info.params:
            return info.params[0]
    return next((n for n in backend.param_shapes if n in backend.trainable), None)


def health(session, name: str | None, layer: str | None = None) -> Health:
    """The health plot's numbers now; a failure is said in the plot, never raised into the frame."""
    try:
        return _health(session, name, layer)
    except Exception as e:                    # noqa: BLE001 — the frame must still be drawn
        return Health((), 0, 0, None, None, None, f"health: {type(e).__name__}: {e}")


def _health(session, name: str | None, layer: str | None) -> Health:
    s = session
    param = selected_parameter(s, name, layer)
    weights = grads = None
    note = ""
    if param is not None:
        weights = histogram(f"W {param}", s.backend.params()[param])
        bwd = s.record("backward")
        if bwd is not None and param in bwd.grads:
            grads = histogram(f"∇W (iteration {bwd.step + 1})", bwd.grads[param])
        else:
            note = "frozen: no gradient" if param not in s.backend.trainable else "no gradient yet"
    h = s.history
    norms = h.update_norms
    updates = len(norms) if norms is not None else 0
    measured = len(measured_rows(norms.matrix())) if updates else 0
    return Health(ratios(h, s.backend.layers), updates, measured, param, weights, grads, note)

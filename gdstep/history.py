"""The per-iteration history: the loss, its epoch and batch size, ‖∂L/∂W‖ of each
trainable parameter, and ‖ΔW‖², ‖W‖² of each at its update (update_norms), one row an
iteration.

It grows with every step of a long run, so it is kept compact (8 bytes a value, in
`array`s) and trimmed with the cursor when the session rewinds. `History` is the copy
that readers (plots, summaries, scripts) get.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Mapping

from gdstep import update_norms

FLUSH_EVERY = 256          # device-side update norms read back this many at a time

class HistoryArrays:
    """The live history of a Session: appended to by the loss and backward phases."""

    def __init__(self, norm_names: tuple[str, ...]):
        self.norm_names = norm_names
        self.losses = array("d")
        self.epochs = array("q")
        self.batch_sizes = array("q")
        self.grad_norms = array("d")          # len(norm_names) values a step, nan where none
        self.update_sq = array("d")           # 2·len(norm_names) a step: ‖ΔW‖² of each, then ‖W_old‖² of each
        self._pending: list[Any] = []         # update norms still on the device
        self._unmeasured = array("d", [math.nan] * (2 * len(norm_names)))

    def add_update_norms(self, values: Any) -> None:
        """One update's [‖ΔW‖²…, ‖W_old‖²…] (floats, or a device tensor read back later),
        or None for an update a run did not measure (NaN throughout its row)."""
        if values is None and not self._pending:
            self.update_sq.extend(self._unmeasured)
            return
        if isinstance(values, list):
            self._flush()                     # after any still on the device, in order
            self.update_sq.extend(values)
            return
        self._pending.append(values)
        if len(self._pending) >= FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, []
            self.update_sq.extend(update_norms.to_floats(pending, 2 * len(self.norm_names)))

    def extend_from(self, other: "HistoryArrays", steps: int) -> None:
        """Append the first `steps` iterations of another session's history (a fork's start)."""
        other._flush()
        k = len(self.norm_names)
        self.losses.extend(other.losses[:steps])
        self.epochs.extend(other.epochs[:steps])
        self.batch_sizes.extend(other.batch_sizes[:steps])
        self.grad_norms.extend(other.grad_norms[:steps * k])
        self.update_sq.extend(other.update_sq[:steps * 2 * k])

    def add_loss(self, value: float, epoch: int, batch_size: int) -> None:
        self.losses.append(value)
        self.epochs.append(epoch)
        self.batch_sizes.append(batch_size)

    def add_grad_norms(self, norms: Mapping[str, float]) -> None:
        self.grad_norms.extend([norms.get(n, math.nan) for n in self.norm_names])

    def add_grad_squares(self, squares: Sequence[float]) -> None:
        """‖∂L/∂W‖² of every parameter, in `norm_names`' order."""
        self.grad_norms.extend(map(math.sqrt, squares))

    def truncate(self, steps: int) -> None:
        """Keep the first `steps` iterations (a rewind to the start of iteration `steps`)."""
        del self.losses[steps:], self.epochs[steps:], self.batch_sizes[steps:]
        del self.grad_norms[steps * len(self.norm_names):]
        self._flush()
        del self.update_sq[steps * 2 * len(self.norm_names):]

    @property
    def last_loss(self) -> float | None:
        return self.losses[-1] if self.losses else None

    @property
    def prev_loss(self) -> float | None:
        return self.losses[-2] if len(self.losses) > 1 else None

    @property
    def nbytes(self) -> int:
        arrays = (self.losses, self.epochs, self.batch_sizes, self.grad_norms, self.update_sq)
        return sum(a.itemsize * len(a) for a in arrays)

    def copy(self) -> "History":
        """A copy for readers (cheap: compact arrays are copied whole)."""
        self._flush()
        return History(array("d", self.losses), array("q", self.epochs), array("q", self.batch_sizes),
                       GradNormRows(self.norm_names, array("d", self.grad_norms)),
                       UpdateNorms(self.norm_names, array("d", self.update_sq)))


class GradNormRows(Sequence):
    """‖∂L/∂W‖ per parameter for each iteration, stored flat; row i reads as a dict."""

    def __init__(self, names: tuple[str, ...], values: array):
        self.names, self.values = names, values

    def __len__(self) -> int:
        return len(self.values) // len(self.names) if self.names else 0

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        k = len(self.names)
        row = self.values[i * k:(i + 1) * k]
        return {name: v for name, v in zip(self.names, row) if not math.isnan(v)}


class UpdateNorms:
    """‖ΔW‖² and ‖W_old‖² of each parameter at each update, stored flat (see update_norms)."""

    def __init__(self, names: tuple[str, ...], values: array):
        self.names, self.values = names, values

    def __len__(self) -> int:
        return len(self.values) // (2 * len(self.names)) if self.names else 0

    def matrix(self):
        """A (updates, 2·parameters) numpy view: ‖ΔW‖² of each parameter, then ‖W_old‖² of each."""
        import numpy as np
        return np.frombuffer(self.values, dtype=np.float64).reshape(len(self), 2 * len(self.names))

    def series(self, names: Sequence[str]) -> tuple[list[float], list[float]]:
        """Σ‖ΔW‖² and Σ‖W_old‖² over these parameters (a layer's), one value an update."""
        k = len(self.names)
        cols = [self.names.index(n) for n in names if n in self.names]
        n = len(self)
        delta = [0.0] * n
        weight = [0.0] * n
        for j in cols:
            for i, v in enumerate(self.values[j::2 * k]):
                delta[i] += v
            for i, v in enumerate(self.values[k + j::2 * k]):
                weight[i] += v
        return delta, weight

    def ratio_series(self, names: Sequence[str]) -> list[float]:
        """‖ΔW‖/‖W_old‖ over these parameters at each update (as UpdateRecord.update_ratio);
        NaN at an update a run did not measure."""
        delta, weight = self.series(names)
        return [math.sqrt(d / w) if w > 0 else (math.inf if d > 0 else d if math.isnan(d) else 0.0)
                for d, w in zip(delta, weight)]


@dataclass(frozen=True)
class History:
    """Per-iteration values so far: the loss, its epoch and batch size, gradient norms."""

    losses: Sequence[float]
    epochs: Sequence[int]
    batch_sizes: Sequence[int]
    grad_norms: Sequence[Mapping[str, float]]
    update_norms: UpdateNorms | None = None       # ‖ΔW‖², ‖W‖² at each update

    def epoch_losses(self) -> list[tuple[int, float]]:
        """The mean loss of each epoch so far, weighted by batch size."""
        out: dict[int, list[float]] = {}
        for loss, epoch, size in zip(self.losses, self.epochs, self.batch_sizes):
            acc = out.setdefault(epoch, [0.0, 0.0])
            acc[0] += loss * size
            acc[1] += size
        return [(e, total / count) for e, (total, count) in out.items()]

    def grad_norm_series(self, name: str) -> list[float]:
        rows = self.grad_norms
        if isinstance(rows, GradNormRows) and name in rows.names:
            k, j = len(rows.names), rows.names.index(name)
            return list(rows.values[j::k])
        return [norms.get(name, math.nan) for norms in rows]

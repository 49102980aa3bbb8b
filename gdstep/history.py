"""The per-iteration history: the loss, its epoch and batch size, and ‖∂L/∂W‖ of each
trainable parameter, one row an iteration.

It grows with every step of a long run, so it is kept compact (8 bytes a value, in
`array`s) and trimmed with the cursor when the session rewinds. `History` is the copy
that readers (plots, summaries, scripts) get.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Mapping


class HistoryArrays:
    """The live history of a Session: appended to by the loss and backward phases."""

    def __init__(self, norm_names: tuple[str, ...]):
        self.norm_names = norm_names
        self.losses = array("d")
        self.epochs = array("q")
        self.batch_sizes = array("q")
        self.grad_norms = array("d")          # len(norm_names) values a step, nan where none

    def add_loss(self, value: float, epoch: int, batch_size: int) -> None:
        self.losses.append(value)
        self.epochs.append(epoch)
        self.batch_sizes.append(batch_size)

    def add_grad_norms(self, norms: Mapping[str, float]) -> None:
        self.grad_norms.extend([norms.get(n, math.nan) for n in self.norm_names])

    def truncate(self, steps: int) -> None:
        """Keep the first `steps` iterations (a rewind to the start of iteration `steps`)."""
        del self.losses[steps:], self.epochs[steps:], self.batch_sizes[steps:]
        del self.grad_norms[steps * len(self.norm_names):]

    @property
    def last_loss(self) -> float | None:
        return self.losses[-1] if self.losses else None

    @property
    def prev_loss(self) -> float | None:
        return self.losses[-2] if len(self.losses) > 1 else None

    @property
    def nbytes(self) -> int:
        return sum(a.itemsize * len(a) for a in (self.losses, self.epochs, self.batch_sizes, self.grad_norms))

    def copy(self) -> "History":
        """A copy for readers (cheap: compact arrays are copied whole)."""
        return History(array("d", self.losses), array("q", self.epochs), array("q", self.batch_sizes),
                       GradNormRows(self.norm_names, array("d", self.grad_norms)))


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


@dataclass(frozen=True)
class History:
    """Per-iteration values so far: the loss, its epoch and batch size, gradient norms."""

    losses: Sequence[float]
    epochs: Sequence[int]
    batch_sizes: Sequence[int]
    grad_norms: Sequence[Mapping[str, float]]

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

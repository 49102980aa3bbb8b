"""What the screen shows: an immutable Frame, and the Model that does not change.

A Frame is built by the driver on the thread that runs the session (frame_builder.py), so
the widgets never read a session that is changing under them: they draw Frames only. It
holds windows of the arrays (never a whole large tensor), the explanation lines of the
selected element and the data of the plots. This module does not import Textual.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from gdstep import arrays
from gdstep.records import Cursor, Event
from gdstep.tui.descent_data import LandscapePicture, LinePicture
from gdstep.tui.health_data import Health
from gdstep.tui.plot_data import Boundary, Curves

if TYPE_CHECKING:
    from gdstep.backends.base import LayerInfo


@dataclass(frozen=True)
class Selection:
    """The parameter shown in the tensor view and its selected element, as (row, col) of
    the parameter seen as a matrix: a bias is a column, higher dimensions are flattened.
    With `layer` (and no name) the tensor view shows that layer over the batch: a row per
    sample, a column per unit."""

    name: str | None = None
    row: int = 0
    col: int = 0
    layer: str | None = None           # a layer row of the tree: that layer's input, output and δ


def as_matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], 1
    return shape[0], int(np.prod(shape[1:], dtype=np.int64))


def element_index(shape: tuple[int, ...], row: int, col: int) -> tuple[int, ...]:
    """The parameter's own index of the matrix element (row, col)."""
    if len(shape) == 0:
        return ()
    if len(shape) == 1:
        return (row,)
    if len(shape) == 2:
        return (row, col)
    return (row, *(int(i) for i in np.unravel_index(col, shape[1:])))


def clamp_selection(selection: Selection, shapes: dict[str, tuple[int, ...]]) -> Selection:
    if selection.name not in shapes:
        return selection
    rows, cols = as_matrix_shape(tuple(shapes[selection.name]))
    row, col = min(max(selection.row, 0), rows - 1), min(max(selection.col, 0), cols - 1)
    if (row, col) == (selection.row, selection.col):
        return selection
    return Selection(selection.name, row, col)


@dataclass(frozen=True, eq=False)
class Grid:
    """One of W, ∇W, W_new: a window of values, or why there is none yet."""

    label: str
    values: np.ndarray | None
    note: str = ""
    stats: arrays.Stats | None = None


@dataclass(frozen=True, eq=False)
class TensorPanel:
    name: str
    shape: tuple[int, ...]
    row: int
    col: int
    index: tuple[int, ...]
    origin: tuple[int, int]            # (row, col) of the window's top-left element
    grids: tuple[Grid, Grid, Grid]
    caption: str
    whole: bool                        # the window shows every element
    extent: tuple[int, int] | None = None     # rows × columns of the widest grid, where wider than `shape`
                                              # (a layer's input): what the view is fitted to

    @property
    def fitted(self) -> tuple[int, ...]:
        """The shape the view's window is measured for."""
        return self.extent if self.extent is not None else self.shape


@dataclass(frozen=True)
class Arithmetic:
    """The update arithmetic (or, after backward, the chain rule) of the selected element."""

    mode: str                          # update | chain | previous | none | error
    title: str
    lines: tuple[str, ...]
    state: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class BatchRow:
    label: str                         # "x[0]", "z0[3]", "loss"
    values: np.ndarray                 # one value per shown sample
    group: str                         # "input", "affine" (z of a linear layer), "activation", "target", "loss"


@dataclass(frozen=True, eq=False)
class BatchPanel:
    """The batch of the iteration in progress: each sample is a column, read top to bottom
    through the network."""

    phase: str
    title: str
    samples: np.ndarray                # dataset rows of the shown samples
    size: int                          # samples in the batch
    rows: tuple[BatchRow, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Frame:
    scenario: str
    loop: bool                        # attach mode: each loop iteration is one batch, no epochs
    cursor: Cursor
    phase_due: str
    last_phase: str | None
    step: int
    position: int                      # phases run since the start
    iterations_per_epoch: int
    epochs: int
    loss: float | None
    loss_change: float | None
    lr: float
    optimizer: str
    backend: str
    device: str
    dtype: str
    breakpoints: tuple[str, ...]
    tensor: TensorPanel | None
    arithmetic: Arithmetic
    batch: BatchPanel | None
    curves: Curves | None              # None: the plots are not redrawn this time
    events: tuple[Event, ...]          # events new since the previous frame
    boundary: Boundary | None = None
    landscape: LandscapePicture | None = None     # the last one computed (the driver keeps it fresh)
    line: LinePicture | None = None
    grad_norms: dict[str, float] = field(default_factory=dict)
    health: Health | None = None                  # None: the health plot is not redrawn this time
    lrs: tuple[float, ...] = ()        # each param group's lr in force for the shown iteration
    scheduler: str | None = None       # the lr scheduler's name (attach mode, Python scenarios)
    inexact: str | None = None         # why a recomputed iteration differs (session.replay_inexact)


@dataclass(frozen=True)
class Layout:
    """How much of each view fits on screen: measured on the UI thread, replaced whole, read
    by the FrameBuilder on the worker. The plot grids have a point per cell or finer."""

    tensor_rows: int = 6
    tensor_cols: int = 2
    batch_samples: int = 6
    batch_units: int = 4
    boundary_grid: tuple[int, int] = (64, 32)      # (cols, rows)


@dataclass(frozen=True)
class Model:
    """What the app shows that never changes while it runs: the scenario, the layers and
    their parameters, which plots apply. Read once from the Session, before any worker."""

    scenario: str
    file: str
    layers: tuple[LayerInfo, ...]
    shapes: dict[str, tuple[int, ...]]
    trainable: frozenset[str]
    boundary: bool = False             # a decision boundary (2-D classification data)
    surface: bool = False              # two trainable numbers: the landscape is the true surface
    description: str = ""              # the scenario's, shown when the app opens
    outputs: tuple[tuple[str, tuple[int, ...]], ...] = ()    # a model's named outputs and shapes (several)

    @property
    def first_parameter(self) -> str | None:
        return next((name for info in self.layers for name in info.params), None)

    def clamp(self, selection: Selection) -> Selection:
        return clamp_selection(selection, self.shapes)

    def element(self, selection: Selection) -> tuple[str, tuple[int, ...]] | None:
        """The parameter and index of the selected element, if a parameter is selected."""
        if selection.name not in self.shapes:
            return None
        return selection.name, element_index(self.shapes[selection.name], selection.row, selection.col)

"""Between the widgets and the driver: `draw` hands each widget its part of a Frame;
`measure` reads how much each view has room for, as the Layout the driver builds the next
frames to. Both take the app (whose queries search the main screen, under any other)."""

from __future__ import annotations

from textual.dom import DOMNode
from textual.widgets import ContentSwitcher

from gdstep.tui.arithmetic_view import ArithmeticView
from gdstep.tui.batch_view import BatchView, batch_capacity
from gdstep.tui.event_log import EventLog
from gdstep.tui.frame import Frame, Layout
from gdstep.tui.phase_bar import PhaseBar
from gdstep.tui.landscape_plot import LandscapePlot
from gdstep.tui.health_plot import HealthPlot
from gdstep.tui.plots import BoundaryPlot, LinePlot, LossPlot
from gdstep.tui.tensor_view import TensorView


def draw(app: DOMNode, frame: Frame, running: bool) -> None:
    """Hand a Frame to the widgets; a plot is given new data only when it changed."""
    bar = app.query_one(PhaseBar)
    bar.frame = frame
    bar.running = running
    app.query_one(TensorView).panel = frame.tensor
    arithmetic = app.query_one(ArithmeticView)
    arithmetic.arithmetic = frame.arithmetic
    app.query_one("#arithmetic-box").border_title = frame.arithmetic.title
    if arithmetic.gradcheck is not None and arithmetic.gradcheck.position != frame.position:
        arithmetic.gradcheck = None                  # stale: the session has moved since
    app.query_one(BatchView).panel = frame.batch
    if frame.batch is not None:
        app.query_one("#batch-box").border_title = frame.batch.title
    app.query_one("#details", ContentSwitcher).current = "batch-box" if frame.batch is not None \
        else "arithmetic-box"
    curves = frame.curves
    if curves is not None:
        for plot in app.query(LossPlot).results():
            if plot.curves is None or plot.curves.n != curves.n or plot.curves != curves:
                plot.curves = curves
        for plot in app.query(HealthPlot).results():
            if plot.curves is None or plot.curves.grad_norms != curves.grad_norms:
                plot.curves = curves
    if frame.health is not None:
        for plot in app.query(HealthPlot).results():
            plot.health = frame.health
    if frame.boundary is not None:
        for plot in app.query(BoundaryPlot).results():
            plot.boundary = frame.boundary           # the same object again is no change
    if frame.landscape is not None:
        for plot in app.query(LandscapePlot).results():
            plot.picture = frame.landscape           # the same object again is no change
    if frame.line is not None:
        for plot in app.query(LinePlot).results():
            plot.picture = frame.line
    log = app.query_one(EventLog)
    for event in frame.events:
        log.add_event(event)


def measure(app: DOMNode, shape: tuple[int, ...] | None, layout: Layout) -> Layout:
    """How much the views show: the window of a tensor of `shape` (the selected parameter),
    the samples of the batch, the grid of the boundary (a point per cell or finer). What cannot be measured keeps its value in `layout`."""
    tensor_rows, tensor_cols = layout.tensor_rows, layout.tensor_cols
    if shape is not None:
        fit = app.query_one(TensorView).capacity(shape)
        tensor_rows, tensor_cols = fit.rows, fit.cols
    boundary = layout.boundary_grid
    for plot in app.query(BoundaryPlot).results():
        width, height = plot.content_size
        boundary = (max(48, 3 * width), max(24, 3 * height))
    samples = batch_capacity(max(app.query_one("#details").size.width - 5, 20))
    return Layout(tensor_rows, tensor_cols, samples, 4, boundary)

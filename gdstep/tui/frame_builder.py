"""Builds Frames from the Session: everything the screen shows, read in one go.

Only the driver calls a FrameBuilder, on the thread that owns the session at that moment
(the worker while jobs run; the UI thread once, before any worker starts). The builder
keeps caches and what it has already reported, never training state. This module does not
import Textual.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gdstep import arrays
from gdstep.errors import GdstepError
from gdstep.fmt import hp, index_text, num, show
from gdstep.nn.layers import is_affine
from gdstep.tui.frame import (Arithmetic, Frame, Grid, Layout, Model, Selection, TensorPanel,
                              as_matrix_shape, clamp_selection, element_index)
from gdstep.tui.attach_data import (group_lines, hyperparameters, lrs_in_force, output_shapes, scheduler_name,
                                    several_groups)
from gdstep.tui.batch_panel import batch_panel, low_precision
from gdstep.tui.descent_data import COARSE, FINE, landscape_key, line_key, make_landscape, make_line
from gdstep.tui.health_data import health
from gdstep.tui.plot_data import BoundaryMaker, curves, lane_curves, two_numbers


class StatsCache:
    """Statistics of the last few arrays seen, so moving the cursor over a million-element
    tensor does not recompute them. A record's arrays never change; a live parameter may
    change in place (torch), so it comes with a `version` that changes when it may have."""

    def __init__(self, size: int = 8):
        self.size = size
        self._entries: list[tuple[Any, Any, arrays.Stats]] = []

    def __call__(self, a: Any, version: Any = None) -> arrays.Stats:
        for held, held_version, value in self._entries:
            if held is a and held_version == version:
                return value
        value = arrays.stats(a)
        self._entries.append((a, version, value))
        del self._entries[:-self.size]
        return value


class FrameBuilder:
    """Builds the Frames of one session, with the plot makers that apply to it."""

    def __init__(self, session):
        self.session = session
        self.stats = StatsCache()
        self._events_seen = 0
        self._curves_cache: dict[str, Any] = {}
        self.boundary = BoundaryMaker(session) if BoundaryMaker.supported(session) else None
        self._landscape: tuple[tuple, Any] | None = None      # (key, LandscapePicture)
        self._line: tuple[tuple, Any] | None = None
        backend = session.backend
        self.model = Model(session.scenario.name, str(session.scenario.file), tuple(backend.layers),
                           {name: tuple(shape) for name, shape in backend.param_shapes.items()},
                           frozenset(backend.trainable), self.boundary is not None, two_numbers(session) is not None,
                           session.scenario.description or "", output_shapes(backend))

    def invalidate(self) -> None:
        """After a rewind or a change of settings: the history may have been rewritten."""
        self._curves_cache.clear()
        self._line = None                  # a new lr or optimizer changes the next update

    # -- the descent pictures: computed by the driver's background job, held here -------------

    def picture_due(self, wanted: frozenset[str], directions: str) -> str | None:
        """Which wanted picture ("landscape", "line") is out of date or still coarse."""
        s = self.session
        held = self._landscape
        if "landscape" in wanted and (held is None or held[0] != landscape_key(s, directions) or not held[1].fine):
            return "landscape"
        if "line" in wanted and (self._line is None or self._line[0] != line_key(s)):
            return "line"
        return None

    def make_picture(self, kind: str, directions: str, stop=None) -> None:
        """Compute one picture: a landscape first coarse (a new key), then fine. `stop()`
        true between the landscape's grid points gives it up (Abandoned): it stays due."""
        s = self.session
        if kind == "line":
            self._line = (line_key(s), make_line(s))
            return
        key = landscape_key(s, directions)
        held = self._landscape
        resolution = FINE if held is not None and held[0] == key else COARSE
        self._landscape = (key, make_landscape(s, directions, resolution, stop))

    def build(self, selection: Selection, layout: Layout = Layout(), *, plots: bool = True) -> Frame:
        """The Frame of the session now; `plots` adds the curves, the boundary and the last pictures
        (else the plots keep what they show)."""
        s = self.session
        boundary = None
        if plots and self.boundary is not None:
            boundary = self.boundary.compute(*layout.boundary_grid)
        loss, prev = s.loss_value, s.prev_loss
        change = loss - prev if loss is not None and prev is not None else None
        events = tuple(s.events[self._events_seen:])
        self._events_seen += len(events)
        opt = s.optimizer
        bwd = s.record("backward")
        return Frame(
            scenario=s.scenario.name,
            loop=s.attached,
            cursor=s.cursor,
            phase_due=s.phase_due,
            last_phase=s.last_phase,
            step=s.step_count,
            position=s.position,
            iterations_per_epoch=s.iterations_per_epoch,
            epochs=s.epochs,
            loss=loss,
            loss_change=change,
            lr=s.lr,
            optimizer=getattr(opt, "kind", type(opt).__name__),
            backend=s.backend.name,
            device=str(s.backend.device),
            dtype=str(s.backend.dtype),
            breakpoints=tuple(f"{bp.id}: {bp.text}" for bp in s.breakpoints if bp.enabled),     # those that fire
            tensor=self._tensor(selection, layout),
            arithmetic=self._arithmetic(selection),
            batch=batch_panel(s, layout),
            curves=curves(s.history, s.backend.layers, self._curves_cache, lane_curves(s)) if plots else None,
            events=events,
            boundary=boundary,
            landscape=self._landscape[1] if plots and self._landscape is not None else None,
            line=self._line[1] if plots and self._line is not None else None,
            grad_norms=dict(bwd.grad_norms) if bwd is not None else {},
            health=health(s, selection.name, selection.layer) if plots else None,
            lrs=lrs_in_force(s),
            scheduler=scheduler_name(s),
            inexact=s.replay_inexact,
        )

    # -- the tensor view ------------------------------------------------------------------------

    def _layer_tensor(self, selection: Selection, layout: Layout) -> TensorPanel | None:
        """A layer row: its input, its output and δ = ∂L/∂output over the batch of the last
        forward, a row per sample, a column per unit."""
        s = self.session
        layers = s.backend.layers
        k = next((i for i, info in enumerate(layers) if info.name == selection.layer), None)
        if k is None:
            return None
        info = layers[k]
        fwd, bwd = s.record("forward"), s.record("backward")
        symbol = "z" if is_affine(info.kind) else "a"
        out_label, in_label = f"{symbol}{info.name}", ("x" if k == 0 else f"out {layers[k - 1].name}")
        if fwd is None or k >= len(fwd.outputs) or fwd.outputs[k] is None:
            # (attach mode: a layer that did not run in this iteration, or whose output the loop's
            # forward let go as it ran, the iteration then not recomputable: the event log says so)
            note = "after forward" if fwd is None or k >= len(fwd.outputs) else "not recorded"
            grids = (Grid(in_label, None, note), Grid(out_label, None, note),
                     Grid(f"δ{info.name}", None, "after backward" if note == "after forward" else note))
            caption = f"{info.text} · " + ("after forward" if note == "after forward" else
                                           f"iteration {fwd.step + 1}: no output recorded (the layer did not run, or "
                                           "watch mode let its output go: the event log then says so)")
            return TensorPanel(f"layer {info.name}", (1, 1), 0, 0, (0, 0), (0, 0), grids, caption, True)
        output = fwd.outputs[k]
        layer_input = fwd.inputs if k == 0 else fwd.outputs[k - 1]

        def matrix(a: Any) -> Any:
            shp = arrays.shape(a)
            return a if len(shp) == 2 else a.reshape(shp[0], -1) if len(shp) > 2 else a.reshape(-1, 1)

        out_m = matrix(output)
        shape = tuple(arrays.shape(out_m))
        in_shape = tuple(arrays.shape(matrix(layer_input))) if layer_input is not None else shape
        extent = (max(shape[0], in_shape[0]), max(shape[1], in_shape[1]))      # the input may be wider
        row = min(max(selection.row, 0), shape[0] - 1)
        col = min(max(selection.col, 0), shape[1] - 1)
        rows, cols = max(1, layout.tensor_rows), max(1, layout.tensor_cols)
        whole = extent[0] <= rows and extent[1] <= cols
        origin = (0, 0)

        def grid(label: str, a: Any) -> Grid:
            nonlocal origin
            if a is None:            # a δ the loop's backward made unwatched (attach mode), an input let go
                return Grid(label, None, "not recorded")
            a = matrix(a)
            values, r0, c0 = arrays.window(a, min(row, arrays.shape(a)[0] - 1), min(col, arrays.shape(a)[1] - 1),
                                           rows, cols)
            if label == out_label:
                origin = (r0, c0)
            return Grid(label, np.array(values, dtype=float), "", None if whole else self.stats(a))

        same_step = bwd is not None and bwd.step == fwd.step and s.last_phase in ("backward", "update")
        delta = grid(f"δ{info.name}", bwd.deltas[k]) if same_step and k < len(bwd.deltas) else \
            Grid(f"δ{info.name}", None, "after backward")
        grids = (grid(in_label, layer_input), grid(out_label, output), delta)
        caption = f"iteration {fwd.step + 1 if s.attached else fwd.iteration} · row: sample, col: unit" + \
            low_precision(layer_input, output)
        return TensorPanel(f"layer {info.name}", shape, row, col, (row, col), origin, grids, caption, whole,
                           extent if extent != shape else None)

    def _tensor(self, selection: Selection, layout: Layout) -> TensorPanel | None:
        s = self.session
        if selection.layer is not None and selection.name is None:
            return self._layer_tensor(selection, layout)
        shapes = s.backend.param_shapes
        name = selection.name
        if name not in shapes:
            return None
        shape = tuple(shapes[name])
        selection = clamp_selection(selection, shapes)
        row, col = selection.row, selection.col
        index = element_index(shape, row, col)
        rows_total, cols_total = as_matrix_shape(shape)
        rows, cols = max(1, layout.tensor_rows), max(1, layout.tensor_cols)
        whole = rows_total <= rows and cols_total <= cols
        frozen = name not in s.backend.trainable

        upd, bwd = s.record("update"), s.record("backward")
        origin = (0, 0)

        def grid(label: str, a: Any, note: str = "", version: Any = None) -> Grid:
            nonlocal origin
            if a is None:
                return Grid(label, None, note)
            values, r0, c0 = arrays.window(_as_matrix(a, shape), row, col, rows, cols)
            origin = (r0, c0)
            return Grid(label, np.array(values, dtype=float), note, None if whole else self.stats(a, version))

        if s.last_phase == "update" and upd is not None and name in upd.params:
            u = upd.params[name]
            grids = (grid("W_old", u.old), grid("∇W", u.grad), grid("W_new", u.new))
            lr = s.backend.config_for(name, upd.step).lr if several_groups(s) else upd.lr
            caption = f"update {upd.step + 1} · {getattr(upd.optimizer, 'kind', '')} · lr {hp(lr)}" + \
                low_precision(u.old, u.grad)
        else:
            w = s.backend.params()[name]
            this_iteration = bwd is not None and s.last_phase == "backward" and bwd.step == s.step_count
            if frozen:
                g = grid("∇W", None, "frozen: no gradient")
                new = grid("W_new", None, "frozen: never updated")
            else:
                g = grid("∇W", bwd.grads[name]) if this_iteration and name in bwd.grads else \
                    grid("∇W", None, "after backward")
                new = grid("W_new", None, "after update")
            grids = (grid("W", w, version=(s.position, len(s.events))), g, new)
            caption = "frozen" if frozen else {None: "start", "forward": "after forward", "loss": "after loss",
                                               "backward": "after backward · before update",
                                               "update": "after update"}[s.last_phase]
            caption += low_precision(w)
        return TensorPanel(name, shape, row, col, index, origin, grids, caption, whole)

    # -- the arithmetic panel -------------------------------------------------------------------

    def _arithmetic(self, selection: Selection) -> Arithmetic:
        s = self.session
        shapes = s.backend.param_shapes
        name = selection.name
        if name not in shapes and selection.layer is not None:
            info = next((i for i in s.backend.layers if i.name == selection.layer), None)
            if info is not None:
                params = ", ".join(info.params) or "none"
                return Arithmetic("none", f"layer {info.name}: {info.text}", (
                    "Above: this layer over the batch, a row per sample, a column per unit:",
                    "its input, its output, and δ = ∂L/∂output (after backward).",
                    f"Parameters: {params}" + (" (↓ selects one)" if info.params else ""),
                ))
        if name not in shapes:
            return Arithmetic("none", "update arithmetic", ("Select a parameter in the model tree.",))
        shape = tuple(shapes[name])
        selection = clamp_selection(selection, shapes)
        index = element_index(shape, selection.row, selection.col)
        label = f"{name}{index_text(index)}"
        if name not in s.backend.trainable:
            return Arithmetic("none", label, (f"{name} is frozen: it is never updated.",))
        try:
            if s.last_phase == "update":
                ex = s.explain(name, index)
                title = f"{label} · {ex.optimizer} · update {ex.step + 1}"
                state = _state_lines(ex.state_before, ex.state_after, self._optimizer_line(name, ex.step))
                return Arithmetic("update", title, ex.lines, state + self._groups(name, ex.step))
            if s.last_phase == "backward":
                try:
                    chain = s.chain_rule(name, index)
                    lines = chain.lines
                except GdstepError as e:
                    g = arrays.element(s.record("backward").grads[name], index)
                    lines = (f"∂L/∂W{index_text(index)} = {num(g)}", f"({e})")
                title = f"{label} · chain rule · before update {s.step_count + 1}"
                state = self._state_now(name, index)
                if several_groups(s) or scheduler_name(s):      # the lr in force for the update to come
                    state = (self._optimizer_line(name, None),) + state
                return Arithmetic("chain", title, tuple(lines), state + self._groups(name, None))
        except GdstepError as e:
            return Arithmetic("error", label, (str(e),))
        lines = (self._optimizer_line(name, None),
                 "",
                 "n: the next phase · s: an iteration · r: run/pause",
                 "after backward: the chain rule of this element",
                 "after update: W_new = W_old − η·∇L, with the numbers")
        return Arithmetic("none", label, lines, self._state_now(name, index) + self._groups(name, None))

    def _optimizer_line(self, name: str, step: int | None) -> str:
        """The optimizer and the hyperparameters that apply to `name` in the update of `step`
        (None: the next update): its own param group's, and the scheduler that sets the lr."""
        s = self.session
        if step is not None:
            opt = s.record("update").optimizer
        else:
            opt = s.optimizer
        group = ""
        if several_groups(s):
            opt = s.backend.config_for(name, step)
            group = f", group {s.backend.group_of(name)}"
        sched = scheduler_name(s)
        return (f"{getattr(opt, 'kind', type(opt).__name__)}{group}: {hyperparameters(opt)}"
                + (f" · lr set by {sched}" if sched else ""))

    def _groups(self, name: str, step: int | None) -> tuple[str, ...]:
        """With several param groups: a line per group (▸ the one of `name`)."""
        if not several_groups(self.session):
            return ()
        return ("",) + group_lines(self.session, name, step)

    def _state_now(self, name: str, index: tuple[int, ...]) -> tuple[str, ...]:
        state = self.session.backend.optimizer_state().get(name, {})
        values = {k: _element_or_value(v, index) for k, v in state.items()}
        if not values:
            return ("optimizer state: none yet" if not self.session.step_count else "optimizer state: none",)
        return ("optimizer state (before this update):",) + tuple(f"  {k} = {show(v)}" for k, v in values.items())

def _as_matrix(a: Any, shape: tuple[int, ...]) -> Any:
    if len(shape) <= 2:
        return a
    return a.reshape(shape[0], -1)


def _element_or_value(v: Any, index: tuple[int, ...]) -> Any:
    if v is None or isinstance(v, (int, float)):
        return v
    if arrays.shape(v) == ():
        return float(arrays.to_numpy(v))
    return arrays.element(v, index)


def _state_lines(before: dict[str, Any], after: dict[str, Any], header: str) -> tuple[str, ...]:
    lines = [header]
    keys = list(dict.fromkeys([*before, *after]))
    if not keys:
        lines.append("optimizer state: none (this optimizer keeps no state)")
        return tuple(lines)
    lines.append("optimizer state (before → after):")
    for key in keys:
        lines.append(f"  {key}: {show(before.get(key))} → {show(after.get(key))}")
    return tuple(lines)

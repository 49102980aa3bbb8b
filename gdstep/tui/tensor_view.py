"""W, ∇W and W_new of the selected parameter, side by side, on a diverging colour scale.

Only a window of the tensor is ever drawn (the Frame holds just that window); when the
window does not show every element, summary statistics of the whole tensor follow. The
three grids sit side by side when that shows more elements, else one above the other.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual import events
from textual.color import Color
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from gdstep.tui import cells
from gdstep.tui.frame import TensorPanel, as_matrix_shape

CELL = cells.WIDTH + 1
GAP = 2
STATS_LINES = 4


@dataclass(frozen=True)
class Fit:
    stacked: bool
    rows: int
    cols: int


def fit(shape: tuple[int, ...], width: int, height: int) -> Fit:
    """The window that shows the most elements in width × height, and its arrangement.

    A tensor that fits whole is shown whole; a larger one leaves room for its statistics
    (a header and a line per grid) when the height allows."""
    total_rows, total_cols = as_matrix_shape(shape)
    label = len(str(max(total_rows - 1, 0))) + 1
    side_cols = max(1, (width - label - 2 * GAP) // (3 * CELL))
    stack_cols = max(1, (width - label) // CELL)

    def best(stats: int) -> Fit:
        side = Fit(False, max(1, height - 2 - stats), side_cols)
        stacked_rows = (height - stats - 3) // 3              # a title line per grid
        stacked = Fit(True, max(1, stacked_rows), stack_cols)

        def shown(f: Fit) -> int:
            return min(f.rows, total_rows) * min(f.cols, total_cols)

        # stacked only where its three grids fit (a row each at least), when it shows more,
        # and more than one row of a matrix of many
        useful = stacked_rows >= max(1, min(total_rows, 2))
        return stacked if useful and shown(stacked) > shown(side) else side

    whole = best(0)
    if whole.rows >= total_rows and whole.cols >= total_cols:
        return whole
    return best(STATS_LINES) if height - STATS_LINES >= 5 else whole


class TensorView(Widget):
    """Renders a TensorPanel; a click on a cell selects that element."""

    COMPONENT_CLASSES = {
        "tensor-view--positive",
        "tensor-view--negative",
        "tensor-view--cursor",
        "tensor-view--label",
        "tensor-view--missing",
        "tensor-view--nonfinite",
    }

    panel: reactive[TensorPanel | None] = reactive(None, layout=False)

    class CellClicked(Message):
        """The user clicked the element (row, col) of the parameter seen as a matrix."""

        def __init__(self, row: int, col: int) -> None:
            self.row, self.col = row, col
            super().__init__()

    class Resized(Message):
        """The view's size changed: the window it can show changed too."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._hits: list[tuple[int, int, int, int, int]] = []   # (y, x0, x1, row, col)

    def wanted_height(self, shape: tuple[int, ...], most: int) -> int:
        """The height (borders included) that shows a tensor of `shape` whole, or `most`:
        the view takes what the tensor needs and leaves the rest to the panel below."""
        width = max(self.content_size.width, 1)
        total_rows, total_cols = as_matrix_shape(shape)
        frame = self.outer_size.height - self.content_size.height if self.outer_size.height else 2

        def shown(height: int) -> int:
            f = fit(shape, width, height)
            return min(f.rows, total_rows) * min(f.cols, total_cols)

        top = max(3, most - frame)
        best = shown(top)
        for height in range(3, top + 1):
            if shown(height) >= best:          # the least height that shows as much as the most
                f = fit(shape, width, height)
                whole = f.rows >= total_rows and f.cols >= total_cols
                return height + frame + (0 if whole else min(STATS_LINES, top - height))
        return most

    def capacity(self, shape: tuple[int, ...]) -> Fit:
        size = self.content_size
        return fit(shape, max(size.width, 1), max(size.height, 1))

    def on_resize(self, event: events.Resize) -> None:
        self.post_message(self.Resized())

    def watch_panel(self, panel: TensorPanel | None) -> None:
        if panel is None:
            self.border_title = "tensor"
            self.border_subtitle = ""
        else:
            shape = "×".join(map(str, panel.shape)) or "scalar"
            index = ",".join(map(str, panel.index))
            title = f"{panel.name} ({shape}) · [{index}]"
            if not panel.whole:
                total = as_matrix_shape(panel.shape)
                first = next((g.values for g in panel.grids if g.values is not None
                              and g.values.shape[0] <= total[0] and g.values.shape[1] <= total[1]), None)
                if first is not None:
                    rows, cols = first.shape
                    r0, c0 = panel.origin
                    title += f" · rows {r0}–{r0 + rows - 1}" + (f", cols {c0}–{c0 + cols - 1}" if cols < as_matrix_shape(panel.shape)[1] or c0 else "")
                if panel.extent is not None:         # a layer's input wider than the window
                    widest = max((g.values.shape[1] for g in panel.grids if g.values is not None), default=0)
                    if widest < panel.extent[1]:
                        title += f" · input: {widest} of {panel.extent[1]} units"
            self.border_title = title
            self.border_subtitle = f"{self._legend()} · {panel.caption}"
        self.refresh()

    def _legend(self) -> str:
        """The colour scale, as the cells use it: the strongest red and blue, and no colour at 0."""
        base = self.background_colors[1]
        pos = base.blend(self.get_component_styles("tensor-view--positive").background, 0.7)
        neg = base.blend(self.get_component_styles("tensor-view--negative").background, 0.7)
        return f"[on {neg.hex}] −max [/] 0 [on {pos.hex}] +max [/]"

    # -- drawing -------------------------------------------------------------------------------

    def _colour(self, value: float, scale: float, positive: Color, negative: Color, base: Color) -> Style:
        if not math.isfinite(value):
            return self.get_component_rich_style("tensor-view--nonfinite")
        if scale <= 0 or value == 0:
            return Style()
        t = min(1.0, abs(value) / scale)
        colour = base.blend(positive if value > 0 else negative, 0.15 + 0.55 * t)
        return Style(bgcolor=colour.rich_color)

    def render(self) -> Text:
        self._hits = []
        panel = self.panel
        if panel is None:
            return Text("Select a parameter in the model tree (↑ ↓).", style=self.get_component_rich_style("tensor-view--missing"))
        size = self.content_size
        arrangement = fit(panel.fitted, max(size.width, 1), max(size.height, 1))
        base = self.background_colors[1]
        positive = self.get_component_styles("tensor-view--positive").background
        negative = self.get_component_styles("tensor-view--negative").background
        label_style = self.get_component_rich_style("tensor-view--label")
        missing_style = self.get_component_rich_style("tensor-view--missing")
        cursor_style = self.get_component_rich_style("tensor-view--cursor")
        total_rows, total_cols = as_matrix_shape(panel.shape)
        shown = [g.values for g in panel.grids if g.values is not None]
        rows = max((v.shape[0] for v in shown), default=1)      # a layer's input may be wider
        cols = max((v.shape[1] for v in shown), default=1)      # than its output: pad the narrower
        r0, c0 = panel.origin
        label_w = len(str(max(total_rows - 1, 0))) + 1
        grid_w = cols * CELL
        out = Text(no_wrap=True, overflow="crop")

        def grid_line(grid, i: int, x: int, y: int) -> None:
            """Row i of one grid, starting at column x of line y."""
            if grid.values is None:
                words = _note_lines(grid.note, grid_w)
                text = words[i] if i < len(words) else ""
                out.append(text.center(grid_w)[:grid_w], style=missing_style)
                return
            sc = cells.scale(grid.values, grid.stats)
            if i >= grid.values.shape[0]:
                out.append(" " * grid_w)
                return
            for j in range(grid.values.shape[1]):
                v = float(grid.values[i, j])
                style = self._colour(v, sc, positive, negative, base)
                if (r0 + i, c0 + j) == (panel.row, panel.col):
                    style = style + cursor_style
                out.append(cells.cell(v).rjust(cells.WIDTH), style=style)
                out.append(" ")
                self._hits.append((y, x + j * CELL, x + (j + 1) * CELL, r0 + i, c0 + j))
            out.append(" " * (CELL * (cols - grid.values.shape[1])))

        def header(labels_x: list[tuple[int, str]]) -> None:
            line = Text(no_wrap=True)
            for x, label in labels_x:
                line.pad_right(max(0, x - len(line)))
                line.append(label, style=label_style)
            out.append_text(line)
            out.append("\n")

        def col_header(xs: list[int]) -> None:
            line = Text(no_wrap=True)
            for x, grid in zip(xs, panel.grids):
                shown_cols = cols if grid.values is None else grid.values.shape[1]     # each grid its own
                line.pad_right(max(0, x - len(line)))
                line.append("".join(str(c0 + j).rjust(cells.WIDTH) + " " for j in range(shown_cols)), style=label_style)
            out.append_text(line)
            out.append("\n")

        y = 0
        if not arrangement.stacked:
            xs = [label_w + k * (grid_w + GAP) for k in range(3)]
            header([(x, _grid_title(g, grid_w)) for x, g in zip(xs, panel.grids)])
            col_header(xs) if as_matrix_shape(panel.fitted)[1] > 1 else header([(x, "") for x in xs])
            y = 2
            notes = max((len(_note_lines(g.note, grid_w)) for g in panel.grids if g.values is None), default=0)
            for i in range(max(rows, notes)):
                out.append((str(r0 + i) if i < rows else "").rjust(label_w - 1) + " ", style=label_style)
                for k, grid in enumerate(panel.grids):
                    grid_line(grid, i, xs[k], y)
                    if k < 2:
                        out.append(" " * (GAP - 1))
                out.append("\n")
                y += 1
        else:
            for grid in panel.grids:
                out.append(" " * label_w + grid.label, style=label_style)
                if grid.values is None:
                    out.append(f"  {grid.note}", style=missing_style)
                out.append("\n")
                y += 1
                if grid.values is None:
                    continue
                for i in range(rows):
                    out.append(str(r0 + i).rjust(label_w - 1) + " ", style=label_style)
                    grid_line(grid, i, label_w, y)
                    out.append("\n")
                    y += 1
        room = size.height - y
        if not panel.whole and room >= 1 + sum(g.stats is not None for g in panel.grids):
            names = stats_shown(size.width)
            if any(grid.stats is not None for grid in panel.grids):
                out.append("whole".ljust(7) + "".join(f"{h:>{cells.WIDTH}} " for h in names) + "\n", style=label_style)
            for grid in panel.grids:
                if grid.stats is None:
                    continue
                st = grid.stats
                out.append(f"{grid.label:<7}", style=label_style)
                out.append("".join(f"{cells.cell(getattr(st, name)):>{cells.WIDTH}} " for name in names))
                if st.nonfinite:
                    out.append(f" {st.nonfinite} non-finite", style=self.get_component_rich_style("tensor-view--nonfinite"))
                out.append("\n")
        out.rstrip()
        return out

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        for y, x0, x1, row, col in self._hits:
            if offset.y == y and x0 <= offset.x < x1:
                self.post_message(self.CellClicked(row, col))
                return


def stats_shown(width: int) -> list[str]:
    """The whole tensor's statistics that fit on a line `width` wide, in their usual order; the
    range first, then the mean, the spread and the norm (a line too long wrapped into the next)."""
    room = max(1, (width - 7) // (cells.WIDTH + 1))
    kept = ("min", "max", "mean", "std", "norm")[:room]
    return [name for name in ("mean", "std", "min", "max", "norm") if name in kept]


def _note_lines(note: str, width: int) -> list[str]:
    return textwrap.wrap(note, max(width, 4)) or [""]


def _grid_title(grid, width: int) -> str:
    return grid.label.center(max(width - 1, len(grid.label)))

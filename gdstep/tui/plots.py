"""The plots (plotext): loss per iteration and per epoch, gradient norm per layer, the
decision boundary of a 2-D classifier, the loss surface over two numbers with the path.

Each widget draws data computed elsewhere (plot_data, on the worker thread); drawing is
all that happens here.
"""

from __future__ import annotations

import math

import numpy as np
from textual.color import Color
from textual.reactive import reactive
from textual_plotext import PlotextPlot

from gdstep.tui.plot_data import Boundary, Curves, Surface

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]
SEQUENTIAL = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]   # viridis


def _log_scale(values) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) and len(values) > 1 and max(positive) / min(positive) > 100


def _log10(values) -> list[float]:
    """log₁₀ on a linear axis: plotext's own log scale fails on values near 1e300."""
    return [math.log10(v) for v in values]


def _line(plt, xs, ys, colour) -> None:
    """A thin line; its points marked too while there are few."""
    xs, ys = list(xs), list(ys)
    plt.plot(xs, ys, marker="braille", color=colour)
    if len(xs) <= 40:
        plt.scatter(xs, ys, marker="•", color=colour)


def _short(v: float) -> str:
    return f"{v:.3g}"


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#%02x%02x%02x" % rgb


def _key(*items: tuple[str, tuple[int, int, int]]) -> str:
    """A legend for the border title: each name in its line's colour."""
    return " ".join(f"[{_hex(rgb)}]■[/] {name}" for name, rgb in items)


class _Plot(PlotextPlot):
    def _faded(self, rgb: tuple[int, int, int], amount: float) -> tuple[int, int, int]:
        """A colour between the plot's background and rgb, legible in dark and light themes."""
        surface = Color.parse(self.app.theme_variables.get("surface", "#1e1e1e"))
        mixed = surface.blend(Color(*rgb), amount)
        return (mixed.r, mixed.g, mixed.b)


class LossPlot(_Plot):
    curves: reactive[Curves | None] = reactive(None)

    def watch_curves(self, curves: Curves | None) -> None:
        plt = self.plt
        plt.clear_figure()
        if curves is None or not curves.x:
            self.border_title = "loss"
            self.border_subtitle = "no iteration yet"
            self.refresh()
            return
        values = list(curves.loss) + list(curves.epoch_loss)
        log = _log_scale(values)
        scale = _log10 if log else list
        _line(plt, curves.x, scale(curves.loss), PALETTE[0])
        items = [("iteration", PALETTE[0])]
        if 1 < len(curves.epoch_x) < len(curves.x):
            _line(plt, curves.epoch_x, scale(curves.epoch_loss), PALETTE[1])
            items.append(("epoch mean", PALETTE[1]))
        self.border_title = ("log₁₀ loss" if log else "loss") + "  " + _key(*items)
        self.border_subtitle = f"{curves.n} iteration{'s' if curves.n != 1 else ''}"
        self.refresh()


class GradNormPlot(_Plot):
    curves: reactive[Curves | None] = reactive(None)

    def watch_curves(self, curves: Curves | None) -> None:
        plt = self.plt
        plt.clear_figure()
        if curves is None or not curves.grad_norms:
            self.border_title = "‖∇W‖ per layer"
            self.border_subtitle = "after backward"
            self.refresh()
            return
        values = [v for _, _, ys in curves.grad_norms for v in ys]
        log = _log_scale(values)
        scale = _log10 if log else list
        items = []
        for k, (layer, xs, ys) in enumerate(curves.grad_norms):
            colour = PALETTE[k % len(PALETTE)]
            _line(plt, xs, scale(ys), colour)
            items.append((layer.split()[0], colour))
        self.border_title = ("log₁₀ ‖∇W‖" if log else "‖∇W‖ per layer") + "  " + _key(*items)
        self.border_subtitle = "v: next plot"
        self.refresh()


class BoundaryPlot(_Plot):
    boundary: reactive[Boundary | None] = reactive(None)

    def watch_boundary(self, b: Boundary | None) -> None:
        plt = self.plt
        plt.clear_figure()
        self.border_subtitle = "v: next plot"
        if b is None:
            self.border_title = "decision boundary"
            self.refresh()
            return
        for c in range(b.classes):
            colour = PALETTE[c % len(PALETTE)]
            for sure, amount in ((False, 0.14), (True, 0.3)):
                mask = (b.grid_class == c) & (b.grid_sure == sure)
                if mask.any():
                    plt.scatter(b.grid_x[mask].tolist(), b.grid_y[mask].tolist(), marker="█",
                                color=self._faded(colour, amount))
        for c in range(b.classes):
            mask = b.label == c
            if mask.any():
                plt.scatter(b.x[mask].tolist(), b.y[mask].tolist(), marker="•", color=PALETTE[c % len(PALETTE)])
        self.border_title = f"decision boundary · step {b.step}"
        self.refresh()


class SurfacePlot(_Plot):
    surface: reactive[Surface | None] = reactive(None)

    def watch_surface(self, s: Surface | None) -> None:
        plt = self.plt
        plt.clear_figure()
        self.border_subtitle = "v: next plot"
        if s is None:
            self.border_title = "loss surface"
            self.refresh()
            return
        with np.errstate(all="ignore"):
            level = np.log10(np.maximum(s.grid_loss, 1e-300))
        finite = np.isfinite(level)
        if finite.any():
            edges = np.quantile(level[finite], np.linspace(0, 1, len(SEQUENTIAL) + 1)[1:-1])
            bins = np.where(finite, np.searchsorted(edges, level), len(SEQUENTIAL) - 1)
            for k, colour in enumerate(SEQUENTIAL):
                mask = bins == k
                if mask.any():
                    plt.scatter(s.grid_x[mask].tolist(), s.grid_y[mask].tolist(), marker="█",
                                color=self._faded(colour, 0.5))
        x0, x1 = float(s.grid_x.min()), float(s.grid_x.max())
        y0, y1 = float(s.grid_y.min()), float(s.grid_y.max())
        path = [p for p in s.path if x0 <= p[0] <= x1 and y0 <= p[1] <= y1]
        if path:
            xs, ys = [p[0] for p in path], [p[1] for p in path]
            plt.plot(xs, ys, marker="braille", color=PALETTE[3])
            plt.scatter(xs, ys, marker="•", color=PALETTE[3])
            if path[-1] is s.path[-1]:
                plt.scatter([xs[-1]], [ys[-1]], marker="◆", color=PALETTE[1])
        scale = "".join(f"[{_hex(self._faded(c, 0.5))}]█[/]" for c in SEQUENTIAL)
        self.border_title = f"loss lo{scale}hi · [{_hex(PALETTE[3])}]•[/]path [{_hex(PALETTE[1])}]◆[/]now"
        outside = len(s.path) - len(path)
        now = s.path[-1] if s.path else None
        if now is not None and not (path and path[-1] is now):
            note = f" · ◆ now off the map at ({_short(now[0])}, {_short(now[1])})"
        else:
            note = f" · {outside} off the map" if outside else ""
        self.border_subtitle = f"x {s.labels[0]} · y {s.labels[1]}" + note
        self.refresh()

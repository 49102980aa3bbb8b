"""The health plot: ‖ΔW‖/‖W‖ per layer over time on a log axis with the 1e-3 rule of thumb
drawn, ‖∇W‖ per layer, and histograms of the selected parameter's weights and gradient.
Four panels where there is room (two rows of two), else the two curves, else the ratio alone."""

from __future__ import annotations

import math

import numpy as np
from textual.reactive import reactive

from gdstep.tui.health_data import RULE_OF_THUMB, Health, Histogram
from gdstep.tui.plot_data import Curves
from gdstep.tui.plots import (PALETTE, _iteration_axis, _line, _log10, _log_scale, _Plot, _short, fit_axis, fitted_key,
                              log_yticks)
from gdstep.update_norms import EVERY

GRID_MIN = (60, 16)           # the four panels need this many cells (columns, rows)
TWO_MIN = 14                  # two panels, one above the other, need this many rows


class HealthPlot(_Plot):
    health: reactive[Health | None] = reactive(None)
    curves: reactive[Curves | None] = reactive(None)

    def watch_health(self, _) -> None:
        self._draw()

    def watch_curves(self, _) -> None:
        self._draw()

    def on_resize(self) -> None:
        self._draw()

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_figure()
        h, c = self.health, self.curves
        width, height = self.content_size
        grid = width >= GRID_MIN[0] and height >= GRID_MIN[1]
        two = grid or height >= TWO_MIN
        plt.subplots(2 if two else 1, 2 if grid else 1)
        layers = [name for name, _, _ in (h.ratios if h else ())] or [name for name, _, _ in (c.grad_norms if c else ())]
        colours = {name: PALETTE[k % len(PALETTE)] for k, name in enumerate(layers)}
        # the figure's own methods would draw on every panel: each panel's are called on it
        self._ratios(plt.subplot(1, 1), h, colours, self._faded(PALETTE[7], 0.0))
        if two:
            self._grad_norms(plt.subplot(2 if not grid else 1, 1 if not grid else 2), c, colours)
        if grid:
            self._histogram(plt.subplot(2, 1), h.weights if h else None, PALETTE[0], "weights")
            self._histogram(plt.subplot(2, 2), h.grads if h else None, PALETTE[1], h.note if h and h.note else "gradient")
        self.border_title = fitted_key("health", [(f"layer {name.split()[0]}", colour) for name, colour in colours.items()],
                                       self.size.width)
        self.border_subtitle = (f"{h.updates} update{'' if h.updates == 1 else 's'} · " if h else "") + (
            f"‖ΔW‖ of {h.measured} (a run measures every {EVERY}th) · " if h and h.measured < h.updates else "") + "v: next plot"
        self.refresh()

    @staticmethod
    def _ratios(plt, h: Health | None, colours, surface) -> None:
        plt.title("‖ΔW‖/‖W‖ per layer (log)")
        if h is None or not h.ratios:
            return
        xs_all = [x for _, xs, _ in h.ratios for x in xs]
        logs = [math.log10(v) for _, _, ys in h.ratios for v in ys]
        rule = math.log10(RULE_OF_THUMB)
        lo, hi = min(logs + [rule]), max(logs + [rule])
        for name, xs, ys in h.ratios:
            _line(plt, xs, _log10(ys), colours.get(name, PALETTE[0]))
        plt.hline(rule, color=(127, 127, 127))
        plt.text("rule of thumb", x=min(xs_all), y=rule, color=(160, 160, 160), background=surface, alignment="left")
        plt.ylim(lo - 0.1, hi + 0.1)
        log_yticks(plt, lo - 0.1, hi + 0.1, scientific=True)       # as the rule of thumb is written: 1e-3
        _iteration_axis(plt, xs_all)

    @staticmethod
    def _grad_norms(plt, c: Curves | None, colours) -> None:
        if c is None or not c.grad_norms:
            plt.title("‖∇W‖ per layer")
            return
        values = [v for _, _, ys in c.grad_norms for v in ys]
        log = _log_scale(values)
        plt.title("‖∇W‖ per layer" + (" (log)" if log else ""))
        for name, xs, ys in c.grad_norms:
            _line(plt, xs, _log10(ys) if log else ys, colours.get(name, PALETTE[0]))
        if log and (limits := fit_axis(plt, _log10(values))):
            log_yticks(plt, *limits)
        _iteration_axis(plt, [x for _, xs, _ in c.grad_norms for x in xs])

    @staticmethod
    def _histogram(plt, hist: Histogram | None, colour, empty: str) -> None:
        if hist is None or not np.isfinite(hist.edges).all():
            plt.title(empty if hist is None else f"{hist.label}: beyond the float range")
            return
        centres = ((hist.edges[:-1] + hist.edges[1:]) / 2).tolist()
        plt.bar(centres, hist.counts.tolist(), color=colour, width=0.9)
        plt.xticks(*range_ticks(float(hist.edges[0]), float(hist.edges[-1])))
        top = int(hist.counts.max())
        ticks = sorted({0, top // 2, top})
        plt.yticks(ticks, [str(t) for t in ticks])
        plt.title(hist.label)


def range_ticks(lo: float, hi: float) -> tuple[list[float], list[str]]:
    """Ticks at both ends and the middle of [lo, hi]; only the middle one where their labels
    would read alike (values all equal but for the last digits: "0.5 0.5 0.5")."""
    ticks = [lo, (lo + hi) / 2, hi]
    labels = [_short(v) for v in ticks]
    if len(set(labels)) < 3:
        return [ticks[1]], [labels[1]]
    return ticks, labels

"""The plots (plotext): loss per iteration and per epoch (and each open lane's), the
decision boundary of a 2-D classifier, the loss along the next update. The landscape is
drawn by landscape_plot.py (half-blocks, which plotext cannot draw), per-layer health by
health_plot.py.

Each widget draws data computed elsewhere (plot_data, on the worker thread); drawing is
all that happens here.
"""

from __future__ import annotations

import math

import numpy as np
from rich.text import Text
from textual.color import Color
from textual.reactive import reactive
from textual_plotext import PlotextPlot

from gdstep.tui.descent_data import LinePicture
from gdstep.tui.plot_data import Boundary, Curves

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]
SEQUENTIAL = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]   # viridis


def _log_scale(values) -> bool:
    positive = [v for v in values if v > 0]
    return len(positive) == len(values) and len(values) > 1 and max(positive) / min(positive) > 100


def _log10(values) -> list[float]:
    """log₁₀ on a linear axis: plotext's own log scale fails on values near 1e300. The axis
    is labelled with the values themselves (log_yticks)."""
    return [math.log10(v) for v in values]


def log_ticks(lo: float, hi: float, most: int = 5) -> list[float]:
    """Round values for an axis drawn in log₁₀ over [lo, hi] (log₁₀ values): powers of ten, or
    1 and 3, 1-2-5 or 1…9 times them when fewer than three powers of ten fall in the range."""
    powers = range(math.ceil(lo), math.floor(hi) + 1)
    if len(powers) >= 3:                      # every stride-th power, on multiples of stride
        stride = math.ceil((len(powers) - 1) / (most - 1))
        return [10.0 ** k for k in powers if k % stride == 0]
    ticks: list[float] = []
    for mantissas in ((1, 3), (1, 2, 5), tuple(range(1, 10))):
        ticks = [m * 10.0 ** k for k in range(math.floor(lo), math.ceil(hi) + 1) for m in mantissas
                 if lo <= k + math.log10(m) <= hi]
        if len(ticks) >= 3:
            break
    return ticks[::math.ceil(len(ticks) / most)] if ticks else []


def tick_labels(ticks: list[float], scientific: bool = False) -> list[str]:
    """"0.01", "0.3", "100" while every label is short (and not `scientific`), else "1e-6",
    "1", "1e6" (plain up to 3 characters; only "1" when `scientific`)."""
    plain = [f"{v:g}" for v in ticks]
    if not scientific and all("e" not in p and len(p) <= 6 for p in plain):
        return plain
    short = {"1"} if scientific else {p for p in plain if "e" not in p and len(p) <= 3}
    return [p if p in short else f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")
            for p, v in zip(plain, ticks)]


def log_yticks(plt, lo: float, hi: float, scientific: bool = False) -> None:
    """Ticks for a y axis drawn in log₁₀ over [lo, hi], labelled with the values, not their logs."""
    ticks = log_ticks(lo, hi)
    if ticks:
        plt.yticks([math.log10(v) for v in ticks], tick_labels(ticks, scientific))


def _line(plt, xs, ys, colour) -> None:
    """A thin line; its points marked too while there are few."""
    xs, ys = list(xs), list(ys)
    plt.plot(xs, ys, marker="braille", color=colour)
    if len(xs) <= 40:
        plt.scatter(xs, ys, marker="•", color=colour)


def integer_ticks(xs, most: int = 5) -> list[int]:
    """Whole iteration numbers over the range of xs, at most `most` of them, evenly spaced."""
    if not xs:
        return []
    lo, hi = math.ceil(min(xs)), math.floor(max(xs))
    if hi < lo:
        return []
    stride = max(1, math.ceil((hi - lo) / max(1, most - 1)))
    return list(range(lo, hi + 1, stride))


def _iteration_axis(plt, xs) -> None:
    ticks = integer_ticks(xs)
    if ticks:
        plt.xticks(ticks, [str(t) for t in ticks])


def _short(v: float) -> str:
    return f"{v:.3g}"


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#%02x%02x%02x" % rgb


def _key(*items: tuple[str, tuple[int, int, int]]) -> str:
    """A legend for the border title: each name in its line's colour."""
    return " ".join(f"[{_hex(rgb)}]■[/] {name}" for name, rgb in items)


def title_fits(markup: str, width: int) -> bool:
    """Whether a border title fits whole on a border `width` wide ("╭─ " and " ─╮" around it)."""
    return Text.from_markup(markup).cell_len + 6 <= width


def fitted_key(title: str, items: list[tuple[str, tuple[int, int, int]]], width: int) -> str:
    """The title and the key of as many items as fit on a border `width` wide, then "+N more"
    (all of them while the width is not known yet)."""
    if width <= 0:
        return title + "  " + _key(*items)
    for n in range(len(items), 0, -1):
        text = title + "  " + _key(*items[:n]) + (f" +{len(items) - n} more" if n < len(items) else "")
        if title_fits(text, width):
            return text
    return title


LANE_PALETTE = [PALETTE[k] for k in (1, 2, 4, 6, 5, 7)]      # not blue (the session), not red (now)


def lane_colour(number: int) -> tuple[int, int, int]:
    """Lane k's colour, the same in every plot."""
    return LANE_PALETTE[(number - 1) % len(LANE_PALETTE)]


class _Plot(PlotextPlot):
    def _faded(self, rgb: tuple[int, int, int], amount: float) -> tuple[int, int, int]:
        """A colour between the plot's background and rgb, legible in dark and light themes."""
        surface = Color.parse(self.app.theme_variables.get("surface", "#1e1e1e"))
        mixed = surface.blend(Color(*rgb), amount)
        return (mixed.r, mixed.g, mixed.b)


class LossPlot(_Plot):
    curves: reactive[Curves | None] = reactive(None)
    _below: list[tuple[str, tuple[int, int, int]]] = []     # the lanes' legend under the plot

    def render(self):
        """The plot, and under it the lanes' legend when it is not drawn in the plot (wrapped
        onto as many lines as it needs, the plot keeping 6 at least)."""
        if not self._below:
            return super().render()
        width, height = self.size
        lines = self._below_lines()
        keep = max(6, height - len(lines))
        self._plot.plotsize(width, keep)
        self._plot._set_size(width, keep)
        self._plot.theme(self._get_plotext_theme_name(self.app.theme))
        out = Text.from_ansi(self._plot.build().rstrip("\n"))
        for line in lines[:max(0, height - keep)]:
            out.append("\n")
            out.append_text(line)
        return out

    def watch_curves(self, curves: Curves | None) -> None:
        plt = self.plt
        plt.clear_figure()
        self._below = []
        if curves is None or not (curves.x or curves.lanes):
            self.border_title = "loss"
            self.border_subtitle = "no iteration yet"
            self.refresh()
            return
        epochs = 1 < len(curves.epoch_x) < len(curves.x) and not curves.lanes
        drawn = list(curves.loss) + (list(curves.epoch_loss) if epochs else []) + \
            [v for lane in curves.lanes for v in lane.loss]
        log = _log_scale(drawn)
        scale = _log10 if log else list
        _line(plt, curves.x, scale(curves.loss), PALETTE[0])
        rows = len(curves.lanes) + 1
        legend = bool(curves.lanes) and bool(curves.x) and self._legend_fits(rows)
        if legend:
            # plotext's legend, in the plot: each lane's settings (an entry with no point fails
            # in plotext: lanes forked at the start have no session curve)
            plt.plot([curves.x[-1]], scale(curves.loss[-1:]), color=PALETTE[0], label="session")
        items = [("iteration", PALETTE[0])]
        if epochs:
            _line(plt, curves.epoch_x, scale(curves.epoch_loss), PALETTE[1])
            items.append(("epoch mean", PALETTE[1]))
        room = max(8, self.size.width - 16)    # plotext drops a legend wider than its canvas
        for lane in curves.lanes:
            if not lane.x:
                continue
            label = lane.label if len(lane.label) <= room else lane.label[:room - 1] + "…"
            plt.plot(list(lane.x), scale(lane.loss), marker="braille", color=lane_colour(lane.number),
                     label=label if legend else None)
        limits = fit_axis(plt, scale(drawn), rows if legend else 0, self.content_size.height - 3, None if log else 0.0)
        if log and limits:
            log_yticks(plt, *limits)
        _iteration_axis(plt, list(curves.x) + [x for lane in curves.lanes for x in lane.x])
        title = "loss (log axis)" if log else "loss"
        subtitle = f"{curves.n} iteration{'s' if curves.n != 1 else ''}"
        if curves.lanes:
            steps = [lane.steps for lane in curves.lanes]
            at = f"{max(steps)}" if min(steps) == max(steps) else f"{min(steps)}–{max(steps)}"
            subtitle = f"{len(steps)} lanes at {at} iterations"
            if len(subtitle) + len(f" · session at {curves.n}") <= self.size.width - 4:
                subtitle += f" · session at {curves.n}"
            items = [("session", PALETTE[0])]
            if not legend:                     # no room for the legend in the plot: under it
                self._below = [(lane.label, lane_colour(lane.number)) for lane in curves.lanes]
                if not self._below_fits():     # nor under it: the lanes' numbers in the title
                    items += [(str(lane.number), lane_colour(lane.number)) for lane in curves.lanes]
        self.border_title = fitted_key(title, items, self.size.width)
        self.border_subtitle = subtitle
        self.refresh()

    def _below_lines(self) -> list[Text]:
        """The legend under the plot: each lane's settings where they all fit with 6 lines
        of plot, else only the lanes' numbers ("■ 1  ■ 2 …", the settings are in the log)."""
        width, height = self.size
        full = wrap_key(self._below, width)
        if len(full) <= height - 6:
            return full
        return wrap_key([(name.split(":")[0], rgb) for name, rgb in self._below], width)

    def _below_fits(self) -> bool:
        """Whether render() has room for the whole legend under the plot (the numbers at least)."""
        width, height = self.size
        lines = len(self._below_lines())
        return height - max(6, height - lines) >= lines

    def _legend_fits(self, rows: int) -> bool:
        """Room for plotext's legend over the plot's top left corner: the curves are pushed
        below it by at most half their height."""
        canvas = self.content_size.height - 3      # the canvas less the x axis, its ticks and a margin
        return canvas - rows >= 3 and (rows + 0.5) / (canvas - rows) <= 0.5


def fit_axis(plt, values, rows: int = 0, canvas: int = 1, floor: float | None = None) -> tuple[float, float] | None:
    """The y axis over the finite values drawn, 4% padding each side, not below `floor` when
    no value is (a loss axis has no negative ticks); `rows` of legend at the top left are kept
    clear of the curves. Returns the limits set."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    lo, hi = y_range(finite, rows, canvas)
    if floor is not None and min(finite) >= floor:
        lo = max(lo, floor)
    plt.ylim(lo, hi)
    return lo, hi


def y_range(finite: list[float], rows: int = 0, canvas: int = 1) -> tuple[float, float]:
    lo, hi = min(finite), max(finite)
    span = (hi - lo) or abs(hi) * 0.1 or 1.0
    top = span * (rows + 0.5) / max(1, canvas - rows) if rows else 0.04 * span
    return lo - 0.04 * span, hi + top


def wrap_key(items, width: int) -> list[Text]:
    """A legend's items ("■ name", each in its colour) packed into lines of `width`; an item
    wider than a line is cut with "…"."""
    lines: list[Text] = []
    line = Text(no_wrap=True)
    for name, rgb in items:
        name = name if len(name) + 2 <= width else name[:max(1, width - 3)] + "…"
        if line.plain and len(line.plain) + 2 + len(name) + 2 > width:
            lines.append(line)
            line = Text(no_wrap=True)
        if line.plain:
            line.append("  ")
        line.append("■ ", style=_hex(rgb))
        line.append(name)
    if line.plain:
        lines.append(line)
    return lines


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


class LinePlot(_Plot):
    """L(W + t·ΔW) along the update about to be taken; t = 1 is that step."""

    picture: reactive[LinePicture | None] = reactive(None)

    def watch_picture(self, p: LinePicture | None) -> None:
        plt = self.plt
        plt.clear_figure()
        self.border_subtitle = "v: next plot"
        if p is None or p.line is None:
            self.border_title = "loss along the next update"
            if p is not None:
                self.border_subtitle = p.error
            self.refresh()
            return
        line = p.line
        finite = np.isfinite(line.loss)
        t, loss = line.t[finite].tolist(), line.loss[finite].tolist()
        log = _log_scale(loss)
        scale = _log10 if log else list
        plt.plot(t, scale(loss), marker="braille", color=PALETTE[0])
        plt.vline(1.0, color=self._faded(PALETTE[1], 0.6))
        if math.isfinite(line.at_zero):                 # inf where the loss overflowed (lesson 3)
            plt.scatter([0.0], scale([line.at_zero]), marker="●", color=PALETTE[2])
        if math.isfinite(line.at_one):
            plt.scatter([1.0], scale([line.at_one]), marker="◆", color=PALETTE[1])
        plt.xticks([-0.5, 0, 0.5, 1, 1.5, 2, 2.5, 3], ["-.5", "0", ".5", "1", "1.5", "2", "2.5", "3"])
        plt.xlim(float(line.t[0]), float(line.t[-1]))        # the whole line, where the loss overflows too
        if log and (limits := fit_axis(plt, scale(loss))):
            log_yticks(plt, *limits)
        self.border_title = "L(W+t·ΔW)" + (" (log axis)" if log else "") + "  " + _key(("t=0", PALETTE[2]), ("t=1 step", PALETTE[1]))
        change = line.at_one - line.at_zero
        kept = np.flatnonzero(finite)                    # where the loss did not overflow: drawn
        overflow = ("" if finite.all() else " · no finite loss on this line" if not finite.any() else
                    f" · finite only for t in [{_short(float(line.t[kept[0]]))}, {_short(float(line.t[kept[-1]]))}]"
                    if kept[-1] - kept[0] + 1 == len(kept) else f" · finite at {len(kept)} of {len(finite)} points")
        self.border_subtitle = (f"update {line.step + 1}: {_short(line.at_zero)} → {_short(line.at_one)}"
                                f" ({'+' if change >= 0 else ''}{_short(change)}){overflow} · v: next plot")
        self.refresh()

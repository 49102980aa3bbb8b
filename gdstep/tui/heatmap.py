"""The loss landscape as text: a heatmap at twice the vertical resolution (each cell is ▀,
its foreground the upper half, its background the lower), filled contours between level
values, the paths drawn on top, and a colour bar that shows the levels.

Pure functions of numbers to Rich Text, so tests read the colours directly. This module
does not import Textual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rich.style import Style
from rich.text import Text

VIRIDIS = [(68, 1, 84), (72, 40, 120), (62, 74, 137), (49, 104, 142), (38, 130, 142), (31, 158, 137),
           (53, 183, 121), (109, 205, 89), (180, 222, 44), (253, 231, 37)]
NONFINITE = (110, 110, 110)
LEVELS = 8                                  # contour bands


@dataclass(frozen=True)
class Scale:
    """How values map to bands: `levels` are the LEVELS + 1 contour values from the grid's
    minimum to its maximum (evenly in log₁₀ when the values span over two decades)."""

    levels: tuple[float, ...]
    log: bool

    @classmethod
    def of(cls, values: np.ndarray, bands: int = LEVELS) -> Scale:
        finite = np.asarray(values, dtype=float)
        finite = finite[np.isfinite(finite)]
        if finite.size == 0:
            return cls((0.0, 1.0), False)
        lo, hi = float(finite.min()), float(finite.max())
        log = lo > 0 and hi / lo > 100
        if log:
            inner = np.logspace(math.log10(lo), math.log10(hi), bands + 1)[1:-1]
        else:
            inner = np.linspace(lo, hi, bands + 1)[1:-1]
        return cls((lo, *(float(v) for v in inner), hi), log)

    @property
    def bands(self) -> int:
        return max(1, len(self.levels) - 1)

    def band(self, values: np.ndarray) -> np.ndarray:
        """The band of each value (0 the lowest); -1 where the value is not finite."""
        values = np.asarray(values, dtype=float)
        inner = np.asarray(self.levels[1:-1])
        bands = np.searchsorted(inner, np.where(np.isfinite(values), values, 0.0), side="right")
        return np.where(np.isfinite(values), np.minimum(bands, self.bands - 1), -1)

    def colour(self, band: int) -> tuple[int, int, int]:
        if band < 0:
            return NONFINITE
        if self.bands == 1:
            return VIRIDIS[0]
        return VIRIDIS[round(band * (len(VIRIDIS) - 1) / (self.bands - 1))]


def resample(grid: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """The grid at rows × cols, interpolated linearly between its points in each direction
    (a screen has more cells than a 40×40 grid has points: the contours stay smooth), its
    first row (the smallest β) at the bottom: row 0 of the result is the top of the picture."""
    grid = np.asarray(grid, dtype=float)

    def axis(n_from: int, n_to: int, reverse: bool):
        at = np.linspace(n_from - 1, 0, n_to) if reverse else np.linspace(0, n_from - 1, n_to)
        low = np.clip(np.floor(at).astype(int), 0, max(n_from - 2, 0))
        high = np.minimum(low + 1, n_from - 1)
        return low, high, at - low

    r0, r1, fr = axis(grid.shape[0], rows, True)
    c0, c1, fc = axis(grid.shape[1], cols, False)
    fr, fc = fr[:, None], fc[None, :]
    with np.errstate(invalid="ignore"):
        top = grid[np.ix_(r0, c0)] * (1 - fc) + grid[np.ix_(r0, c1)] * fc
        bottom = grid[np.ix_(r1, c0)] * (1 - fc) + grid[np.ix_(r1, c1)] * fc
        out = top * (1 - fr) + bottom * fr
    near_r = np.where(fr[:, 0] < 0.5, r0, r1)
    near_c = np.where(fc[0] < 0.5, c0, c1)
    return np.where(np.isfinite(out), out, grid[np.ix_(near_r, near_c)])     # beside a non-finite point: the nearest


def cell_of(point, alphas, betas, rows: int, cols: int) -> tuple[int, int] | None:
    """The (half-row, column) of the picture where the point (α, β) falls; None off the map.
    Half-rows count from the top, two per line of text."""
    a, b = float(point[0]), float(point[1])
    a0, a1, b0, b1 = float(alphas[0]), float(alphas[-1]), float(betas[0]), float(betas[-1])
    if not (math.isfinite(a) and math.isfinite(b)) or not (a0 <= a <= a1 and b0 <= b <= b1):
        return None
    col = round((a - a0) / ((a1 - a0) or 1.0) * (cols - 1))
    row = round((b1 - b) / ((b1 - b0) or 1.0) * (rows - 1))
    return int(row), int(col)


def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(rgb)


def _mix(a, b, amount: float) -> tuple[int, int, int]:
    return tuple(round(x + (y - x) * amount) for x, y in zip(a, b))


@dataclass(frozen=True)
class Mark:
    """A path on the map: its points (α, β) in order, a colour, and the glyph of its last point."""

    points: np.ndarray
    colour: tuple[int, int, int]
    glyph: str = "•"
    last: str = "◆"
    last_colour: tuple[int, int, int] | None = None


def picture(loss: np.ndarray, alphas, betas, lines: int, cols: int, scale: Scale,
            marks: tuple[Mark, ...] = (), contours: bool = True) -> Text:
    """The heatmap in `lines` lines of `cols` cells: 2·lines half-rows, band edges (the
    contour lines) lightened, the marks' points on top (the last point of each with its
    glyph), joined by dots."""
    rows = 2 * lines
    bands = scale.band(resample(loss, rows, cols))
    colours = np.empty(bands.shape + (3,), dtype=int)
    for k in range(-1, scale.bands):
        colours[bands == k] = scale.colour(k)
    edge = np.zeros(bands.shape, dtype=bool)             # a contour: the band changes to the right or below
    edge[:, :-1] |= bands[:, :-1] != bands[:, 1:]
    edge[:-1, :] |= bands[:-1, :] != bands[1:, :]
    if contours:
        colours[edge] = (colours[edge] * 0.6 + 255 * 0.4).astype(int)
    glyphs: dict[tuple[int, int], tuple[str, tuple[int, int, int]]] = {}
    for mark in marks:                       # the segments first, as dots under the points
        cells = [cell_of(p, alphas, betas, rows, cols) for p in mark.points]
        for a, b in zip(cells, cells[1:]):
            if a is None or b is None:
                continue
            n = 2 * max(abs(b[0] - a[0]) // 2, abs(b[1] - a[1]), 1)
            for k in range(1, n):
                r, c = round(a[0] + (b[0] - a[0]) * k / n), round(a[1] + (b[1] - a[1]) * k / n)
                glyphs[(r // 2, c)] = ("·", mark.colour)
    for mark in marks:
        points = list(mark.points)
        for k, p in enumerate(points):
            cell = cell_of(p, alphas, betas, rows, cols)
            if cell is not None:
                last = k == len(points) - 1
                glyphs[(cell[0] // 2, cell[1])] = (mark.last, mark.last_colour or mark.colour) if last \
                    else (mark.glyph, mark.colour)
    text = Text(no_wrap=True, overflow="crop")
    for line in range(lines):
        for c in range(cols):
            top, bottom = tuple(colours[2 * line, c]), tuple(colours[2 * line + 1, c])
            if (line, c) in glyphs:
                glyph, colour = glyphs[(line, c)]
                text.append(glyph, Style(color=_hex(colour), bgcolor=_hex(_mix(top, bottom, 0.5)), bold=True))
            else:
                text.append("▀", Style(color=_hex(top), bgcolor=_hex(bottom)))
        if line < lines - 1:
            text.append("\n")
    return text


def colour_bar(scale: Scale, width: int) -> Text:
    """The bands in order with the lowest and highest level written at the ends."""
    lo, hi = _short(scale.levels[0]), _short(scale.levels[-1])
    text = Text(no_wrap=True, overflow="crop")
    text.append(lo + " ")
    room = max(scale.bands, width - len(lo) - len(hi) - 2)
    per = max(1, room // scale.bands)
    for k in range(scale.bands):
        text.append("█" * per, Style(color=_hex(scale.colour(k))))
    text.append(" " + hi)
    return text


def _short(v: float) -> str:
    return f"{v:.3g}"

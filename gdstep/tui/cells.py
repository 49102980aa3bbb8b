"""Numbers in grid cells: seven characters at most, so three tensors fit side by side.

The exact value of the selected element is always in the arithmetic panel; a cell gives
the magnitude and sign at a glance, with the colour.
"""

from __future__ import annotations

import math

WIDTH = 7


def cell(v: float) -> str:
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == 0:
        return "0"
    a = abs(v)
    if 1e-3 <= a < 1e5:
        digits = len(str(int(a)))
        decimals = max(0, WIDTH - 2 - digits)          # room for the sign and the point
        text = f"{v:.{decimals}f}"
        if decimals and len(text) > WIDTH:
            text = f"{v:.{decimals - 1}f}"
        return text
    mantissa, exponent = f"{v:.1e}".split("e")
    text = f"{mantissa}e{int(exponent)}"
    if len(text) > WIDTH:
        text = f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-").replace("e+", "e")
    return text


def row(values) -> list[str]:
    """The cells of one row of the batch view, written alike: a row of whole numbers
    (targets, labels, 0/1 inputs) as integers; in any other row a zero has the decimals of
    its neighbours (`0.0000` beside `1.4227`, never `0` beside `1.0000`)."""
    vs = [float(v) for v in values]
    if vs and all(math.isfinite(v) and v == int(v) and abs(v) < 1e5 for v in vs):
        return [str(int(v)) for v in vs]
    return [f"{0:.{WIDTH - 3}f}" if v == 0 else cell(v) for v in vs]


def scale(values, stats=None) -> float:
    """The magnitude that maps to full colour: the largest |value| of the tensor (or window)."""
    if stats is not None and math.isfinite(stats.min) and math.isfinite(stats.max):
        return max(abs(stats.min), abs(stats.max))
    best = 0.0
    for v in values.flat:
        if math.isfinite(v):
            best = max(best, abs(float(v)))
    return best

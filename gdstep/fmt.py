"""How numbers are written everywhere: values to six decimals, hyperparameters as given."""

from __future__ import annotations

import math


def num(x: float) -> str:
    """A value: `0.358916`, or scientific where six decimals would hide it."""
    x = float(x)
    if not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if x == 0:
        return "0.000000" if math.copysign(1.0, x) > 0 else "-0.000000"
    if 1e-4 <= abs(x) < 1e6:
        return f"{x:.6f}"
    return f"{x:.6e}"


def hp(x: float) -> str:
    """A hyperparameter or count: `0.5`, `1e-08`, `0.999`."""
    x = float(x)
    return f"{int(x)}" if x.is_integer() and abs(x) < 1e6 else f"{x:g}"


def factor(text: str) -> str:
    """A number as a factor in a product: negatives get parentheses."""
    return f"({text})" if text.startswith("-") else text


def show(value) -> str:
    """Any value a condition, watch or state can hold: none, true/false, text, a count, a number."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int) or type(value).__name__.startswith(("int", "uint")):
        return str(int(value))
    return num(float(value))


def index_text(index: tuple[int, ...]) -> str:
    return "[" + ",".join(str(i) for i in index) + "]"

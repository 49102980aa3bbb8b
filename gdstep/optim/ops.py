"""The Term the debugger prints, and the two ways an optimizer's formula runs: on whole
arrays, or on one element with its terms.

An optimizer writes its update once, `formula(ops, w, g, state)`, with arithmetic operators and
the few functions of `ops` (numpy's names and `out=` buffers). Each intermediate worth showing
goes through `ops.term(symbol, formula, value, numbers)`:

- `ARRAYS` runs it on numpy arrays, in place where the formula asks (`out=`, `*=`), so the
  bits are numpy's and torch's; `term` hands the value back and never builds the text.
- `Recording` runs it on one element as float64 scalars; `term` also writes down a `Term`
  with the numbers filled in. `aside` shows a value that only the explanation needs
  (Adam's m̂ and v̂: torch never forms them), computed only while recording.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from gdstep.fmt import num


@dataclass(frozen=True, slots=True)
class Term:
    """One line of an update: `symbol = formula = numbers = value`."""

    symbol: str
    formula: str
    numbers: str
    value: float

    def __str__(self) -> str:
        parts = [self.symbol, self.formula]
        if self.numbers and self.numbers != self.formula:
            parts.append(self.numbers)
        if self.numbers != num(self.value) and not isinstance(self.value, int):   # a count: `t = step = 3`
            parts.append(num(self.value))
        return " = ".join(dict.fromkeys(parts))


class Arrays:
    """The vectorised update: numpy on whole arrays, nothing recorded."""

    sqrt = staticmethod(np.sqrt)
    maximum = staticmethod(np.maximum)
    divide = staticmethod(np.divide)
    subtract = staticmethod(np.subtract)

    def term(self, symbol: str, formula: str, value: Any, numbers: Callable[[], str]) -> Any:
        return value

    def aside(self, symbol: str, formula: str, value: Callable[[], Any], numbers: Callable[[], str]) -> None:
        return None


ARRAYS = Arrays()


class Recording:
    """One element in float64 scalars, every term written down as it is computed.

    numpy scalars rather than Python floats: division by zero and the root of a negative give
    inf and nan as in the arrays, not an exception; an `out=` buffer means nothing here.
    """

    def __init__(self) -> None:
        self.terms: list[Term] = []

    @staticmethod
    def sqrt(a: Any, out: Any = None) -> np.float64:
        return np.sqrt(np.float64(a))

    @staticmethod
    def maximum(a: Any, b: Any, out: Any = None) -> np.float64:
        return np.maximum(np.float64(a), np.float64(b))

    @staticmethod
    def divide(a: Any, b: Any, out: Any = None) -> np.float64:
        return np.float64(a) / b

    @staticmethod
    def subtract(a: Any, b: Any, out: Any = None) -> np.float64:
        return np.float64(a) - b

    def term(self, symbol: str, formula: str, value: Any, numbers: Callable[[], str]) -> Any:
        shown = value if isinstance(value, int) else float(value)     # a count stays a count
        self.terms.append(Term(symbol, formula, numbers(), shown))
        return value

    def aside(self, symbol: str, formula: str, value: Callable[[], Any], numbers: Callable[[], str]) -> Any:
        return self.term(symbol, formula, value(), numbers)


Ops = Arrays | Recording


def scalar(value: Any) -> Any:
    """An element of the state as the recording computes with it: a float64, a count or None."""
    if value is None or isinstance(value, (bool, int)):
        return value
    return np.float64(value)

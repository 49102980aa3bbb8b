"""`say "text"`: narration with values from the session, `{loss:.4f}`, `{lr}`, `{2.weight[0,1]}`.

A field is an expression of the condition language (gdstep.conditions: `loss`, `step`,
`lane(2).loss`, `2.weight[0,1]`, `loss - prev_loss`), parsed when the script is, never
evaluated as Python; after a `:` comes a format spec from a small safe subset of Python's:

    [align][sign][width][,][.precision][type]     align < > ^   sign + - space
                                                  width and precision at most 2 digits
                                                  type f e g % (or F E G)

`{{` and `}}` are literal braces. Without a spec a whole number is written as it is and
any other number to six significant digits (`0.1`, `0.358916`, `1e-08`); a value that does
not exist yet (the loss before the first loss phase) is written `none`, whatever the spec.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass
from typing import Any

from gdstep.conditions import Expression, tokenize
from gdstep.conditions.grammar import Parser
from gdstep.errors import ConditionError, GdstepError

SPEC = re.compile(r"(?P<align>[<>^])?(?P<sign>[-+ ])?(?P<width>\d{1,2})?(?P<group>,)?"
                  r"(?:\.(?P<precision>\d{1,2}))?(?P<type>[eEfFgG%])?")


class SayError(GdstepError):
    """A say text that does not parse: `column` is 1-based within the text."""

    def __init__(self, column: int, message: str):
        self.column, self.message = column, message
        super().__init__(message)


@dataclass(frozen=True)
class Field:
    expression: Expression
    spec: str
    column: int                     # of the expression, 1-based within the text
    kind: str                       # num | str | bool

    def format(self, context) -> str:
        return format_value(self.expression(context), self.spec)


@dataclass(frozen=True)
class Say:
    """A parsed say text: literal strings and Fields, in order."""

    text: str
    parts: tuple[str | Field, ...]

    @property
    def fields(self) -> tuple[Field, ...]:
        return tuple(p for p in self.parts if isinstance(p, Field))

    def __call__(self, context) -> str:
        return "".join(p if isinstance(p, str) else p.format(context) for p in self.parts)


def parse_say(text: str) -> Say:
    """Parse the text between the quotes; raises SayError with the column of what is wrong."""
    parts: list[str | Field] = []
    literal: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in "{}" and text[i + 1:i + 2] == ch:
            literal.append(ch)
            i += 2
            continue
        if ch == "}":
            raise SayError(i + 1, "a single '}' (write '}}' for a brace)")
        if ch != "{":
            literal.append(ch)
            i += 1
            continue
        end = text.find("}", i + 1)
        nested = text.find("{", i + 1)
        if end < 0 or 0 <= nested < end:
            raise SayError(i + 1, "a '{' without its '}' (write '{{' for a brace)")
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(_field(text[i + 1:end], i + 2))
        i = end + 1
    if literal:
        parts.append("".join(literal))
    return Say(text, tuple(parts))


def _field(body: str, column: int) -> Field:
    source, colon, spec = body.partition(":")
    if not source.strip():
        raise SayError(column, "an empty field: name a value, such as {loss:.4f}")
    try:
        parser = Parser(source, tokenize(source))
        fn, kind = parser.parse()
    except ConditionError as e:
        raise SayError(column + (e.column - 1 if e.column else 0), e.message) from None
    expression = Expression(source.strip(), fn, frozenset(parser.names), tuple(parser.params),
                            tuple(parser.reads.items()))
    if colon:
        m = SPEC.fullmatch(spec)
        at = column + len(source) + 1
        if not spec or m is None:
            raise SayError(at, f"format spec {spec!r}: expected [align][sign][width][,][.precision][type], "
                               "type one of f e g %, such as :.4f or :>8.3e")
        numeric = m["sign"] or m["group"] or m["precision"] or m["type"]
        if kind != "num" and numeric:
            raise SayError(at, f"{{{source.strip()}}} is {'true/false' if kind == 'bool' else 'text'}: "
                               "only a width and an alignment apply to it")
    return Field(expression, spec, column, kind)


def format_value(value: Any, spec: str = "") -> str:
    """A value as a say field writes it (see the module's docstring)."""
    if value is None:
        text = "none"
    elif isinstance(value, bool) or isinstance(value, str):
        text = ("true" if value else "false") if isinstance(value, bool) else value
    elif isinstance(value, numbers.Integral) and not spec.lstrip("<>^-+ ").strip("0123456789,"):
        return format(int(value), spec)
    elif isinstance(value, numbers.Real):
        x = float(value)
        if not spec:
            return f"{x:.6g}" if math.isfinite(x) else ("nan" if math.isnan(x) else ("inf" if x > 0 else "-inf"))
        return format(x, spec)
    else:
        text = str(value)
    m = SPEC.fullmatch(spec) if spec else None
    if m and m["width"]:
        return format(text, f"{m['align'] or '<'}{m['width']}")
    return text

"""Conditions as tokens: numbers, names (`loss`, `2.weight`), strings and operators, each
with its column for error messages."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gdstep.errors import ConditionError

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?(?![\w.]))
  | (?P<name>(?:\d+|[A-Za-z_]\w*)(?:\.(?:\d+|[A-Za-z_]\w*))*)
  | (?P<string>"[^"]*"|'[^']*')
  | (?P<op><=|>=|==|!=|<|>|\+|-|\*|/|\(|\)|\[|\]|,)
""", re.VERBOSE)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    column: int  # 1-based


def tokenize(text: str) -> list[Token]:
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            ch = text[pos]
            hint = " (use == to compare)" if ch == "=" else ""
            raise ConditionError(text, pos + 1, f"unexpected character {ch!r}{hint}")
        kind = m.lastgroup
        if kind != "ws":
            tokens.append(Token(kind, m.group(), pos + 1))
        pos = m.end()
    tokens.append(Token("end", "", len(text) + 1))
    return tokens

"""Conditions as tokens: numbers, names (`loss`, `2.weight`), strings and operators, each
with its column for error messages."""

from __future__ import annotations

import re
from dataclasses import dataclass

from gdstep.errors import ConditionError
from gdstep.text import char_name, unsafe_character

MAX_TOKENS = 256        # a longer condition is refused: its closures are evaluated recursively
MAX_NUMBER = 40         # characters in a number

_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?(?![\w.]))
  | (?P<name>(?:\d+|[A-Za-z_]\w*)(?:\.(?:\d+|[A-Za-z_]\w*))*)
  | (?P<string>"[^"]*"|'[^']*')
  | (?P<op><=|>=|==|!=|<|>|\+|-|\*|/|\(|\)|\[|\]|,|\.)
""", re.VERBOSE)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    column: int  # 1-based


def tokenize(text: str) -> list[Token]:
    bad = unsafe_character(text)
    if bad is not None:
        raise ConditionError(text, bad + 1, f"control character {char_name(text[bad])} is not allowed")
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            ch = text[pos]
            hint = " (use == to compare)" if ch == "=" else ""
            raise ConditionError(text, pos + 1, f"unexpected character {ch!r}{hint}")
        kind = m.lastgroup
        if kind == "number" and len(m.group()) > MAX_NUMBER:
            raise ConditionError(text, pos + 1, f"a number of {len(m.group())} characters is too long (at most {MAX_NUMBER})")
        if kind != "ws":
            if len(tokens) >= MAX_TOKENS:
                raise ConditionError(text, pos + 1, f"too long: at most {MAX_TOKENS} numbers, names and operators")
            tokens.append(Token(kind, m.group(), pos + 1))
        pos = m.end()
    tokens.append(Token("end", "", len(text) + 1))
    return tokens

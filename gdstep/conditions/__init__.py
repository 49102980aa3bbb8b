"""Conditions: a small expression language for breakpoints, `until`, `stop_when` and `expect`.

Parsed by hand and compiled to closures; nothing is ever passed to `eval`. The grammar:

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)*      (chains as in Python)
    sum     := product (("+" | "-") product)*
    product := unary (("*" | "/") unary)*
    unary   := "-" unary | atom
    atom    := NUMBER | STRING | "true" | "false" | NAME | PARAM "[" INT ("," INT)* "]"
             | FUNC "(" (PARAM | expr) ")" | "(" expr ")"

NAME is one of `loss prev_loss epoch iteration step phase lr grad_norm update_ratio nan`;
FUNC is `grad_norm`, `update_ratio` (of one parameter) or `abs`; PARAM is a parameter name
such as `0.weight`. A value that does not exist yet (no loss before the first loss phase) is
`none`, and every comparison with it is false.

Each condition knows after which phases its value can change (`phases`), so a breakpoint on
`loss > prev_loss` is checked once per iteration, right after the loss phase.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from gdstep.conditions.grammar import Parser
from gdstep.conditions.lexer import Token, tokenize
from gdstep.conditions.names import (ALL_PHASES, BOOL_NAMES, FUNCTIONS, KEYWORDS, NAMES, OWN_PHASES, RECORD_NAMES,
                                    STRING_NAMES, Context, Fn)
from gdstep.records import PHASES
from gdstep.errors import ConditionError, index_problem, suggest
from gdstep.fmt import show


@dataclass(frozen=True)
class Condition:
    """A parsed condition: call it with a Context; `phases` says when it is worth checking."""

    text: str
    fn: Fn = field(repr=False, compare=False)
    names: frozenset[str]
    params: tuple[tuple[str, tuple[int, ...] | None, int], ...]
    reads: tuple[tuple[str, Fn], ...] = field(default=(), repr=False, compare=False)

    def __call__(self, context: Context) -> bool:
        return bool(self.fn(context))

    @property
    def phases(self) -> frozenset[str]:
        """After which phases it is checked: those that can change a value it reads — but
        where it reads an iteration's records (`loss`, `grad_norm`, …), once an iteration,
        after the last of them is made (`loss > 2 or grad_norm > 10`: after backward, not
        also after the loss phase on the iteration before's norm; `step > 30 and loss < 0.7`:
        not also after the update, on the same loss again), with `step`, `lr` and the
        parameters as they stand then; `phase` and `nan` keep every phase they ask for."""
        phases: set[str] = set()
        for name in self.names:
            phases |= NAMES[name]
        if any(index is not None for _, index, _ in self.params):
            phases.add("update")
        made = {p for name in self.names & RECORD_NAMES for p in NAMES[name]}
        if made:
            phases = {max(made, key=PHASES.index)}.union(*(NAMES[name] for name in self.names & OWN_PHASES))
        return frozenset(phases) if phases else ALL_PHASES

    def check_names(self, shapes: Mapping[str, tuple[int, ...]] | tuple[str, ...] | list[str],
                    attached: bool = False) -> "Condition":
        """Refuse unknown parameters and (given shapes) indices out of range; `attached`:
        `epoch` and `iteration`, which count a scenario's data (a loop's data is one batch an
        iteration: `iteration` would stay 1, `epoch` count the updates)."""
        counted = sorted(self.names & {"epoch", "iteration"}) if attached else []
        if counted:
            raise ConditionError(self.text, None, f"{' and '.join(counted)} count{'s' if len(counted) == 1 else ''} a scenario's data; in attach mode "
                                 "the loop's iterations are counted by step (updates done: step == 10 after the "
                                 "tenth)")
        known = shapes if isinstance(shapes, Mapping) else {n: None for n in shapes}
        for name, index, column in self.params:
            if name not in known:
                raise ConditionError(self.text, column, f"no parameter {name!r}" + suggest(name, known, "parameters"))
            shape = known[name]
            problem = index_problem(name, shape, index) if index is not None and shape is not None else None
            if problem:
                raise ConditionError(self.text, column, problem)
        return self

    def describe(self, context: Context) -> str:
        """The values the condition read, for the event log: `loss = 0.53, prev_loss = 0.51`."""
        return ", ".join(f"{label} = {show(fn(context))}" for label, fn in self.reads)




def parse_expression(text: str) -> Condition:
    """Parse a numeric expression (`2.weight[0,1]`, `grad_norm(0.weight)`, `loss * 2`) for
    `watch` and `print`; calling the result gives the number (or None), not a truth value."""
    if not isinstance(text, str):
        raise ConditionError(str(text), None, "an expression is text, such as \"loss\"")
    parser = Parser(text, tokenize(text))
    fn, kind = parser.parse()
    if kind == "bool":
        raise ConditionError(text, 1, "expected a value such as loss or 2.weight[0,1], not a condition")
    return Expression(text, fn, frozenset(parser.names), tuple(parser.params), tuple(parser.reads.items()))


class Expression(Condition):
    """A parsed value: calling it returns the number (or string, or None)."""

    def __call__(self, context: Context) -> Any:
        return self.fn(context)


def parse_condition(text: str) -> Condition:
    """Parse a condition; raises ConditionError with the column of what is wrong."""
    if not isinstance(text, str):
        raise ConditionError(str(text), None, "a condition is text, such as \"loss < 0.01\"")
    parser = Parser(text, tokenize(text))
    fn, kind = parser.parse()
    if kind != "bool":
        raise ConditionError(text, 1, "a condition must be true or false: compare it, as in \"loss < 0.01\"")
    return Condition(text, fn, frozenset(parser.names), tuple(parser.params), tuple(parser.reads.items()))


__all__ = ["ALL_PHASES", "BOOL_NAMES", "FUNCTIONS", "KEYWORDS", "NAMES", "STRING_NAMES", "Condition", "Context",
           "Expression", "Token", "parse_condition", "parse_expression", "tokenize"]

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

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

from gdstep.fmt import show
from gdstep.errors import ConditionError, index_problem, suggest
from gdstep.records import PHASES

ALL_PHASES = frozenset(PHASES)

# name -> the phases after which its value can change
NAMES: dict[str, frozenset[str]] = {
    "loss": frozenset({"loss"}),
    "prev_loss": frozenset({"loss"}),
    "grad_norm": frozenset({"backward"}),
    "update_ratio": frozenset({"update"}),
    "epoch": frozenset({"update"}),
    "iteration": frozenset({"update"}),
    "step": frozenset({"update"}),
    "lr": frozenset({"forward", "update"}),
    "phase": ALL_PHASES,
    "nan": ALL_PHASES,
}
STRING_NAMES = {"phase"}
BOOL_NAMES = {"nan"}
FUNCTIONS = {"grad_norm": "backward", "update_ratio": "update", "abs": None}
KEYWORDS = {"and", "or", "not", "true", "false"}


class Context(Protocol):
    """What a condition reads; the Session provides one."""

    def value(self, name: str) -> Any: ...

    def param(self, name: str, index: tuple[int, ...]) -> float: ...

    def grad_norm(self, name: str | None) -> float | None: ...

    def update_ratio(self, name: str | None) -> float | None: ...


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


Fn = Callable[[Context], Any]


def _compare(op: str) -> Callable[[Any, Any], bool]:
    import operator
    f = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
         "==": operator.eq, "!=": operator.ne}[op]

    def compare(a, b):
        if a is None or b is None:
            return False
        return f(a, b)
    return compare


def _arith(op: str) -> Callable[[Any, Any], Any]:
    def arith(a, b):
        if a is None or b is None:
            return None
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if b == 0:
            return math.nan if a == 0 or math.isnan(a) else math.copysign(math.inf, a) * math.copysign(1.0, b)
        return a / b
    return arith


@dataclass
class _Parser:
    text: str
    tokens: list[Token]
    pos: int = 0
    names: set = field(default_factory=set)
    params: list = field(default_factory=list)  # (name, index | None, column)
    reads: dict = field(default_factory=dict)   # label -> closure, for describe()

    @property
    def tok(self) -> Token:
        return self.tokens[self.pos]

    def fail(self, message: str, token: Token | None = None):
        token = token or self.tok
        raise ConditionError(self.text, token.column, message)

    def take(self, text: str) -> Token:
        if self.tok.text != text or self.tok.kind not in ("op", "name"):
            found = repr(self.tok.text) if self.tok.kind != "end" else "the end"
            self.fail(f"expected {text!r}, found {found}")
        token = self.tok
        self.pos += 1
        return token

    def at(self, *texts: str) -> bool:
        return self.tok.kind in ("op", "name") and self.tok.text in texts

    # Each method returns (closure, type) with type in {"bool", "num", "str"}.
    def parse(self) -> tuple[Fn, str]:
        if self.tok.kind == "end":
            self.fail("empty condition")
        fn, kind = self.or_()
        if self.tok.kind != "end":
            self.fail(f"unexpected {self.tok.text!r}")
        return fn, kind

    def expect_kind(self, got: str, want: str, token: Token, what: str):
        if got != want:
            self.fail(f"{what} needs {'a true/false condition' if want == 'bool' else 'a number'} here, got a {'condition' if got == 'bool' else ('string' if got == 'str' else 'number')}", token)

    def or_(self):
        token = self.tok
        fn, kind = self.and_()
        while self.at("or"):
            op = self.take("or")
            self.expect_kind(kind, "bool", token, "'or'")
            token = self.tok
            rhs, rkind = self.and_()
            self.expect_kind(rkind, "bool", token, "'or'")
            fn = (lambda a, b: lambda c: bool(a(c)) or bool(b(c)))(fn, rhs)
        return fn, kind

    def and_(self):
        token = self.tok
        fn, kind = self.not_()
        while self.at("and"):
            self.take("and")
            self.expect_kind(kind, "bool", token, "'and'")
            token = self.tok
            rhs, rkind = self.not_()
            self.expect_kind(rkind, "bool", token, "'and'")
            fn = (lambda a, b: lambda c: bool(a(c)) and bool(b(c)))(fn, rhs)
        return fn, kind

    def not_(self):
        if self.at("not"):
            self.take("not")
            token = self.tok
            fn, kind = self.not_()
            self.expect_kind(kind, "bool", token, "'not'")
            return (lambda a: lambda c: not a(c))(fn), "bool"
        return self.compare()

    def compare(self):
        first_token = self.tok
        fn, kind = self.sum()
        if not self.at("<", "<=", ">", ">=", "==", "!="):
            return fn, kind
        parts = []
        left, left_kind, left_token = fn, kind, first_token
        while self.at("<", "<=", ">", ">=", "==", "!="):
            op_token = self.tok
            self.pos += 1
            right_token = self.tok
            right, right_kind = self.sum()
            if left_kind == "bool" or right_kind == "bool":
                self.fail(f"cannot compare a condition with {op_token.text!r}", op_token)
            if left_kind != right_kind:
                self.fail(f"cannot compare a {'string' if left_kind == 'str' else 'number'} with a {'string' if right_kind == 'str' else 'number'}", right_token)
            if left_kind == "str" and op_token.text not in ("==", "!="):
                self.fail("strings compare only with == and !=", op_token)
            parts.append((left, _compare(op_token.text), right))
            left, left_kind = right, right_kind
        if len(parts) == 1:
            a, f, b = parts[0]
            return (lambda a, f, b: lambda c: f(a(c), b(c)))(a, f, b), "bool"

        def chained(c, parts=tuple(parts)):
            cache = {}
            for a, f, b in parts:
                va = cache[id(a)] if id(a) in cache else a(c)
                vb = b(c)
                cache[id(b)] = vb
                if not f(va, vb):
                    return False
            return True
        return chained, "bool"

    def sum(self):
        token = self.tok
        fn, kind = self.product()
        while self.at("+", "-"):
            op = self.tok
            self.pos += 1
            self.expect_kind(kind, "num", token, repr(op.text))
            token = self.tok
            rhs, rkind = self.product()
            self.expect_kind(rkind, "num", token, repr(op.text))
            fn = (lambda a, f, b: lambda c: f(a(c), b(c)))(fn, _arith(op.text), rhs)
        return fn, kind

    def product(self):
        token = self.tok
        fn, kind = self.unary()
        while self.at("*", "/"):
            op = self.tok
            self.pos += 1
            self.expect_kind(kind, "num", token, repr(op.text))
            token = self.tok
            rhs, rkind = self.unary()
            self.expect_kind(rkind, "num", token, repr(op.text))
            fn = (lambda a, f, b: lambda c: f(a(c), b(c)))(fn, _arith(op.text), rhs)
        return fn, kind

    def unary(self):
        if self.at("-"):
            self.take("-")
            token = self.tok
            fn, kind = self.unary()
            self.expect_kind(kind, "num", token, "'-'")
            return (lambda a: lambda c: None if (v := a(c)) is None else -v)(fn), "num"
        return self.atom()

    def atom(self):
        tok = self.tok
        if tok.kind == "number":
            self.pos += 1
            value = float(tok.text)
            return (lambda c: value), "num"
        if tok.kind == "string":
            self.pos += 1
            value = tok.text[1:-1]
            return (lambda c: value), "str"
        if tok.kind == "op" and tok.text == "(":
            self.take("(")
            fn, kind = self.or_()
            self.take(")")
            return fn, kind
        if tok.kind != "name":
            self.fail("expected a number, a name or '('" if tok.kind != "end" else "the condition ends too early")
        self.pos += 1
        word = tok.text
        if word in ("true", "false"):
            value = word == "true"
            return (lambda c: value), "bool"
        if word in KEYWORDS:
            self.fail(f"unexpected {word!r}", tok)
        if self.at("("):
            return self.call(word, tok)
        if word in NAMES:
            if self.at("["):
                self.fail(f"{word!r} is not a parameter and cannot be indexed", self.tok)
            self.names.add(word)
            kind = "str" if word in STRING_NAMES else ("bool" if word in BOOL_NAMES else "num")
            fn = self.reads[word] = lambda c: c.value(word)
            return fn, kind
        if self.at("["):
            index = self.index()
            self.params.append((word, index, tok.column))
            fn = self.reads[f"{word}[{','.join(map(str, index))}]"] = lambda c: c.param(word, index)
            return fn, "num"
        if "." not in word:
            self.fail(f"unknown name {word!r} (names: {', '.join(NAMES)}; or a parameter such as 0.weight[0,1])", tok)
        if word.split(".")[0] in NAMES or word.split(".")[0] in FUNCTIONS or "._" in word or word.startswith("_"):
            self.fail(f"no attributes: {word!r} — a condition reads names and parameter elements only", tok)
        self.fail(f"a parameter needs an element index, such as {word}[0,0]", tok)

    def index(self) -> tuple[int, ...]:
        self.take("[")
        index = []
        while True:
            tok = self.tok
            if tok.kind != "number" or not re.fullmatch(r"\d+", tok.text):
                self.fail("an index is a whole number", tok)
            index.append(int(tok.text))
            self.pos += 1
            if self.at(","):
                self.take(",")
                continue
            self.take("]")
            return tuple(index)

    def call(self, word: str, tok: Token):
        if word not in FUNCTIONS:
            self.fail(f"unknown function {word!r} (functions: {', '.join(FUNCTIONS)})", tok)
        self.take("(")
        if word == "abs":
            arg_token = self.tok
            fn, kind = self.or_()
            self.expect_kind(kind, "num", arg_token, "abs()")
            self.take(")")
            return (lambda a: lambda c: None if (v := a(c)) is None else abs(v))(fn), "num"
        arg = self.tok
        if arg.kind != "name" or arg.text in NAMES or arg.text in KEYWORDS:
            self.fail(f"{word}() takes a parameter name, such as {word}(0.weight)", arg)
        self.pos += 1
        self.take(")")
        self.names.add(word)
        self.params.append((arg.text, None, arg.column))
        name = arg.text
        if word == "grad_norm":
            fn = lambda c: c.grad_norm(name)
        else:
            fn = lambda c: c.update_ratio(name)
        self.reads[f"{word}({name})"] = fn
        return fn, "num"


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
        phases: set[str] = set()
        for name in self.names:
            phases |= NAMES[name]
        if any(index is not None for _, index, _ in self.params):
            phases.add("update")
        return frozenset(phases) if phases else ALL_PHASES

    def check_names(self, shapes: Mapping[str, tuple[int, ...]] | tuple[str, ...] | list[str]) -> "Condition":
        """Refuse unknown parameters and (given shapes) indices out of range."""
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
    parser = _Parser(text, tokenize(text))
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
    parser = _Parser(text, tokenize(text))
    fn, kind = parser.parse()
    if kind != "bool":
        raise ConditionError(text, 1, "a condition must be true or false: compare it, as in \"loss < 0.01\"")
    return Condition(text, fn, frozenset(parser.names), tuple(parser.params), tuple(parser.reads.items()))

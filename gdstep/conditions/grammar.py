"""The recursive-descent parser of the condition grammar (see gdstep.conditions): it
compiles an expression into closures over a Context, checking names and types as it goes.

It cannot overflow the stack: nesting (parentheses, `not`, unary minus, abs()) is refused
beyond MAX_DEPTH levels, and the lexer refuses more than MAX_TOKENS tokens, which bounds
the depth of the compiled closures too."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from gdstep.conditions.lexer import Token
from gdstep.conditions.names import BOOL_NAMES, FUNCTIONS, KEYWORDS, LANE_NAMES, NAMES, STRING_NAMES, Fn
from gdstep.errors import ConditionError

MAX_DEPTH = 32


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
class Parser:
    text: str
    tokens: list[Token]
    pos: int = 0
    names: set = field(default_factory=set)
    params: list = field(default_factory=list)  # (name, index | None, column)
    reads: dict = field(default_factory=dict)   # label -> closure, for describe()
    depth: int = 0

    def deeper(self, token: Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"nested more than {MAX_DEPTH} deep", token)

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
            self.deeper(self.take("not"))
            token = self.tok
            fn, kind = self.not_()
            self.depth -= 1
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
            self.deeper(self.take("-"))
            token = self.tok
            fn, kind = self.unary()
            self.depth -= 1
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
            self.deeper(self.take("("))
            fn, kind = self.or_()
            self.take(")")
            self.depth -= 1
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
            if tok.kind != "number" or not re.fullmatch(r"\d{1,12}", tok.text):
                self.fail("an index is a whole number" + (" of at most 12 digits" if tok.text.isdigit() else ""), tok)
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
        if word == "lane":
            return self.lane(tok)
        if word == "abs":
            arg_token = self.tok
            self.deeper(arg_token)
            fn, kind = self.or_()
            self.depth -= 1
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

    def lane(self, tok: Token):
        """`lane(K).NAME`: a value of lane K (after `lanes`), read when the condition is."""
        number = self.tok
        if number.kind != "number" or not re.fullmatch(r"\d{1,2}", number.text):
            self.fail("lane() takes a lane's number, such as lane(2).loss", number)
        self.pos += 1
        self.take(")")
        if not (self.tok.kind == "op" and self.tok.text == "."):
            self.fail("a lane is read by name, such as lane(2).loss", self.tok)
        self.pos += 1
        field = self.tok
        k, name = int(number.text), field.text
        if field.kind == "name" and name not in LANE_NAMES and name not in KEYWORDS and "." in name:
            self.pos += 1
            if not self.at("["):
                self.fail(f"a parameter needs an element index, such as lane({k}).{name}[0,0]", self.tok)
            index = self.index()
            self.params.append((name, index, field.column))
            fn = self.reads[f"lane({k}).{name}[{','.join(map(str, index))}]"] = lambda c: c.lane_param(k, name, index)
            return fn, "num"
        if field.kind != "name" or name not in LANE_NAMES:
            self.fail(f"lane(K).NAME reads one of: {', '.join(LANE_NAMES)}, or an element such as lane(K).0.weight[0,0]",
                      field)
        self.pos += 1
        fn = self.reads[f"lane({k}).{name}"] = lambda c: c.lane_value(k, name)
        return fn, "num"

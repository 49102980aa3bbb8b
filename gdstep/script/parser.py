"""The command language of `.gds` scripts and the TUI's `:` prompt, parsed into Commands.

One command a line, `#` starts a comment:

    forward | loss | backward | update          one phase (it must be the one due)
    next [N]                                    the next N phases (default 1)
    step [N] | epoch [N]                        N iterations / epochs (breakpoints apply)
    run [until COND] [max N]                    run on (breakpoints, stop_when, the epoch limit apply)
    back [N] [phases|iterations]                rewind (default: 1 phase)
    set lr X | set optimizer KIND [k=v …] | set batch_size N|full | set HYPERPARAMETER X
    set epochs N                                how far `run` goes (the scenario's epoch limit)
    set stop_when COND | set stop_when none     replace (or drop) the scenario's stop condition
    break COND | unbreak N | unbreak all
    watch EXPR | unwatch EXPR                   printed after every command
    print EXPR | print NAME | print state NAME  a value, a whole tensor, an optimizer state
    gradcheck NAME[i,j]
    expect COND                                 replay exits 1 when it does not hold
    screenshot FILE.svg | export FILE.md | save FILE.gds   (each with --force to overwrite a file)
    say "text with {loss:.4f}"                  narration, values interpolated (gdstep.script.say)

Lines end at `\n` only (a CR before it is dropped); any other control character, U+2028
included, is refused, so a line looks in `grep` and `wc` as it runs. Every error carries the line and column of what is wrong. Conditions and expressions are
parsed by gdstep.conditions, never evaluated as Python.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gdstep.conditions import parse_condition, parse_expression
from gdstep.errors import ConditionError, ScriptError, suggest
from gdstep.records import PHASES
from gdstep.script import descent
from gdstep.script.descent import DESCENT_COMMANDS
from gdstep.text import char_name, unsafe_character

PHASE_COMMANDS = PHASES
COMMANDS = PHASE_COMMANDS + ("next", "step", "epoch", "run", "back", "set", "break", "unbreak", "watch", "unwatch",
                             "print", "gradcheck", "expect", "screenshot", "export", "save", "say") + DESCENT_COMMANDS
SET_KEYS = ("lr", "optimizer", "batch_size", "epochs", "stop_when")
MAX_DIGITS = 12                 # a count, a limit or an index: at most 999,999,999,999
MAX_SCRIPT = 1_000_000          # characters in a script
MAX_LINE = 10_000               # characters in a line
PARAM_INDEX = re.compile(r"^(?P<name>[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)\[(?P<index>\s*\d+\s*(?:,\s*\d+\s*)*)\]$")


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple
    text: str            # the canonical text, as recorded and printed
    line: int | None = None
    column: int = 1      # where the command starts on its line (1-based)
    source: str = ""     # the line as written

    def __str__(self) -> str:
        return self.text


class _Line:
    """One line being parsed: words with their columns, and errors that point at them."""

    def __init__(self, text: str, line: int | None, file: str | None):
        self.text, self.line, self.file = text, line, file

    def fail(self, column: int | None, message: str):
        raise ScriptError(self.file, self.line, column, message)


def strip_comment(text: str) -> str:
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return text[:i]
    return text


def _positive(line: _Line, word: str, column: int, what: str, allow_zero: bool = False) -> int:
    if not re.fullmatch(r"\d+", word):
        line.fail(column, f"{what} must be a whole number ≥ {0 if allow_zero else 1}, got {word!r}")
    if len(word.lstrip("0")) > MAX_DIGITS:
        line.fail(column, f"{what} is too large: at most {MAX_DIGITS} digits")
    n = int(word)
    if n < (0 if allow_zero else 1):
        line.fail(column, f"{what} must be at least {0 if allow_zero else 1}, got {n}")
    return n


def _number(line: _Line, word: str, column: int, what: str) -> float:
    if len(word) > 40:
        line.fail(column, f"{what} is too long a number ({len(word)} characters)")
    try:
        value = float(word)
    except ValueError:
        line.fail(column, f"{what} must be a number, got {word!r}")
    if value != value or value in (float("inf"), float("-inf")):
        line.fail(column, f"{what} must be a finite number, got {word!r}")
    return value


def parse_param_index(text: str) -> tuple[str, tuple[int, ...]] | None:
    m = PARAM_INDEX.match(text.strip())
    if not m or any(len(i.strip()) > MAX_DIGITS for i in m.group("index").split(",")):
        return None
    return m.group("name"), tuple(int(i) for i in m.group("index").split(","))


def _condition(line: _Line, text: str, column: int):
    try:
        return parse_condition(text)
    except ConditionError as e:
        line.fail(column + (e.column - 1 if e.column else 0), e.message)


def _expression(line: _Line, text: str, column: int):
    try:
        return parse_expression(text)
    except ConditionError as e:
        line.fail(column + (e.column - 1 if e.column else 0), e.message)


def _value(word: str):
    """A hyperparameter value in `set optimizer adam betas=0.9,0.99 amsgrad=true`."""
    if word in ("true", "false"):
        return word == "true"
    values = tuple(_finite(w) for w in word.split(","))
    return values if "," in word else values[0]


def _finite(word: str) -> float:
    if len(word) > 40:
        raise ValueError(word)
    value = float(word)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(word)
    return value


def parse_command(text: str, line: int | None = None, file: str | None = None) -> Command | None:
    """Parse one line; None for a blank or comment-only line. Raises ScriptError."""
    text = text.removesuffix("\n").removesuffix("\r")
    source = text
    if len(text) > MAX_LINE:
        raise ScriptError(file, line, None, f"the line is {len(text):,} characters long; at most {MAX_LINE:,}")
    bad = unsafe_character(text)
    if bad is not None:
        raise ScriptError(file, line, bad + 1, f"control character {char_name(text[bad])} is not allowed in a command")
    body = strip_comment(text).rstrip()
    stripped = body.lstrip()
    if not stripped:
        return None
    start = len(body) - len(stripped) + 1  # 1-based column of the command word
    if stripped.startswith(":"):
        stripped, start = stripped[1:].lstrip(), start + 1 + (len(stripped[1:]) - len(stripped[1:].lstrip()))
    ln = _Line(source, line, file)
    word, _, rest_raw = stripped.partition(" ")
    rest = rest_raw.strip()
    rest_col = start + len(word) + 1 + (len(rest_raw) - len(rest_raw.lstrip()))
    if word not in COMMANDS:
        ln.fail(start, f"unknown command {word!r}" + suggest(word, COMMANDS, "commands"))

    def make(args: tuple, canonical: str) -> Command:
        return Command(word, args, canonical, line, start, source)

    def no_args():
        if rest:
            ln.fail(rest_col, f"{word} takes no arguments")

    if word in PHASE_COMMANDS:
        no_args()
        return make((), word)
    if word in DESCENT_COMMANDS:
        return descent.parse(word, rest, rest_col, make, ln.fail, lambda text, c: _condition(ln, text, c),
                             lambda w, c, what: _positive(ln, w, c, what))
    if word in ("next", "step", "epoch"):
        if not rest:
            return make((1,), word)
        parts = rest.split()
        if len(parts) > 1:
            ln.fail(rest_col + len(parts[0]) + 1, f"{word} takes one number")
        n = _positive(ln, parts[0], rest_col, "the count")
        return make((n,), f"{word} {n}" if n != 1 else word)
    if word == "run":
        return _parse_run(ln, rest, rest_col, make)
    if word == "back":
        parts = rest.split()
        n, unit = 1, "phases"
        if parts:
            n = _positive(ln, parts[0], rest_col, "the count", allow_zero=True)
        if len(parts) > 1:
            unit = {"phase": "phases", "phases": "phases", "iteration": "iterations", "iterations": "iterations"}.get(parts[1])
            if unit is None:
                ln.fail(rest_col + len(parts[0]) + 1, f"expected 'phases' or 'iterations', got {parts[1]!r}")
        if len(parts) > 2:
            ln.fail(None, "back takes a number and a unit at most: back 3 iterations")
        canonical = "back" if (n, unit) == (1, "phases") else (f"back {n}" if unit == "phases" else f"back {n} iterations")
        return make((n, unit), canonical)
    if word == "set":
        return _parse_set(ln, rest, rest_col, make)
    if word in ("break", "expect"):
        if not rest:
            ln.fail(rest_col, f"{word} needs a condition, such as: {word} loss < 0.1")
        cond = _condition(ln, rest, rest_col)
        return make((cond,), f"{word} {rest}")
    if word == "unbreak":
        if not rest:
            ln.fail(rest_col, "unbreak needs the breakpoint's number, such as: unbreak 1 (or: unbreak all)")
        if rest == "all":
            return make((None,), "unbreak all")
        return make((_positive(ln, rest, rest_col, "the breakpoint number"),), f"unbreak {int(rest)}")
    if word in ("watch", "unwatch"):
        if not rest:
            ln.fail(rest_col, f"{word} needs a value, such as: {word} 2.weight[0,1]")
        if word == "unwatch" and rest == "all":
            return make((None,), "unwatch all")
        return make((_expression(ln, rest, rest_col),), f"{word} {rest}")
    if word == "print":
        if not rest:
            ln.fail(rest_col, "print needs something to print: loss, a parameter, NAME[i,j] or state NAME")
        if rest.startswith("state ") or rest == "state":
            name = rest[5:].strip()
            if not name:
                ln.fail(rest_col + 6, "print state needs a parameter name, such as: print state 0.weight")
            return make(("state", name), f"print state {name}")
        if re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)+", rest) and not re.fullmatch(r"[\d.]+", rest):
            return make(("tensor", rest), f"print {rest}")
        return make(("value", _expression(ln, rest, rest_col)), f"print {rest}")
    if word == "gradcheck":
        target = parse_param_index(rest)
        if target is None:
            ln.fail(rest_col, "gradcheck needs one element, such as: gradcheck 0.weight[0,1]")
        return make(target, f"gradcheck {target[0]}[{','.join(map(str, target[1]))}]")
    if word == "say":
        return _parse_say(ln, rest, rest_col, make)
    if word in ("screenshot", "export", "save"):
        suffix = {"screenshot": ".svg", "export": ".md", "save": ".gds"}[word]
        force = rest == "--force" or rest.endswith(" --force") or rest.startswith("--force ")
        if force:
            rest = rest[8:].strip() if rest.startswith("--force") else rest[:-8].strip()
        if not rest:
            ln.fail(rest_col, f"{word} needs a file name, such as: {word} out{suffix}")
        if len(rest.split()) > 1 and not (rest[0] in "\"'" and rest[-1] == rest[0]):
            ln.fail(rest_col, f"{word} takes one file name (quote a name with spaces)")
        path = rest[1:-1] if rest[0] in "\"'" else rest
        if not path.endswith(suffix):
            ln.fail(rest_col, f"{word} writes a {suffix} file, got {path!r}")
        return make((path, force), f"{word} {rest}" + (" --force" if force else ""))
    raise AssertionError(word)  # pragma: no cover - every command is handled above


def _parse_run(ln: _Line, rest: str, col: int, make) -> Command:
    until = None
    max_steps = None
    text = rest
    m = re.search(r"(^|\s)max\s+(\S+)\s*$", text)
    if m:
        max_col = col + m.start(2)
        max_steps = _positive(ln, m.group(2), max_col, "max")
        text = text[:m.start()].rstrip()
    m2 = re.match(r"max\s+(\S+)(\s+|$)", text)
    if m2 and max_steps is None:
        max_steps = _positive(ln, m2.group(1), col + m2.start(1), "max")
        text = text[m2.end():]
        col += m2.end()
    if text:
        if not text.startswith("until"):
            ln.fail(col, f"expected 'until CONDITION' or 'max N' after run, got {text.split()[0]!r}")
        cond_text = text[5:].strip()
        if not cond_text:
            ln.fail(col + 5, "until needs a condition, such as: run until loss < 0.01")
        until = _condition(ln, cond_text, col + len(text) - len(text[5:].lstrip()))
    canonical = "run" + (f" until {until.text}" if until else "") + (f" max {max_steps}" if max_steps else "")
    return make((until, max_steps), canonical)


def _parse_say(ln: _Line, rest: str, col: int, make) -> Command:
    """`say "text"`: one double-quoted string; its fields are parsed here (gdstep.script.say)."""
    from gdstep.script.say import SayError, parse_say
    if len(rest) < 2 or rest[0] != '"' or rest[-1] != '"':
        ln.fail(col, 'say takes one text in double quotes, such as: say "the loss is {loss:.4f}"')
    text = rest[1:-1]
    if '"' in text:
        ln.fail(col + 1 + text.index('"'), "a say text cannot hold a double quote: use ' or “ ” inside it")
    try:
        say = parse_say(text)
    except SayError as e:
        ln.fail(col + e.column, e.message)
    return make((say,), f"say {rest}")


def _parse_set(ln: _Line, rest: str, col: int, make) -> Command:
    parts = rest.split()
    if not parts:
        ln.fail(col, "set needs a setting: set lr 0.1 | set optimizer adam | set batch_size 8")
    key = parts[0]
    value_col = col + len(key) + 1
    if len(parts) < 2:
        ln.fail(value_col, f"set {key} needs a value")
    group = None                 # set lr 0.1 group=1: one param group (group=all: every group)
    if key not in ("optimizer", "stop_when") and len(parts) == 3 and parts[2].startswith("group="):
        word = parts[2][6:]
        group_col = value_col + len(parts[1]) + 7
        group = "all" if word == "all" else _positive(ln, word, group_col, "the param group", allow_zero=True)
        parts = parts[:2]
    if key == "lr":
        if len(parts) > 2:
            ln.fail(value_col, "set lr takes one number (and group=N for one param group)")
        lr = _number(ln, parts[1], value_col, "the learning rate")
        if lr < 0:
            ln.fail(value_col, f"the learning rate must be >= 0, got {parts[1]}")
        if group is not None:
            return make(("lr", lr, group), f"set lr {parts[1]} group={group}")
        return make(("lr", lr), f"set lr {parts[1]}")
    if group is not None and key in ("epochs", "batch_size"):
        ln.fail(value_col + len(parts[1]) + 1, f"set {key} is not a param group's: it takes no group=")
    if key == "stop_when":
        text = rest[len(key):].strip()
        if text == "none":
            return make(("stop_when", None), "set stop_when none")
        cond = _condition(ln, text, value_col + (len(rest[len(key):]) - len(rest[len(key):].lstrip()) - 1))
        return make(("stop_when", cond.text), f"set stop_when {cond.text}")
    if key == "epochs":
        if len(parts) > 2:
            ln.fail(value_col, "set epochs takes one number")
        return make(("epochs", _positive(ln, parts[1], value_col, "the epoch limit")), f"set epochs {int(parts[1])}")
    if key == "batch_size":
        if len(parts) > 2:
            ln.fail(value_col, "set batch_size takes one value")
        size = "full" if parts[1] == "full" else _positive(ln, parts[1], value_col, "the batch size")
        return make(("batch_size", size), f"set batch_size {size}")
    if key == "optimizer":
        from gdstep.optim import OPTIMIZERS
        kind = parts[1]
        if kind not in OPTIMIZERS:
            ln.fail(value_col, f"unknown optimizer {kind!r} (expected one of: {', '.join(OPTIMIZERS)})")
        options = {}
        c = value_col + len(kind) + 1
        for part in parts[2:]:
            name, eq, value = part.partition("=")
            if not eq or not name or not value:
                ln.fail(c, f"expected NAME=VALUE, such as lr=0.01, got {part!r}")
            try:
                options[name] = _value(value)
            except ValueError:
                ln.fail(c + len(name) + 1, f"{name}: expected a finite number, true/false or numbers separated by commas, got {value!r}")
            c += len(part) + 1
        return make(("optimizer", kind, tuple(options.items())), "set " + " ".join(parts))
    # any other key: a hyperparameter of the current optimizer (momentum, betas, weight_decay, …)
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", key):
        ln.fail(col, f"unknown setting {key!r} (lr, optimizer, batch_size, or a hyperparameter of the optimizer)")
    if len(parts) > 2:
        ln.fail(value_col, f"set {key} takes one value")
    try:
        value = _value(parts[1])
    except ValueError:
        ln.fail(value_col, f"{key}: expected a finite number, true/false or numbers separated by commas, got {parts[1]!r}")
    if group is not None:
        return make(("hyperparameter", key, value, group), f"set {key} {parts[1]} group={group}")
    return make(("hyperparameter", key, value), f"set {key} {parts[1]}")


def parse_script(text: str, file: str | None = None) -> list[Command]:
    """Every command of a script, in order; the first error raises ScriptError. Lines end at
    `\n` only (str.splitlines would also split at U+2028, U+0085, form feed and CR, hiding a
    command from `grep`); a BOM at the start is dropped."""
    if len(text) > MAX_SCRIPT:
        raise ScriptError(file, None, None, f"the script is {len(text):,} characters long; at most {MAX_SCRIPT:,}")
    commands = []
    for number, line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        line = line.removesuffix("\r")
        command = parse_command(line, number, file)
        if command is not None:
            commands.append(command)
    return commands

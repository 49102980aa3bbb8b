"""Reading a scenario's TOML: typed gets from one table, unknown keys reported with a
suggestion, and every error naming the file and the key path (or the line)."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import numpy as np

from gdstep.errors import ScenarioError, suggest
from gdstep.text import clean

_REQUIRED = object()


def type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(value), type(value).__name__)


class Table:
    """One TOML table being read: typed gets, and unknown keys reported with a suggestion."""

    def __init__(self, data: Any, path: str, file: str):
        self.file, self.path = file, path
        if not isinstance(data, dict):
            self.fail(path, f"expected a table, got {type_name(data)}")
        self.data, self.used = data, set()

    def key_path(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        shown = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else '"' + clean(key)[:40] + '"'   # a stranger's key, printed
        return f"{self.path}.{shown}" if self.path else shown

    def fail(self, where: str, message: str):
        raise ScenarioError(self.file, where, message)

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = _REQUIRED) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is _REQUIRED:
                self.fail(self.key_path(key), self._missing(key))
            return default
        return check_type(self.data[key], kind, self.key_path(key), self.file)

    def table(self, key: str, required: bool = False) -> "Table":
        self.used.add(key)
        if key not in self.data:
            if required:
                self.fail(self.key_path(key), self._missing(key))
            return Table({}, self.key_path(key), self.file)
        return Table(self.data[key], self.key_path(key), self.file)

    def _missing(self, key: str) -> str:
        """ "missing", naming a key of the table that looks like it misspelled (`[optimiser]`)."""
        import difflib
        near = difflib.get_close_matches(key, [k for k in self.data if isinstance(k, str) and k not in self.used], n=1)
        return f"missing (the file has {self.key_path(near[0])!r}: misspelled?)" if near else "missing"

    def done(self, allowed: list[str] | None = None) -> None:
        for key in self.data:
            if key not in self.used:
                options = allowed if allowed is not None else sorted(self.used)
                self.fail(self.key_path(key), f"unknown key{suggest(key, options)}")


def check_type(value: Any, kind: type | tuple[type, ...], where: str, file: str) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds)
    if not ok:
        wanted = " or ".join(type_name(k()) for k in kinds)
        shown = ("true" if value else "false") if isinstance(value, bool) else repr(value)     # TOML's spelling
        raise ScenarioError(file, where, f"expected {wanted}, got {type_name(value)} {shown if len(shown) <= 60 else shown[:59] + '…'}")
    if isinstance(value, float) and not np.isfinite(value):
        raise ScenarioError(file, where, f"must be a finite number, got {value}")
    return value


def numeric_array(value: Any, where: str, file: str, ndim: tuple[int, ...] = (1, 2)) -> np.ndarray:
    try:
        arr = np.array(value, dtype=float)
    except (ValueError, TypeError):
        raise ScenarioError(file, where, "expected a list of numbers (or a list of equal-length lists)") from None
    if arr.ndim not in ndim or arr.size == 0:
        raise ScenarioError(file, where, f"expected a non-empty {' or '.join(f'{d}-D' for d in ndim)} list of numbers, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ScenarioError(file, where, "values must be finite")
    return arr


def toml_error(file: str, e: tomllib.TOMLDecodeError, text: str = "") -> ScenarioError:
    message = str(e)
    if "(at end of document)" in message:
        lines = text.rstrip("\n").count("\n") + 1 if text else None
        message = message.replace("(at end of document)", "").strip()
        where = f"line {lines}, end of file" if lines else "end of file"
        return ScenarioError(file, where, f"invalid TOML: {message[:1].lower() + message[1:]}")
    m = re.search(r"\(at line (\d+), column (\d+)\)", message)
    if m:
        message = message[: m.start()].strip()
        return ScenarioError(file, f"line {m.group(1)}, column {m.group(2)}", f"invalid TOML: {message[:1].lower() + message[1:]}")
    return ScenarioError(file, None, f"invalid TOML: {message}")

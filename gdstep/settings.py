"""Settings changed during a session (optimizer, lr, batch size), logged by the step they
take effect at, so that a rewind past a change undoes it and a replay redoes it.

A change takes effect at the start of an iteration. Made after a rewind, it starts a new
branch: the changes logged beyond it no longer hold. `changes()` validates a request once
and turns it into the values to log.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from gdstep.errors import GdstepError

SETTINGS = ("optimizer", "lr", "batch_size")


class SettingsLog:
    def __init__(self) -> None:
        self._log: dict[int, dict[str, Any]] = {}

    def __bool__(self) -> bool:
        return bool(self._log)

    def at(self, step: int) -> dict[str, Any]:
        """The changes that take effect at the start of iteration `step` (empty: none)."""
        return self._log.get(step, {})

    def pending(self, step: int, key: str, current: Any) -> Any:
        """A setting as it will be when iteration `step` starts; the optimizer with its lr."""
        entry = self._log.get(step)
        if not entry:
            return current
        value = entry.get(key, current)
        if key == "optimizer" and "lr" in entry and dataclasses.is_dataclass(value):
            value = dataclasses.replace(value, lr=entry["lr"])
        return value

    def record(self, at: int, changes: dict[str, Any]) -> None:
        """Log `changes` at step `at`, dropping what was logged beyond it (a new branch). A
        new optimizer replaces an lr change logged at the same step."""
        for step in [s for s in self._log if s > at]:
            del self._log[step]
        entry = self._log.setdefault(at, {})
        if "optimizer" in changes:
            entry.pop("lr", None)
        entry.update(changes)


def changes(current, lr: float | None = None, optimizer: Any = None, batch_size: int | str | None = None,
            **hyperparameters: Any) -> dict[str, Any]:
    """The validated values of a `set`: a new optimizer config, an lr, a batch size (None
    for the full batch). `optimizer` is a kind (`"adam"`) or a config; a new kind keeps the
    current lr unless `lr` is given; hyperparameters alone edit the current optimizer."""
    from gdstep.optim import make_optimizer

    out: dict[str, Any] = {}
    if optimizer is not None or hyperparameters:
        if optimizer is None:
            kind = current.kind
        elif isinstance(optimizer, str):
            kind = optimizer
        else:
            kind = None
        if kind is not None:
            args = dict(hyperparameters)
            args.setdefault("lr", current.lr if lr is None else lr)
            if kind == current.kind and optimizer is None:
                base = {f.name: getattr(current, f.name) for f in dataclasses.fields(current)}
                base.update(args)
                args = base
            try:
                out["optimizer"] = make_optimizer(kind, **args)
            except (ValueError, TypeError) as e:
                raise GdstepError(f"set optimizer: {e}") from None
        else:
            out["optimizer"] = optimizer
    elif lr is not None:
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr < 0:
            raise GdstepError(f"set lr: the learning rate must be a number >= 0, got {lr!r}")
        out["lr"] = float(lr)
    if batch_size is not None:
        if batch_size == "full":
            out["batch_size"] = None
        elif isinstance(batch_size, int) and not isinstance(batch_size, bool) and batch_size >= 1:
            out["batch_size"] = batch_size
        else:
            raise GdstepError(f"set batch_size: expected a positive integer or \"full\", got {batch_size!r}")
    if not out:
        raise GdstepError("set: nothing to change (lr, optimizer or batch_size)")
    return out


def describe(key: str, value: Any) -> str:
    """A logged change as the event log shows it: `adam(lr=0.01, …)`, `full`, `0.1`."""
    if key == "optimizer":
        if dataclasses.is_dataclass(value):
            args = ", ".join(f"{f.name}={getattr(value, f.name)!r}" for f in dataclasses.fields(value))
            return f"{value.kind}({args})"
        return repr(value)
    return "full" if value is None else str(value)

"""Settings changed during a session (optimizer, lr, batch size), logged by the step they
take effect at, so that a rewind past a change undoes it and a replay redoes it.

A change takes effect at the start of an iteration. Made after a rewind, it starts a new
branch: the changes logged beyond it no longer hold. `changes()` validates a request once
and turns it into the values to log.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from gdstep.errors import GdstepError



class SettingsLog:
    def __init__(self) -> None:
        self._log: dict[int, dict[str, Any]] = {}

    def __bool__(self) -> bool:
        return bool(self._log)

    def copy(self) -> "SettingsLog":
        twin = SettingsLog()
        twin._log = {step: dict(entry) for step, entry in self._log.items()}
        return twin

    def at(self, step: int) -> dict[str, Any]:
        """The changes that take effect at the start of iteration `step` (empty: none)."""
        return self._log.get(step, {})

    def pending(self, step: int, key: str, current: Any) -> Any:
        """A setting as it will be when iteration `step` starts; the optimizer with its edits
        and lr."""
        entry = self._log.get(step)
        if not entry:
            return current
        if key != "optimizer":
            return entry.get(key, current)
        value = entry.get("edit", entry.get("optimizer", current))
        if "lr" in entry and dataclasses.is_dataclass(value):
            value = dataclasses.replace(value, lr=entry["lr"])
        first = entry.get("groups", {}).get(0, {})
        if "lr" in first and dataclasses.is_dataclass(value):     # the lr shown is group 0's
            value = dataclasses.replace(value, lr=first["lr"])
        return value

    def record(self, at: int, changes: dict[str, Any]) -> None:
        """Log `changes` at step `at`, dropping what was logged beyond it (a new branch). A
        new optimizer replaces an lr change logged at the same step."""
        for step in [s for s in self._log if s > at]:
            del self._log[step]
        entry = self._log.setdefault(at, {})
        changes = dict(changes)
        if "optimizer" in changes:
            entry.pop("lr", None)
            entry.pop("edit", None)
        elif "edit" in changes and "optimizer" in entry:     # an edit of an optimizer not started yet
            entry["optimizer"] = changes.pop("edit")
        if "edit" in changes or "optimizer" in changes:
            entry.pop("lr", None)                            # the config carries the lr in force
        if "groups" in changes and "groups" in entry:        # two changes at one step: each group's keys merged
            merged = {i: dict(g) for i, g in entry["groups"].items()}
            for i, g in changes.pop("groups").items():
                merged.setdefault(i, {}).update(g)
            entry["groups"] = merged
        entry.update(changes)


def _refuse_non_finite(values: dict[str, Any]) -> None:
    """nan and inf are refused here as a scenario file refuses them (torch.optim takes some)."""
    for key, value in values.items():
        for v in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(v, float) and not math.isfinite(v):
                raise GdstepError(f"set {key}: must be a finite number, got {v}")


def changes(current, lr: float | None = None, optimizer: Any = None, batch_size: int | str | None = None,
            param_groups: list[dict] | None = None, group: int | str | None = None,
            **hyperparameters: Any) -> dict[str, Any]:
    """The validated values of a `set`, keyed as the log keeps them:

    - `optimizer`: a new optimizer with fresh state — a kind (`"adam"`) with its arguments,
      taking torch's default lr for that kind unless `lr` is given; or a config as it is;
    - `edit`: hyperparameters alone (`momentum=0.5`), an edit of the current optimizer that
      keeps its state, as a torch `param_groups` edit does;
    - `lr`, and `batch_size` (None for the full batch).
    """
    from gdstep.optim import make_optimizer

    out: dict[str, Any] = {}
    _refuse_non_finite(dict(hyperparameters, **({} if lr is None else {"lr": lr})))
    several = param_groups is not None and len(param_groups) > 1
    if group is not None or (several and optimizer is None and (lr is not None or hyperparameters)):
        if optimizer is not None or batch_size is not None:
            raise GdstepError("set: group= goes with lr or a hyperparameter, not with optimizer or batch_size")
        count = len(param_groups) if param_groups is not None else 1
        if group != "all" and (not isinstance(group, int) or isinstance(group, bool) or not 0 <= group < count) \
                and group is not None:
            raise GdstepError(f"set: no param group {group!r} (the optimizer has {count}: 0 to {count - 1}, or all)")
        if several:
            return {"groups": _group_changes(param_groups, group, lr, hyperparameters)}
    if optimizer is not None:
        if isinstance(optimizer, str):
            args = dict(hyperparameters)
            if lr is not None:
                args["lr"] = lr
            try:
                out["optimizer"] = make_optimizer(optimizer, **args)
            except (ValueError, TypeError) as e:
                raise GdstepError(f"set optimizer: {e}") from None
        else:
            out["optimizer"] = optimizer
    elif hyperparameters:
        args = {f.name: getattr(current, f.name) for f in dataclasses.fields(current)}
        args.update(hyperparameters)
        if lr is not None:
            args["lr"] = lr
        try:
            out["edit"] = make_optimizer(current.kind, **args)
        except (ValueError, TypeError) as e:
            raise GdstepError(f"set {' '.join(hyperparameters)}: {e}") from None
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
        raise GdstepError("set: nothing to change (lr, optimizer, a hyperparameter or batch_size)")
    return out


def _group_changes(param_groups: list[dict], group: int | str | None, lr: float | None,
                   hyperparameters: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """{group: {key: value}} for `set KEY V [group=N|all]` on an optimizer with several param
    groups. Without group=, a key the groups hold different values of is refused: which
    group was meant is not for gdstep to guess."""
    values = dict(hyperparameters)
    if lr is not None:
        if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not math.isfinite(lr) or lr < 0:
            raise GdstepError(f"set lr: the learning rate must be a number >= 0, got {lr!r}")
        values["lr"] = float(lr)
    chosen = range(len(param_groups)) if group in (None, "all") else [group]
    for key in values:
        for i in chosen:
            if key not in param_groups[i]:
                held = ", ".join(k for k in param_groups[i] if k != "params")
                raise GdstepError(f"set {key}: param group {i} has no {key} (it has {held})")
        if group is None and len({repr(param_groups[i][key]) for i in chosen}) > 1:
            now = ", ".join(f"group {i}: {param_groups[i][key]!r}" for i in chosen)
            raise GdstepError(f"set {key}: the optimizer's {len(param_groups)} param groups differ ({now}); "
                              f"say which: set {key} V group=N, or group=all for every group")
    return {i: dict(values) for i in chosen}


def missing_state(edited, state: Mapping[str, Any]) -> list[str]:
    """State an edited optimizer needs that the current state lacks (RMSprop's momentum
    buffer when momentum is switched on): torch's step fails there, so the edit is refused.
    State the update starts itself (SGD's momentum buffer, None at first) is not missing."""
    wanted = edited.init(np.zeros(1))
    return [k for k, v in wanted.items() if v is not None and k not in state]


def describe(key: str, value: Any) -> str:
    """A logged change as the event log shows it."""
    if key == "optimizer":
        if dataclasses.is_dataclass(value):
            return f"{_config(value)}, fresh state"
        return repr(value)
    if key == "edit":
        return f"{_config(value)}, state kept (a param_groups edit)"
    if key == "groups":
        return "; ".join(f"group {i}: " + ", ".join(f"{k}={v!r}" for k, v in values.items())
                         for i, values in value.items()) + " (state kept)"
    return "full" if value is None else str(value)


def _config(opt: Any) -> str:
    args = ", ".join(f"{f.name}={getattr(opt, f.name)!r}" for f in dataclasses.fields(opt))
    return f"{opt.kind}({args})"

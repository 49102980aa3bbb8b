"""What the screen shows of a user's own loop (attach mode, Python scenarios) beyond a
scenario: the lr in force for the shown iteration (each param group's) and the scheduler
that sets it, each group's hyperparameters, the model's named outputs. Read on the thread
that owns the session (frame_builder.py). This module does not import Textual."""

from __future__ import annotations

import dataclasses
from typing import Any

from gdstep import arrays
from gdstep.fmt import hp
from gdstep.tui.frame import BatchRow


def _groups(b) -> list | None:
    return getattr(getattr(b, "torch_optimizer", None), "param_groups", None)


def _plain(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


def lrs_in_force(s) -> tuple[float, ...]:
    """Each param group's lr in force for the shown iteration: after an update, the one that
    update used; in the middle of an iteration (or before the next), the one its update will use."""
    b, groups = s.backend, _groups(s.backend)
    if not groups or not hasattr(b, "group_hyperparameters"):
        return (float(s.lr),)
    rec = s.record("update") if s.last_phase == "update" else None
    if rec is not None:
        if len(groups) == 1:
            return (float(rec.lr),)
        return tuple(float(cfg.lr) for cfg in _group_configs(b, rec.step))
    return tuple(_plain(g["lr"]) for g in groups)


def _group_configs(b, step: int | None) -> list:
    """Each group's optimizer config as it was in the update of `step` (None: now)."""
    return [b.config_for(g["params"][0], step) for g in b.group_hyperparameters() if g["params"]]


def scheduler_name(s) -> str | None:
    return getattr(s.backend, "scheduler_name", None)


def several_groups(s) -> bool:
    groups = _groups(s.backend)
    return bool(groups) and len(groups) > 1 and hasattr(s.backend, "config_for")


def hyperparameters(config: Any, only: list[str] | None = None) -> str:
    """`lr=0.1, momentum=0.9`: an optimizer config's fields (`only` these)."""
    if not dataclasses.is_dataclass(config):
        return repr(config)
    parts = []
    for f in dataclasses.fields(config):
        if only is not None and f.name not in only:
            continue
        value = getattr(config, f.name)
        if isinstance(value, bool):
            parts.append(f"{f.name}={str(value).lower()}")
        elif isinstance(value, (int, float)):
            parts.append(f"{f.name}={hp(value)}")
        elif isinstance(value, tuple):
            parts.append(f"{f.name}=({', '.join(hp(v) if isinstance(v, (int, float)) else str(v) for v in value)})")
        else:
            parts.append(f"{f.name}={value}")
    return ", ".join(parts)


def group_lines(s, name: str, step: int | None) -> tuple[str, ...]:
    """A line per param group: its lr and the hyperparameters where the groups differ (as in
    the update of `step`; None: as now), and its parameters; `▸` marks the group of `name`."""
    b = s.backend
    groups = b.group_hyperparameters()
    mine = b.group_of(name)
    configs = _group_configs(b, step)
    fields = [f.name for f in dataclasses.fields(configs[0])] if dataclasses.is_dataclass(configs[0]) else []
    differ = ["lr"] + [k for k in fields if k != "lr" and len({repr(getattr(c, k, None)) for c in configs}) > 1]
    lines = [f"param groups ({'in update ' + str(step + 1) if step is not None else 'now'}):"]
    for i, (g, cfg) in enumerate(zip(groups, configs)):
        params = ", ".join(g["params"][:2]) + (f", … ({len(g['params'])})" if len(g["params"]) > 2 else "")
        lines.append(f"{'▸' if i == mine else ' '} group {i}: {hyperparameters(cfg, differ)} · {params}")
    return tuple(lines)


def output_shapes(b) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """The model's named outputs and their shapes, where it returns more than one tensor."""
    named = getattr(b, "named_outputs", None) or []
    if len(named) < 2:
        return ()
    return tuple((n, tuple(int(d) for d in t.shape)) for n, t in named)


def output_rows(b, size: int, shown: int, units: int, notes: list[str]) -> list[BatchRow]:
    """Rows of the batch view for each output tensor of a model that returns several (a
    VAE's reconstruction, mu and logvar): `mu[0]` for output['mu'], `o1[0]` for output[1]."""
    named = getattr(b, "named_outputs", None) or []
    if len(named) < 2:
        return []
    rows = []
    for n, t in named:
        symbol = short_name(n)
        shp = tuple(t.shape)
        if not shp or shp[0] != size:
            notes.append(f"{n}: shape {shp}, not a row per sample")
            continue
        values = arrays.to_numpy(t[:shown]).reshape(shown, -1)
        cols = values.shape[1]
        for j in range(min(cols, units)):
            rows.append(BatchRow(f"{symbol}[{j}]", values[:, j].astype(float), "output"))
        notes.append(f"{symbol} = {n}" + (f": {min(cols, units)} of {cols} units shown" if cols > units else ""))
    return rows


def short_name(name: str) -> str:
    """output['mu'] → mu, output[1] → o1, output[1][0] → o1.0 (fits the batch view's labels)."""
    keys = [k.strip("'\"") for k in name.removeprefix("output").strip("[]").split("][") if k]
    if len(keys) == 1 and not keys[0].isdigit():
        return keys[0][:6]
    return "o" + ".".join(keys)[:4]


__all__ = ["lrs_in_force", "scheduler_name", "several_groups", "group_lines", "hyperparameters", "output_shapes",
           "output_rows", "short_name"]

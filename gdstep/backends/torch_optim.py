"""gdstep's optimizer configs and torch.optim optimizers, mapped both ways.

A torch optimizer that gdstep has the formula for (one that a gdstep.optim class names in its
`torch_twins`, with one set of hyperparameters, not maximizing) maps to that class's config,
so `explain` shows its terms; nothing here names an optimizer. Any other becomes an opaque config: a frozen dataclass
named after the torch class with its hyperparameters as fields and no `terms`, so the
debugger shows its state and ΔW without a formula, and `set lr` still works.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from gdstep.errors import GdstepError
from gdstep.optim import OPTIMIZERS, hyperparameters, make_optimizer

# The group keys that choose an implementation (loops, foreach, fused), not the arithmetic.
IMPLEMENTATION_KEYS = frozenset({"foreach", "fused", "capturable", "differentiable"})


def _torch_class(name: str) -> type | None:
    import torch
    return getattr(torch.optim, name, None)


def torch_classes() -> dict[str, type]:
    """Each gdstep optimizer's torch.optim class, the one `build` makes: its first twin."""
    return {kind: _torch_class(cls.torch_twins[0][0]) for kind, cls in OPTIMIZERS.items()}


def _is_twin(cls: type, optimizer) -> bool:
    """Whether the torch optimizer is one of the spellings `cls.torch_twins` names."""
    group = optimizer.param_groups[0]
    return any(type(optimizer) is _torch_class(name) and all(bool(group.get(k, False)) == v for k, v in flags.items())
               for name, flags in getattr(cls, "torch_twins", ()))


def twin_formula(optimizer) -> Any:
    """gdstep's optimizer (its default values) whose formula this torch optimizer follows in
    every group, whatever each group's values; None for one gdstep has no formula for. What
    bounds an update where the groups' values differ (`Optimizer.bound_after` reads each
    group's own)."""
    kind = next((kind for kind, cls in OPTIMIZERS.items() if _is_twin(cls, optimizer)), None)
    return None if kind is None else make_optimizer(kind)


_PLAIN = {float, int, bool, str}


def _plain(value: Any) -> Any:
    """A hyperparameter as a plain Python value (torch allows tensors for lr and betas)."""
    if value is None or type(value) in _PLAIN:
        return value
    if type(value).__module__.startswith("torch"):
        return value.item() if value.numel() == 1 else tuple(value.tolist())
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    return value


def group_hyperparameters(group: dict) -> dict[str, Any]:
    return {k: _plain(v) for k, v in group.items() if k != "params"}


_OPAQUE: dict[tuple, type] = {}


def _opaque_class(torch_class: type, names: tuple[str, ...]) -> type:
    key = (torch_class, names)
    cls = _OPAQUE.get(key)
    if cls is None:
        fields = [("lr", float)] + [(n, Any) for n in names if n != "lr"]
        cls = dataclasses.make_dataclass(torch_class.__name__, fields, frozen=True, namespace={
            "kind": torch_class.__name__, "torch_class": torch_class,
            "__doc__": f"{torch_class.__name__}: a torch optimizer gdstep has no formula for."})
        _OPAQUE[key] = cls
    return cls


def is_opaque(config: Any) -> bool:
    return hasattr(type(config), "torch_class")


def config_of(optimizer) -> Any:
    """The gdstep config that describes this torch optimizer exactly, or an opaque one."""
    groups = [group_hyperparameters(g) for g in optimizer.param_groups]
    first = groups[0]
    uniform = all(g == first for g in groups[1:])
    kind = next((kind for kind, cls in OPTIMIZERS.items() if _is_twin(cls, optimizer)), None)
    if kind is not None and uniform and not first.get("maximize") and not first.get("differentiable"):
        names = [f.name for f in dataclasses.fields(OPTIMIZERS[kind])]
        try:
            return make_optimizer(kind, **{n: first[n] for n in names if n in first})
        except (ValueError, TypeError):
            pass
    shown = {k: v for k, v in first.items() if k not in IMPLEMENTATION_KEYS}
    cls = _opaque_class(type(optimizer), tuple(shown))
    lr = shown.get("lr", math.nan)
    return cls(lr=float(lr) if isinstance(lr, (int, float)) else math.nan,
               **{k: v for k, v in shown.items() if k != "lr"})


def _check_fits(config: Any, dtype) -> None:
    """A hyperparameter the parameters' dtype cannot hold (`lr 1e308` in float32) is refused in
    one line here; torch would fail inside step() with a RuntimeError."""
    import torch
    if dtype is None or not dtype.is_floating_point:
        return
    top = torch.finfo(dtype).max
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, float) and not isinstance(v, bool) and math.isfinite(v) and abs(v) > top:
                raise GdstepError(f"{f.name} {v:g} does not fit in {str(dtype).removeprefix('torch.')} "
                                  f"(at most {top:.4g}); choose a smaller value or dtype = \"float64\"")


def build(config: Any, params: list) -> Any:
    """A new torch optimizer for `config` over `params` (fresh state). With every parameter
    frozen it steps over one placeholder that never has a gradient (torch refuses an empty
    list; the numpy engine simply updates nothing)."""
    if not params:
        import torch
        params = [torch.nn.Parameter(torch.zeros(1), requires_grad=False)]
    _check_fits(config, params[0].dtype)
    if is_opaque(config):
        args = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        try:
            return type(config).torch_class(params, **args)
        except Exception as e:  # a user's optimizer class with other constructor arguments
            raise GdstepError(f"cannot rebuild {config.kind} from its hyperparameters: {e}") from None
    twins = getattr(type(config), "torch_twins", ())
    torch_class = _torch_class(twins[0][0]) if twins else None
    if torch_class is None:
        raise GdstepError(f"the torch backend has no optimizer {getattr(config, 'kind', config)!r}")
    return torch_class(params, **hyperparameters(config))


def same_kind(config: Any, optimizer) -> bool:
    """True when `optimizer` can take `config`'s hyperparameters without new state."""
    if is_opaque(config):
        return type(optimizer) is type(config).torch_class
    return _is_twin(type(config), optimizer)


def apply(config: Any, optimizer) -> None:
    """Write `config`'s hyperparameters into every param group, keeping the state."""
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    group_params = optimizer.param_groups[0]["params"] if optimizer.param_groups else []
    _check_fits(config, group_params[0].dtype if group_params else None)
    for group in optimizer.param_groups:
        write_group(group, values)


def write_group(group: dict, values: dict) -> None:
    """Hyperparameters into one param group; a tensor lr (capturable, fused) stays a tensor."""
    for key, value in values.items():
        if key == "params":
            continue
        current = group.get(key)
        if type(current).__module__.startswith("torch") and getattr(current, "numel", lambda: 0)() == 1:
            current.fill_(value)
        else:
            group[key] = value

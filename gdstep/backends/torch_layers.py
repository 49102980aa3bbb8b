"""The layers the debugger shows for a torch module, and how their outputs are recorded.

An `nn.Sequential` is its children, in order, as in a scenario; its last child's output is
the model's output. Any other module is every submodule it calls (containers such as
ModuleList left out), in `named_modules()` order, then the module itself as the last row,
`(output)`, whose output is what the model returns.
"""

from __future__ import annotations

from typing import Any

from gdstep.backends.base import LayerInfo
from gdstep.nn.layers import layer_from_torch

OUTPUT = "(output)"


def layer_kind(module) -> str:
    """The gdstep layer kind a torch module computes (nn.Tanh() -> "tanh"), else its class name."""
    layer = layer_from_torch(module)
    return layer.kind if layer is not None else type(module).__name__


# torch modules that map finite inputs to finite outputs (they select, copy or clamp values)
# and gdstep does not compute itself: a run need not check their outputs for nan/inf. Exact
# classes only: a subclass may compute something else in its forward.
KEEPS_FINITE = ("MaxPool1d", "MaxPool2d", "MaxPool3d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d",
                "AdaptiveMaxPool3d", "Flatten", "Unflatten", "Identity", "PixelShuffle", "PixelUnshuffle",
                "ChannelShuffle", "ReLU6", "Hardtanh", "Hardsigmoid", "Softsign")


def keeps_finite(module) -> bool:
    """Whether a torch module (one gdstep does not compute) maps finite inputs to finite outputs."""
    import torch.nn as nn
    cls = type(module)
    return cls.__module__.startswith("torch.nn.") and getattr(nn, cls.__name__, None) is cls \
        and cls.__name__ in KEEPS_FINITE


def layer_text(module) -> str:
    layer = layer_from_torch(module)
    text = type(layer).torch_text(module) if layer is not None else None
    if text is None:
        text = repr(module).replace("()", "")
    return text if "\n" not in text and len(text) <= 60 else type(module).__name__


def is_container(module) -> bool:
    import torch.nn as nn
    return isinstance(module, (nn.ModuleList, nn.ModuleDict, nn.ParameterList, nn.ParameterDict))


def module_layers(model) -> tuple[list[tuple[str, Any]], bool]:
    """[(name, module)] of the rows to record, and whether the model is a plain Sequential
    (run child by child, with no hooks)."""
    import torch.nn as nn

    if type(model) is nn.Sequential:
        return list(model.named_children()), True
    rows = [(name, m) for name, m in model.named_modules() if name and not is_container(m)]
    rows.append((OUTPUT, model))
    return rows, False


def layer_infos(model, rows: list[tuple[str, Any]]) -> tuple[LayerInfo, ...]:
    """A tied parameter (`decoder.weight = encoder.weight`) is named as `named_parameters()`
    names it, once, in every layer that uses it."""
    canonical = {id(p): n for n, p in model.named_parameters()}
    infos = []
    for i, (name, module) in enumerate(rows):
        if module is model and name == OUTPUT:
            direct = tuple(canonical.get(id(p), n) for n, p in module.named_parameters(recurse=False))
            infos.append(LayerInfo(i, OUTPUT, type(model).__name__, f"{type(model).__name__} output", direct))
            continue
        direct = tuple(canonical.get(id(p), f"{name}.{n}") for n, p in module.named_parameters(recurse=False))
        layer = layer_from_torch(module, i)
        infos.append(LayerInfo(i, name, layer.kind if layer is not None else type(module).__name__,
                               layer_text(module), direct, layer,
                               keeps_finite=None if layer is not None else keeps_finite(module)))
    return tuple(infos)


def has_inplace(model) -> bool:
    """An in-place module (ReLU(inplace=True)) overwrites the output before it: records copy."""
    return any(getattr(m, "inplace", False) is True for m in model.modules())


def first_tensor(value: Any):
    import torch

    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        for v in value:
            if isinstance(v, torch.Tensor):
                return v
    if isinstance(value, dict):
        for v in value.values():
            if isinstance(v, torch.Tensor):
                return v
    return None


def row_calls(torch, rows: list[tuple[str, Any]]) -> list:
    """What runs each row: its `forward` itself where calling the module would do nothing
    else (no hook on it or on every module, not compiled), else the module. `Module.__call__`
    costs ~0.7 µs a row in its own Python: 1 % of a run of the MLP 64-128-128-10."""
    hooks = torch.nn.modules.module
    if (hooks._global_forward_hooks or hooks._global_forward_pre_hooks or hooks._global_backward_hooks
            or hooks._global_backward_pre_hooks):
        return [module for _, module in rows]
    return [module if (module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                       or module._backward_pre_hooks or getattr(module, "_compiled_call_impl", None) is not None)
            else module.forward for _, module in rows]

"""The layers the debugger shows for a torch module, and how their outputs are recorded.

An `nn.Sequential` is its children, in order, as in a scenario; its last child's output is
the model's output. Any other module is every submodule it calls (containers such as
ModuleList left out), in `named_modules()` order, then the module itself as the last row,
`(output)`, whose output is what the model returns.
"""

from __future__ import annotations

from typing import Any

from gdstep.backends.base import LayerInfo

KINDS = {"Linear": "linear", "Sigmoid": "sigmoid", "Tanh": "tanh", "ReLU": "relu",
         "LeakyReLU": "leaky_relu", "Identity": "identity"}
OUTPUT = "(output)"


def layer_kind(module) -> str:
    import torch.nn as nn

    name = type(module).__name__
    if name in KINDS and getattr(nn, name, None) is type(module):
        return KINDS[name]
    return name


def layer_text(module) -> str:
    import torch.nn as nn

    if type(module) is nn.Linear:
        return f"Linear({module.in_features} → {module.out_features})" + ("" if module.bias is not None else ", no bias")
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
    infos = []
    for i, (name, module) in enumerate(rows):
        if module is model and name == OUTPUT:
            direct = tuple(n for n, _ in module.named_parameters(recurse=False))
            infos.append(LayerInfo(i, OUTPUT, type(model).__name__, f"{type(model).__name__} output", direct))
            continue
        direct = tuple(f"{name}.{n}" for n, _ in module.named_parameters(recurse=False))
        infos.append(LayerInfo(i, name, layer_kind(module), layer_text(module), direct))
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

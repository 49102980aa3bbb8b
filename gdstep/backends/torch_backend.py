"""The torch backend for a scenario file: the same model as `nn.Sequential`, the same
starting values, the loss as torch computes it and the `torch.optim` optimizer of the same
kind, on the CPU or a GPU. float32 by default, float64 on request (then it agrees with the
numpy engine to ~1e-12)."""

from __future__ import annotations

import numpy as np

from gdstep.backends.numpy_backend import layer_infos
from gdstep.backends.torch_loss import ScenarioLoss
from gdstep.backends.torch_module import ModuleBackend
from gdstep.backends.torch_optim import build
from gdstep.backends.torch_support import require_torch, resolve_device, torch_dtype
from gdstep.data import targets_for
from gdstep.nn.init import initial_params


def build_sequential(model, dtype, device):
    """torch.nn.Sequential with the layers of a numpy Sequential, so the names agree."""
    torch = require_torch()
    return torch.nn.Sequential(*(layer.torch_module() for layer in model.layers)).to(device=device, dtype=dtype)


class TorchBackend(ModuleBackend):
    def __init__(self, scenario, device: str | None = None, dtype: str | None = None):
        torch = require_torch()
        dev, note = resolve_device(device)
        dtype = dtype or scenario.model.dtype or "float32"
        dt = torch_dtype(dtype)
        np_dt = np.dtype(dtype)
        numpy_model = scenario.build_model()
        model = build_sequential(numpy_model, dt, dev)
        start = initial_params(numpy_model, scenario.model.init, scenario.model.init_scale, scenario.seed,
                               dict(scenario.init))
        frozen = set(scenario.model.frozen)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(torch.from_numpy(np.ascontiguousarray(start[name].astype(np_dt))))
                p.requires_grad_(name not in frozen)
        dataset = scenario.dataset
        x = torch.from_numpy(np.ascontiguousarray(dataset.x.astype(np_dt))).to(dev)
        y = targets_for(dataset, scenario.loss.kind, numpy_model.out_features)
        y = torch.from_numpy(np.ascontiguousarray(y.astype(np_dt) if y.dtype.kind == "f" else y.astype(np.int64))).to(dev)
        trainable = [name for name, _ in model.named_parameters() if name not in frozen]
        params = [p for name, p in model.named_parameters() if name not in frozen]
        optimizer = build(scenario.optimizer, params)
        super().__init__(model, ScenarioLoss(scenario.loss.kind, **scenario.loss.options), optimizer, x, y,
                         trainable=trainable, layers=layer_infos(numpy_model), config=scenario.optimizer)
        self.scenario = scenario
        if note:
            self.notes.append(note)

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
from gdstep.problem import as_problem


def build_sequential(model, dtype, device):
    """torch.nn.Sequential with the layers of a numpy Sequential, so the names agree."""
    torch = require_torch()
    return torch.nn.Sequential(*(layer.torch_module() for layer in model.layers)).to(device=device, dtype=dtype)


class TorchBackend(ModuleBackend):
    owns_tensors = True          # the model and optimizer built here from the scenario
    runs_ahead = True            # a recomputation is exact: a run may check its iterations after (gdstep.run_ahead)

    def __init__(self, problem, device: str | None = None, dtype: str | None = None):
        """`problem`: a prepared Problem (gdstep.problem), or a scenario to prepare."""
        torch = require_torch()
        problem = as_problem(problem)
        dev, note = resolve_device(device)
        dtype = dtype or problem.dtype or "float32"
        dt = torch_dtype(dtype)
        np_dt = np.dtype(dtype)
        model = build_sequential(problem.model, dt, dev)
        with torch.no_grad(), np.errstate(over="ignore"):     # values float32 cannot hold: inf, paused on later
            for name, p in model.named_parameters():
                p.copy_(torch.from_numpy(np.ascontiguousarray(problem.start[name].astype(np_dt))))
                p.requires_grad_(name in problem.trainable)
        with np.errstate(over="ignore"):
            x = torch.from_numpy(np.ascontiguousarray(problem.x.astype(np_dt))).to(dev)
        y = problem.y
        y = torch.from_numpy(np.ascontiguousarray(y.astype(np_dt) if y.dtype.kind == "f" else y.astype(np.int64))).to(dev)
        trainable = [name for name, _ in model.named_parameters() if name in problem.trainable]
        params = [p for name, p in model.named_parameters() if name in problem.trainable]
        optimizer = build(problem.optimizer, params)
        super().__init__(model, ScenarioLoss(problem.loss.kind, **problem.loss.options), optimizer, x, y,
                         trainable=trainable, layers=layer_infos(problem.model), config=problem.optimizer)
        self.problem = problem
        if note:
            self.notes.append(note)

    def autograd_grads(self, loss, inputs: list) -> list:
        """As ModuleBackend's; but where the inputs are the parameters that require a
        gradient, no more (a run's lean backward), by `loss.backward()` into their `.grad`,
        as a plain loop takes them: the model is gdstep's own, so no other leaf is touched.
        The same numbers, from the same kernels; autograd.grad's search of the graph for
        the inputs costs ~2 % of an iteration of the MLP 64-128-128-10 on the CPU."""
        if inputs is self._train_params and not self._input_grad and loss.requires_grad:
            for p in inputs:
                p.grad = None            # backward fills it, as after a plain loop's zero_grad()
            loss.backward()
            return [p.grad for p in inputs]
        return super().autograd_grads(loss, inputs)

    def fresh(self, problem=None) -> "TorchBackend":
        """A new backend of this kind at the start of the same prepared problem (or of
        `problem`, another start for the same data)."""
        return TorchBackend(problem or self.problem, device=self.device, dtype=self.dtype)

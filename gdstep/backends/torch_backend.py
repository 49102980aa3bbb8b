"""The torch backend for a scenario file: the same model as `nn.Sequential`, the same
starting values, the loss as torch computes it and the `torch.optim` optimizer of the same
kind, on the CPU or a GPU. float32 by default, float64 on request (then it agrees with the
numpy engine to ~1e-12)."""

from __future__ import annotations

import math

import numpy as np

from gdstep.backends.numpy_backend import layer_infos
from gdstep.backends.torch_lean import finite_flag, fused_finite
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

    def fresh(self, problem=None) -> "TorchBackend":
        """A new backend of this kind at the start of the same prepared problem (or of
        `problem`, another start for the same data)."""
        return TorchBackend(problem or self.problem, device=self.device, dtype=self.dtype)

    # -- a run's update (records on demand) --------------------------------------------------------

    @property
    def lean_norm_names(self) -> tuple[str, ...]:
        """The parameters `update_lean_norms` gives norms of, in its order."""
        return tuple(name for name, _ in self._train)

    def update_lean_norms(self, grads, check: bool = True, defer: bool = False):
        """`update_lean`, and the update's [‖ΔW‖² of each parameter…, ‖W_old‖² of each…] as one
        tensor (`update_norms.before`/`after`'s values, bit for bit: the same norms of the same
        numbers), with W_old copied into buffers kept from one update to the next rather than
        cloned. Whether the update is finite comes with them: ΔW and W_old finite make W_new
        finite, so the guarded optimizer state joins the same fused norm, and one number, the
        sum of the squares, says it (read now on the CPU; with `defer`, left on the device)."""
        torch = self._torch
        params = self._train_params
        if not params:
            return self.update_lean(grads, check, defer), []
        old = self._old_param_buffers(params)
        guarded = self._guarded_state(grads) if check and len(grads) == len(params) else []
        with torch.no_grad():
            torch._foreach_copy_(old, params)
            self.update_lean(grads, check=False)
            deltas = list(torch._foreach_sub(old, params))         # W_old − W_new = −ΔW
            if params[0].is_cpu:        # one call; each norm is its tensor's own, as in three
                norms = list(torch._foreach_norm(deltas + old + guarded))
            else:                       # on a device, the groups update_norms makes (its kernels' chunks)
                norms = [n for group in (deltas, old, guarded) if group for n in torch._foreach_norm(group)]
            norms = torch.stack(norms).double()
            squares = norms * norms
            sq = squares[:2 * len(params)]
            if not check:
                return True, sq
            if len(grads) != len(params):        # a parameter without a gradient: the update's own test
                tensors = self._updated_tensors(grads)
                return (finite_flag(torch, tensors) if defer else fused_finite(torch, tensors)), sq
            flag = squares.sum()
            if defer:
                return flag, sq
            if math.isfinite(flag.item()):
                return True, sq
            return all(bool(torch.isfinite(t).all().item()) for t in params + guarded), sq

    def _guarded_state(self, grads) -> list:
        """The optimizer state a run checks after an update (see Optimizer.guarded_state)."""
        tensors = self._updated_tensors(grads)
        kept = getattr(self, "_guarded", None)
        if kept is not None and kept[0] is tensors:
            return kept[1]
        changed = {id(p) for p in self._train_params}
        guarded = [t for t in tensors if id(t) not in changed]
        self._guarded = (tensors, guarded)
        return guarded

    def _old_param_buffers(self, params: list) -> list:
        """Tensors shaped as the parameters, for their values before an update (made once)."""
        kept = getattr(self, "_old_params", None)
        if kept is None:                     # the parameters stay the same tensors: a restore copies into them
            kept = self._old_params = [self._torch.empty_like(p, requires_grad=False) for p in params]
        return kept

"""The phases of a run on the torch backend, when records are made on demand: the gradients
without δ of every layer, and the optimizer's step without copies. What they leave out the
Session recomputes from a checkpoint when someone reads the records.

Per iteration a run then reads back from the device the loss, the gradient norms (the
plots' history, and the backward's finiteness test) and one finiteness flag of the update.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from gdstep.errors import GdstepError


def fused_finite(torch, tensors: list) -> bool:
    """Whether every element is finite: Σ of the tensors' norms, one number to the host; only
    when that overflows (finite values whose squares do not fit) the exact test."""
    if not tensors:
        return True
    with torch.no_grad():
        try:
            norms = torch._foreach_norm(tensors)
        except (RuntimeError, TypeError):
            norms = [torch.linalg.vector_norm(t) for t in tensors]
        total = torch.stack(norms).sum() if len(norms) > 1 else norms[0]
        if math.isfinite(total.item()):
            return True
        return all(bool(torch.isfinite(t).all().item()) for t in tensors)


class LeanPhases:
    """Mixed into ModuleBackend."""

    def backward_lean(self, x, outputs, y) -> dict[str, Any]:
        """The gradients of the trainable parameters only, for a run (records on demand): the
        same autograd computation without asking for δ of every layer."""
        torch = self._torch
        loss = self._loss_tensor
        if loss is None or self._graph is None:
            raise GdstepError("backward needs the loss of this iteration's forward")
        params = self._train_params
        grads = torch.autograd.grad(loss, params, allow_unused=True) if loss.requires_grad and params else [None] * len(params)
        self._graph = self._loss_tensor = None
        out = {}
        for (name, p), g in zip(self._train, grads):
            p.grad = g
            if g is not None:
                out[name] = g
        return out

    def update_lean(self, grads: Mapping[str, Any], check: bool = True) -> bool:
        """The optimizer's step with no copies (a run's records on demand). Returns whether
        the parameters it changed and their guarded optimizer state are finite: one fused
        norm over them, one number to the host."""
        for name, p in self._train:
            g = grads.get(name)
            if p.grad is not g:
                p.grad = g
        if not self._known_step:
            for _, p in self._train:
                if p.grad is not None:
                    p.grad = p.grad.clone()
        self.torch_optimizer.step()
        self._updates += 1
        self._fresh = None
        return self.update_finite(grads) if check else True

    def update_finite(self, grads: Mapping[str, Any]) -> bool:
        """Whether the parameters an update changed and their guarded state are finite."""
        torch = self._torch
        guarded = getattr(self.optimizer, "guarded_state", None)
        states = self.torch_optimizer.state
        by_name = self._by_name
        tensors = []
        for name in grads:
            p = by_name[name]
            tensors.append(p)
            for k, v in states.get(p, {}).items():
                if (isinstance(v, torch.Tensor) and v.ndim and v.is_floating_point()
                        and (guarded is None or k in guarded)):
                    tensors.append(v)
        return fused_finite(torch, tensors)

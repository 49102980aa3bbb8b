"""Attach mode's backend for a DistributedDataParallel model.

The gradients come from `loss.backward()` through DDP, so they are DDP's all-reduced ones,
bit for bit what a bare DDP loop gives the optimizer (`autograd.grad` would skip the
all-reduce and let the replicas drift apart). δ of every layer comes from tensor hooks in
the same backward. Each trainable parameter's *local* gradient, before the all-reduce, is
kept by a hook on the parameter (it runs before accumulation), so the debugger can show it
beside the average without taking over DDP's communication (a comm hook of the user's
stays theirs).

Records are always full: a lean run's records are recomputed on first read, and on one
rank alone such a recompute would all-reduce with nobody. Side computations (gradient
checks, the landscape, evaluation) call the wrapped module, never DDP's forward, so they
involve no other rank.
"""

from __future__ import annotations

from typing import Any, Mapping

from gdstep.backends.torch_attach import AttachBackend
from gdstep.backends.torch_layers import first_tensor
from gdstep.errors import GdstepError

PREFIX = "module."


class DistributedAttachBackend(AttachBackend):
    def __init__(self, model, loss, optimizer, keep: int = 16):
        self._local: dict[str, Any] = {}
        self.local_step: int | None = None        # the update count when the local gradients were taken
        super().__init__(model, loss, optimizer, keep=keep)
        self._bucket_views = bool(getattr(model, "gradient_as_bucket_view", False))

    # A run must never leave lean records (see the module docstring): these are not offered.
    @property
    def backward_lean(self):
        raise AttributeError("backward_lean")

    @property
    def update_lean(self):
        raise AttributeError("update_lean")

    def _install_hooks(self) -> None:
        super()._install_hooks()
        for name, p in getattr(self, "_train", ()):
            self._hooks.append(p.register_hook(self._local_hook(name)))

    def _local_hook(self, name: str):
        def keep(grad):
            self._local[name] = grad.detach().clone()
            self.local_step = self._updates
        return keep

    def local_grads(self) -> dict[str, Any]:
        """This rank's gradients before the all-reduce, of the latest backward."""
        return dict(self._local)

    def averaged_grads(self) -> dict[str, Any]:
        """The gradients the optimizer uses: DDP's average over the ranks (latest backward)."""
        return {name: p.grad for name, p in self._train if p.grad is not None}

    def backward(self, x, outputs, y):
        observed = self._observed.pop("backward", None)
        if observed is not None:
            return observed
        loss = self._loss_tensor
        if loss is None or self._graph is None:
            raise GdstepError("backward needs the loss of this iteration's forward")
        outs = self._graph[0]
        deltas: list = [None] * len(outs)
        handles = [o.register_hook(lambda g, i=i: deltas.__setitem__(i, g))
                   for i, o in enumerate(outs) if o is not None and o.requires_grad]
        self._local = {}
        try:
            for p in self._train_params:
                p.grad = None
            if loss.requires_grad:
                loss.backward()          # DDP's hooks all-reduce the gradients, bucket by bucket
        finally:
            for h in handles:
                h.remove()
            self._graph = self._loss_tensor = None
        grads = {}
        for name, p in self._train:
            if p.grad is not None:
                if self._bucket_views:       # a view into DDP's bucket, rewritten next backward
                    p.grad = p.grad.clone()
                grads[name] = p.grad
        return deltas[-1], tuple(deltas), grads

    def _call(self, params: Mapping[str, Any], x):
        """The wrapped module with these values: DDP's forward would sync with other ranks."""
        torch = self._torch
        inner = self.model.module
        values = {_inner(name): v for name, v in params.items()}
        for name, b in self._buffers:
            values[_inner(name)] = b.detach().clone()
        out = first_tensor(torch.func.functional_call(inner, values, (x,), strict=False))
        if out is None:
            raise GdstepError("the model returned no tensor")
        return out


def _inner(name: str) -> str:
    return name[len(PREFIX):] if name.startswith(PREFIX) else name

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

from gdstep.backends.backward_pass import grads_by_backward
from gdstep.backends.torch_attach import AttachBackend
from gdstep.backends.torch_layers import first_tensor
from gdstep.errors import GdstepError

PREFIX = "module."


class DistributedAttachBackend(AttachBackend):
    grads_noted_by_hooks = True       # (DDP's reducer writes the averaged gradients at the backward's end)

    def __init__(self, model, loss, optimizer, keep: int = 16, **kw: Any):
        self._local: dict[str, Any] = {}
        self.local_step: int | None = None        # the update count when the local gradients were taken
        super().__init__(model, loss, optimizer, keep=keep, **kw)
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
        """This rank's gradient of the parameter, before the all-reduce: those of one iteration
        summed (accumulation under no_sync: as `.grad` sums them), a new iteration's replacing
        the last's whole (a parameter its backward did not reach has none, not a stale one)."""
        def keep(grad):
            if self._local_fresh:             # the first backward since the last watch() (or ever)
                self._local, self._local_fresh = {}, False
                self.local_step = self._updates
            seen = self._local.get(name)
            self._local[name] = grad.detach().clone() if seen is None else seen + grad.detach()
        return keep

    _local_fresh = True       # the next backward's local gradients start afresh (new_iteration)

    def new_iteration(self) -> None:
        """After watch(): the next backward is another iteration's (a step the loop's
        GradScaler skipped moves no update count, so the count cannot tell)."""
        super().new_iteration()
        self._local_fresh = True

    def local_grads(self) -> dict[str, Any]:
        """This rank's gradients before the all-reduce, of the latest backward."""
        return dict(self._local)

    def averaged_grads(self) -> dict[str, Any]:
        """The gradients the optimizer uses: DDP's average over the ranks (latest backward)."""
        return {name: p.grad for name, p in self._train if p.grad is not None}

    def autograd_grads(self, loss, inputs: list) -> list:
        """∂loss/∂(each input) from one `loss.backward()` through DDP (its hooks all-reduce
        the gradients, bucket by bucket): the parameters' are the all-reduced gradients; the
        layer outputs' (δ) come from tensor hooks in the same pass."""
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        self._local, self._local_fresh = {}, True
        grads = grads_by_backward(loss, inputs, self._train_params)
        if self._bucket_views:            # a view into DDP's bucket, rewritten next backward
            params = {id(p) for p in self._train_params}
            grads = [g.clone() if g is not None and id(t) in params else g for t, g in zip(inputs, grads)]
        return grads

    def _call(self, params: Mapping[str, Any], x):
        """The wrapped module with these values: DDP's forward would sync with other ranks."""
        torch = self._torch
        x, args, kwargs, _ = self._inputs(x, None)
        values = {_inner(name): v for name, v in params.items()}
        for name, b in self._buffers:
            values[_inner(name)] = b.detach().clone()
        call = args if x is None else (x, *args)
        out = torch.func.functional_call(self.model.module, values, call, kwargs, strict=False)
        if first_tensor(out) is None:
            raise GdstepError("the model returned no tensor")
        return out


def _inner(name: str) -> str:
    return name[len(PREFIX):] if name.startswith(PREFIX) else name

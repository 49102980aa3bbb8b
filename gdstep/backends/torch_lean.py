"""The phases of a run on the torch backend, when records are made on demand: the gradients
without δ of every layer, and the optimizer's step without copies. What they leave out the
Session recomputes from a checkpoint when someone reads the records.

On the CPU each phase's fused finiteness test is read at once. On a device the forward's
and the update's flags stay there and travel back with the next loss, in one transfer, so a
run reads back two things an iteration: the loss with those flags, and the gradient norms
(the plots' history, and the backward's finiteness test); the Session reads pending flags
before it checks any condition, and at the end of the run.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from gdstep.errors import GdstepError


def finite_flag(torch, tensors: list):
    """Σ of the tensors' norms, where they are: finite when every element is (an overflow of
    finite values makes it inf too: then the exact test decides)."""
    with torch.no_grad():
        if not tensors:
            return torch.zeros(())
        try:
            norms = torch._foreach_norm(tensors)
        except (RuntimeError, TypeError):
            norms = [torch.linalg.vector_norm(t) for t in tensors]
        return torch.stack(norms).sum() if len(norms) > 1 else norms[0]


def fused_finite(torch, tensors: list) -> bool:
    """Whether every element is finite: one number to the host (on the CPU, where a read
    costs less than two more tensor operations, each norm); the exact test on doubt."""
    if tensors and tensors[0].is_cpu:
        with torch.no_grad():
            try:
                norms = torch._foreach_norm(tensors)
            except (RuntimeError, TypeError):
                norms = [torch.linalg.vector_norm(t) for t in tensors]
        if all(math.isfinite(n.item()) for n in norms):
            return True
    elif math.isfinite(finite_flag(torch, tensors).item()):
        return True
    return all(bool(torch.isfinite(t).all().item()) for t in tensors)


class LeanPhases:
    """Mixed into ModuleBackend."""

    def backward_lean(self, x, outputs, y) -> dict[str, Any]:
        """The gradients of the trainable parameters only, for a run (records on demand): the
        same autograd computation without asking for δ of every layer."""
        loss = self._loss_tensor
        if loss is None or self._graph is None:
            raise GdstepError("backward needs the loss of this iteration's forward")
        params = self._train_params
        grads = self.autograd_grads(loss, params)
        self._graph = self._loss_tensor = None
        out = {}
        for (name, p), g in zip(self._train, grads):
            p.grad = g
            if g is not None:
                out[name] = g
        return out

    @property
    def defer_checks(self) -> bool:
        """On a device, a run's finiteness flags wait there to be read with the next value."""
        return self.device != "cpu"

    def finite_flag(self, tensors: list):
        tensors = [t for t in tensors if t is not None and t.is_floating_point()]
        if not tensors:
            return self._torch.zeros((), device=self.device)
        return finite_flag(self._torch, tensors)

    def read_flags(self, flags: list) -> list[bool]:
        """Flags from finite_flag, read back in one transfer (a flag that overflowed from
        finite values reads as False; the Session's culprit search then finds nothing)."""
        return [math.isfinite(v) for v in self._torch.stack([f.double() for f in flags]).tolist()]

    def loss_lean(self, outputs, y, flags: list) -> tuple[Any, float, list[bool]]:
        """The loss, with pending flags read back in the same transfer."""
        torch = self._torch
        out = self._graph[1] if self._graph is not None else outputs[-1]
        per_sample, loss = self.loss_fn(out, y)
        self._loss_tensor = loss
        values = torch.stack([loss.detach().double(), *(f.double() for f in flags)]).tolist()
        return per_sample, values[0], [math.isfinite(v) for v in values[1:]]

    def update_lean(self, grads: Mapping[str, Any], check: bool = True, defer: bool = False):
        """The optimizer's step with no copies (a run's records on demand). Returns whether
        the parameters it changed and their guarded optimizer state are finite: one fused
        norm over them, one number to the host; with `defer`, that number, on the device."""
        for name, p in self._train:
            g = grads.get(name)
            if p.grad is not g:
                p.grad = g
        if not self._known_step:
            for _, p in self._train:
                if p.grad is not None:
                    p.grad = p.grad.clone()
        self.optimizer_step()
        return self._stepped(grads, check, defer)

    def _stepped(self, grads: Mapping[str, Any], check: bool, defer: bool):
        """After an optimizer step: count it, and (with `check`) the finiteness of what it changed."""
        self._updates += 1
        self._fresh = None
        if not check:
            return True
        tensors = self._updated_tensors(grads)
        return finite_flag(self._torch, tensors) if defer else fused_finite(self._torch, tensors)

    def _updated_tensors(self, grads: Mapping[str, Any]) -> list:
        """The parameters an update changed and their guarded state. torch.optim's own
        optimizers change their state tensors in place, so the list is kept while the
        optimizer and each parameter's state dict stay the same objects (a restore or a new
        optimizer makes new ones); another optimizer's list is made afresh each time."""
        states = self.torch_optimizer.state
        kept = getattr(self, "_lean_tensors", None)
        if (kept is not None and kept[0] is self.torch_optimizer and kept[1] == grads.keys()
                and all(states.get(p) is st for p, st in kept[2])):
            return kept[3]
        tensors = self._list_updated_tensors(grads)
        by_name = self._by_name
        self._lean_tensors = ((self.torch_optimizer, set(grads), [(by_name[n], states.get(by_name[n])) for n in grads],
                               tensors) if self._known_step else None)
        return tensors

    def _list_updated_tensors(self, grads: Mapping[str, Any]) -> list:
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
        return tensors

    # -- a run's update with its norms (records on demand) --------------------------------------

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

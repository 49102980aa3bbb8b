"""A run's look ahead on the torch backend (gdstep.run_ahead): each iteration's values read
back in one go, on a device only when the look ahead ends.

On a GPU a run that reads a value back waits for the device to finish all it was given,
and a host thread launching kernels one by one is often the slower of the two: a read each
phase costs the overlap, and each small tensor operation costs as much host time as a
layer's. So an iteration of a look ahead leaves one row on the device — its loss, the norms
of the forward's tested outputs (finite exactly when every element is, unless a norm
overflows: then the phases run again one by one and decide) and the norm of each gradient,
as `grad_sq_norms` takes them — and the rows come back in one transfer, with the
finiteness flag of what the last update changed. That flag stands for every update of the
look ahead: a parameter or a guarded state (Adam's v, RMSprop's and Adagrad's sums) once
non-finite stays so in every later update. On the CPU the row is read at once
(`iteration_ahead`): the small tested outputs and the gradients normed in one fused call,
where the phases one by one make two. Mixed into ModuleBackend."""

from __future__ import annotations

import math
from typing import Any, Mapping


class DeviceAhead:
    def iteration_on_device(self, x, y, checked) -> tuple[list, dict[str, Any], list]:
        """The forward, loss and backward of a run's iteration, nothing read: (the outputs,
        the gradients by name, the row: tensors on the device — the loss, the norms of the
        `checked` rows' outputs, the norm of each gradient, in the gradients' order). The
        norms come from one fused call (each tensor's norm is its own, whatever else the
        call takes: the same bits as `grad_sq_norms`')."""
        return self._iteration_row(x, y, checked, math.inf)     # every tested output held to the end

    def iteration_ahead(self, x, y, checked) -> tuple:
        """On the CPU, the same iteration with its row read at once, as the engine's
        `forward_backward_lean` gives it: (the outputs, None for the per-sample losses, the
        loss, the gradients, ‖g‖² by name, whether the tested outputs are finite). A large
        output is normed as it is made, while it is in the cache, as a run's lean forward
        does."""
        outputs, grads, row = self._iteration_row(x, y, checked, self.LARGE)
        values = [t.item() for t in row]
        tested = len(values) - len(grads)
        sq = {name: v * v for name, v in zip(grads, values[tested:])}
        if self._bounds_pay:                   # as grad_sq_norms
            self.update_bound.measured(grads, sq)
        return outputs, None, values[0], grads, sq, all(map(math.isfinite, values[1:tested]))

    def _iteration_row(self, x, y, checked, large: float) -> tuple[list, dict[str, Any], list]:
        torch = self._torch
        self._lean_begin(checked, large)
        try:
            outputs = self.forward(x)
        finally:
            norms, held = self._lean_end()
        out = self._graph[1] if self._graph is not None else outputs[-1]
        _, loss = self.loss_fn(out, y, False)
        self._loss_tensor = loss
        grads = self.backward_lean(x, outputs, y)
        with torch.no_grad():
            if any(n is None for n in norms):             # a norm could not be taken: the phases decide
                norms = [torch.full((), math.nan, device=loss.device)]
            return outputs, grads, [loss.detach()] + norms + self._norms(held + list(grads.values()))

    def _norms(self, tensors: list) -> list:
        """Each tensor's norm, on the device: one fused call."""
        torch = self._torch
        if not tensors:
            return []
        try:
            return list(torch._foreach_norm(tensors))
        except (RuntimeError, TypeError):
            return [torch.linalg.vector_norm(t) for t in tensors]

    def read_ahead(self, rows: list, grads: Mapping[str, Any], flags: list) -> tuple[list[list[float]], bool]:
        """The look ahead's rows back in one transfer, with the finiteness flag of what the
        last update (with `grads`) changed and any flags still pending from before it:
        (each row's values, whether that flag and the pending ones are finite)."""
        torch = self._torch
        self.update_bound.forget()          # no bounds carried: the next test reads them all
        tests = [self.finite_flag(self._updated_tensors(grads))] + list(flags)
        parts = [t for row in rows for t in row] + tests
        if any(t.dtype != parts[0].dtype for t in parts):
            parts = [t.double() for t in parts]
        values = torch.stack(parts).tolist()
        out, at = [], 0
        for row in rows:
            out.append(values[at:at + len(row)])
            at += len(row)
        return out, all(math.isfinite(v) for v in values[at:])

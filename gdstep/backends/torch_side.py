"""Side computations of the torch engine over an `nn.Module`: losses, gradients and outputs
at other parameter values (the explanation, the landscape, gradcheck, evaluation), which
change nothing: a functional call with the buffers copied and the RNG as this iteration's
forward saw it. A mixin of `ModuleBackend`."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Mapping

import numpy as np

from gdstep import arrays
from gdstep.backends.torch_layers import first_tensor
from gdstep.errors import GdstepError


class SideComputations:
    @contextmanager
    def _aside(self):
        """Run a computation that leaves no trace: the RNG as this iteration's forward saw
        it and restored after; buffers (BatchNorm statistics) passed as copies."""
        saved = self._rng_state() if self._track_rng else None
        if saved is not None and self._rng_forward is not None:
            self._set_rng(self._rng_forward)
        capture, self._capture = self._capture, False
        try:
            yield
        finally:
            self._capture = capture
            if saved is not None:
                self._set_rng(saved)

    def _call(self, params: Mapping[str, Any], x):
        torch = self._torch
        values = dict(params)
        for name, b in self._buffers:
            values[name] = b.detach().clone()
        out = torch.func.functional_call(self.model, values, (x,), strict=False)
        out = first_tensor(out)
        if out is None:
            raise GdstepError("the model returned no tensor")
        return out

    def loss_value(self, x, y, overrides: Mapping[str, tuple[tuple[int, ...], float]] | None = None) -> float:
        torch = self._torch
        params = dict(self._views)
        for name, (index, value) in (overrides or {}).items():
            changed = params[name].clone()
            changed[index] = value
            params[name] = changed
        with torch.no_grad(), self._aside():
            _, loss = self.loss_fn(self._call(params, x), y, False)
            return loss.item()

    def loss_at(self, x, y, params: Mapping[str, Any]) -> float:
        """The loss on (x, y) with these parameter values (arrays; the others as they are)."""
        torch = self._torch
        values = dict(self._views)
        for name, v in params.items():
            live = values[name]
            values[name] = torch.as_tensor(np.asarray(v), dtype=live.dtype, device=live.device)
        with torch.no_grad(), self._aside():
            _, loss = self.loss_fn(self._call(values, x), y, False)
            return loss.item()

    def gradients(self, x, y) -> dict[str, Any]:
        torch = self._torch
        leaves = {name: v.detach().requires_grad_(True) for name, v in self._views.items()
                  if v.is_floating_point()}
        with torch.enable_grad(), self._aside():
            _, loss = self.loss_fn(self._call(leaves, x), y, False)
            grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        return {name: (g if g is not None else torch.zeros_like(self._views[name])) for name, g in zip(leaves, grads)}

    @contextmanager
    def _eval(self):
        """Every module in eval mode, and back as it was: the flags set, not the module's
        `eval` method called (a module may override `train` with a method of its own, as
        pytorch/examples' mnist_forward_forward does, and that method calls it)."""
        modes = [(m, m.training) for m in self.model.modules()]
        try:
            for m, _ in modes:
                m.training = False
            yield
        finally:
            for m, training in modes:
                m.training = training

    def _outputs_of(self, x):
        torch = self._torch
        with torch.no_grad(), self._eval(), self._aside():
            return self._call(self._views, x)

    def evaluate(self) -> tuple[float, float | None]:
        """Loss and (for classifiers) accuracy on all the data, in eval mode."""
        torch = self._torch
        x, y = self.evaluation_data()
        out = self._outputs_of(x)
        with torch.no_grad():
            _, loss = self.loss_fn(out, y, False)
            value = loss.item()
            accuracy = getattr(self.loss_fn, "accuracy", None)
            return value, (accuracy(out, y) if accuracy is not None else None)

    def evaluation_data(self) -> tuple[Any, Any]:
        return self.x, self.y

    def predict(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        first = self._named[0][1] if self._named else None
        t = torch.as_tensor(np.asarray(x), dtype=first.dtype if first is not None else None,
                            device=first.device if first is not None else None)
        return arrays.to_numpy(self._outputs_of(t))

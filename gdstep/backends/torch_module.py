"""The torch engine over any `nn.Module`: the four phases with autograd and torch.optim,
records of every layer, and exact checkpoints.

- forward keeps every layer's output (a Sequential runs child by child; any other module
  records through forward hooks);
- backward is one `torch.autograd.grad` over the layer outputs and the trainable
  parameters: δ = ∂L/∂(each output) and ∂L/∂W together, with no tensor hooks; the
  parameter gradients then go to `.grad` for the optimizer;
- update runs the real `optimizer.step()` and records its real state before and after.

Records hold copies made once (gdstep.backends.torch_checkpoint). Large tensors stay on their
device; only losses and norms come to the host (one transfer per phase).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from gdstep.backends.backward_pass import grads_by_backward, reentrant_checkpoint
from gdstep.backends.torch_layers import first_tensor, has_inplace, layer_infos, module_layers, row_calls
from gdstep.backends.torch_optim import apply, build, config_of, same_kind, torch_classes
from gdstep.backends.torch_ahead import DeviceAhead
from gdstep.backends.torch_checkpoint import Initial, CheckpointMixin
from gdstep.backends.detachable import detachable
from gdstep.backends.lean_forward import LeanForward
from gdstep.backends.torch_lean import LeanPhases
from gdstep.backends.torch_side import SideComputations
from gdstep.backends.torch_step import KeptStep
from gdstep.backends.torch_support import device_name, dtype_name, require_torch
from gdstep.errors import BackwardAgain, GdstepError
from gdstep.records import ParamUpdate


class ModuleBackend(CheckpointMixin, LeanForward, LeanPhases, DeviceAhead, SideComputations):
    name = "torch"

    def __init__(self, model, loss, optimizer, x, y, *, trainable: Sequence[str] | None = None,
                 layers=None, track_rng: bool = False, config=None):
        torch = require_torch()
        self._torch = torch
        self.model = model
        self.loss_fn = loss
        self.torch_optimizer = optimizer
        self.optimizer = config if config is not None else config_of(optimizer)
        self._named = list(model.named_parameters())
        first = self._named[0][1] if self._named else None
        self.device = device_name(first.device) if first is not None else "cpu"
        self.dtype = dtype_name(first.dtype) if first is not None else "float32"
        self.param_shapes = {name: tuple(p.shape) for name, p in self._named}
        if trainable is None:
            in_opt = {id(p) for g in optimizer.param_groups for p in g["params"]}
            trainable = [name for name, p in self._named if p.requires_grad and id(p) in in_opt]
        self.trainable = frozenset(trainable)
        self._train = [(name, p) for name, p in self._named if name in self.trainable]
        self._train_params = [p for _, p in self._train]
        self._rows, self._sequential = module_layers(model)
        self.layers = layers if layers is not None else layer_infos(model, self._rows)
        self._copy_outputs = has_inplace(model)
        self._produced: dict[int, Any] = {}       # copies of outputs as made (with in-place modules)
        self._buffers = [(name, b) for name, b in model.named_buffers()]
        self._buffer_swaps = 0            # buffers the loop replaced by assignment (attach mode's hook)
        self._track_rng = track_rng
        self._known_step = type(optimizer) in set(torch_classes().values())
        self.x, self.y = x, y
        self.n_samples = len(x) if x is not None else 0
        self._views = {name: p.detach() for name, p in self._named}
        self._by_name = dict(self._named)
        self._cache: dict[Any, tuple] = {}
        self._scalar_dtypes: dict[tuple, Any] = {}
        self._initial: dict[tuple, Initial] = {}
        self._graph: tuple | None = None
        self._loss_tensor = None
        self._slots: list = [None] * len(self._rows)
        self._order: list[int] = []
        self._capture = False
        self._hooks = []
        self._rng_forward = None
        self._batch_key: tuple | None = None
        self._updates = 0
        self._kept_step = KeptStep()       # the optimizer's step on kept lists (gdstep.backends.torch_step)
        self._fresh: tuple | None = None
        self._reuse_copies = True          # the next update starts from the last one's copies
        self._trust_versions = True        # a tensor whose version is unchanged holds its copy's values
        self.notes: list[str] = []
        # δ of the first layer needs the input in the graph when that layer has nothing to train
        row0 = self._rows[0][1] if self._rows else None
        self._input_grad = self._sequential and row0 is not None and not any(
            p.requires_grad and any(p is q for _, q in self._train) for p in row0.parameters())
        self._install_hooks()

    def _install_hooks(self) -> None:
        if self._sequential:
            return
        for i, (_, module) in enumerate(self._rows):
            if module is not self.model:
                self._hooks.append(module.register_forward_hook(detachable(self._hook(i), self)))

    def drop_layers(self, indices: Sequence[int]) -> None:
        """Forget rows that never produce an output (found by a trial forward)."""
        drop = set(indices)
        if not drop:
            return
        self.remove_hooks()
        self._rows = [row for i, row in enumerate(self._rows) if i not in drop]
        self.layers = layer_infos(self.model, self._rows)
        self._slots = [slot for i, slot in enumerate(self._slots) if i not in drop]
        self._install_hooks()

    def _hook(self, i: int):
        last = len(self._rows) - 1

        def record(module, args, output):
            if self._capture:
                self._row_ran(i, module, args, first_tensor(output), last)
                self._order.append(i)
        return record

    @property
    def call_order(self) -> list[int] | None:
        """The rows in the order the latest forward called them (None: as registered)."""
        return None if self._sequential else list(self._order)

    def probe(self, x) -> tuple[Any, list[bool]]:
        """Run the model once on `x`, in eval mode without gradients, changing nothing: its
        output, and which layer rows produced one (a module defined but never called did
        not). Raises what the model raises."""
        torch = self._torch
        called = [True] * len(self._rows)
        hooks = []
        if not self._sequential:
            called = [False] * len(self._rows)
            for i, (_, m) in enumerate(self._rows):
                hooks.append(m.register_forward_hook(lambda m, a, o, i=i: called.__setitem__(i, True)))
        try:
            with torch.no_grad(), self._eval():
                out = self.model(x)
        finally:
            for h in hooks:
                h.remove()
        return out, called

    def remove_hooks(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    # -- data ----------------------------------------------------------------------------------

    def batch(self, indices: np.ndarray) -> tuple[Any, Any]:
        x, y = self.x, self.y
        if len(indices) == self.n_samples and self._is_identity(indices):
            return x, y
        idx = self._index_tensor(indices)
        return x.index_select(0, idx), (y.index_select(0, idx) if y is not None else None)

    def _is_identity(self, indices: np.ndarray) -> bool:
        key = indices.base if indices.base is not None else indices
        if self._batch_key is not None and self._batch_key[0] is key:
            return self._batch_key[1]
        same = bool(indices[0] == 0 and indices[-1] == len(indices) - 1
                    and np.array_equal(indices, np.arange(len(indices))))
        self._batch_key = (key, same)
        return same

    def _index_tensor(self, indices: np.ndarray):
        torch = self._torch
        if not self.x.is_cuda and self.x.device.type == "cpu":
            return torch.from_numpy(indices if indices.flags.c_contiguous else np.ascontiguousarray(indices))
        base = indices.base
        if base is None or base.ndim != 1 or not base.flags.c_contiguous:
            return torch.as_tensor(indices, device=self.x.device)
        cached = getattr(self, "_index_cache", None)
        if cached is None or cached[0] is not base:
            cached = self._index_cache = (base, torch.as_tensor(base, device=self.x.device))
        start = (indices.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // base.itemsize
        if indices.strides != base.strides or not 0 <= start <= len(base) - len(indices):
            return torch.as_tensor(indices, device=self.x.device)
        return cached[1][start:start + len(indices)]

    # -- phases ----------------------------------------------------------------------------------

    def forward(self, x) -> tuple[Any, ...]:
        torch = self._torch
        if self._track_rng:
            self._rng_forward = self._rng_state()
        self._produced = {}
        if torch.is_grad_enabled():
            outs, out = self._run_model(x)
        else:
            with torch.enable_grad():
                outs, out = self._run_model(x)
        if out is None:
            raise GdstepError(f"the model returned {type(out).__name__}, not a tensor")
        self._graph = (outs, out)
        if self._copy_outputs:       # the copies made as each was produced, before an in-place module wrote over it
            produced, self._produced = self._produced, {}
            return tuple([None if o is None else produced[i] if i in produced else o.detach().clone()
                          for i, o in enumerate(outs)])
        return tuple([None if o is None else o.detach() for o in outs])

    def _run_model(self, x) -> tuple[list, Any]:
        """Every row's output and the model's output, with the autograd graph."""
        if self._sequential:
            h = x.detach().requires_grad_() if self._input_grad and x.is_floating_point() else x
            return self._run_rows(h, row_calls(self._torch, self._rows))
        self._slots = [None] * len(self._rows)
        self._order = []
        capture, self._capture = self._capture, True
        try:
            out = self.model(x)
        finally:
            self._capture = capture
        outs = self._slots
        outs[-1] = first_tensor(out)
        return outs, outs[-1]

    def _run_rows(self, h, calls: list) -> tuple[list, Any]:
        """A Sequential's rows one after another on `h` (each by its `calls` entry): every
        output kept, or (a lean forward) tested as made and let go."""
        outs = []
        lean = self._lean_rows
        last = len(self._rows) - 1
        walk = self._walk
        for i, call in enumerate(calls):
            given, h = h, call(h)
            outs.append(h if lean is None or i == last else None)
            if self._copy_outputs and outs[-1] is not None:
                self._produced[i] = h.detach().clone()
            if walk is not None:
                walk.link(i, self._rows[i][1], (given,), first_tensor(h))
            if lean is not None and i in lean[0] and not (walk is not None and walk.proven(i)):
                self._note_finite(lean, first_tensor(h))
        return outs, h

    def loss(self, outputs: Sequence[Any], y, per_sample: bool = True) -> tuple[Any, float]:
        out = self._graph[1] if self._graph is not None else outputs[-1]
        per, loss = self.loss_fn(out, y, per_sample)
        self._loss_tensor = loss
        value = loss.item()
        if per is None and not per_sample and not math.isfinite(value):   # a pause names the sample
            per = self.loss_fn.per_sample(out, y)
        return per, value

    def backward(self, x, outputs, y) -> tuple[Any, tuple[Any, ...], dict[str, Any]]:
        loss = self._loss_tensor
        if loss is None or self._graph is None:
            raise GdstepError("backward needs the loss of this iteration's forward")
        outs = self._graph[0]
        wanted = [i for i, o in enumerate(outs) if o is not None and o.requires_grad]
        inputs = [outs[i] for i in wanted] + self._train_params
        grads = self.autograd_grads(loss, inputs)
        self._graph = self._loss_tensor = None
        deltas: list = [None] * len(outs)
        for i, g in zip(wanted, grads):
            deltas[i] = g
        param_grads = {}
        for (name, p), g in zip(self._train, grads[len(wanted):]):
            p.grad = g
            if g is not None:
                param_grads[name] = g
        return deltas[-1], tuple(deltas), param_grads

    _through_backward: bool | None = None     # whether gradients come by loss.backward() (None: not known yet)

    def autograd_grads(self, loss, inputs: list) -> list:
        """∂loss/∂(each input): the one place the gradients are computed; by loss.backward()
        where the model runs a reentrant torch.utils.checkpoint, which refuses autograd.grad
        (gdstep.backends.backward_pass; a data-parallel backend always computes them so)."""
        if not (loss.requires_grad and inputs):
            return [None] * len(inputs)
        if self._through_backward is None:
            self._through_backward = reentrant_checkpoint(loss)
        if self._through_backward:
            others = [p for name, p in self._named if p.requires_grad and name not in self.trainable]
            return grads_by_backward(loss, inputs, self._train_params, others)
        try:
            return list(self._torch.autograd.grad(loss, inputs, allow_unused=True))
        except RuntimeError as e:
            if "use_reentrant=True" not in str(e):
                raise
            self._through_backward = True        # from the next backward on
            raise BackwardAgain("the model runs torch.utils.checkpoint(use_reentrant=True), which it did not in its "
                                "first iteration: its gradients come by loss.backward() from now on") from None

    def optimizer_step(self) -> None:
        """The optimizer's step: the one place it is taken (a GradScaler's step instead), on
        kept lists where gdstep.backends.torch_step can take it, else by `step()`: the same bits."""
        if not self._kept_step.step(self._torch, self.torch_optimizer):
            self.torch_optimizer.step()

    def grad_sq_norms(self, grads: Mapping[str, Any]) -> dict[str, float]:
        """‖g‖² per parameter: one fused norm over all of them, one transfer to the host."""
        if not grads:
            return {}
        torch = self._torch
        tensors = list(grads.values())
        try:
            norms = torch._foreach_norm(tensors)
        except (RuntimeError, TypeError):
            norms = [torch.linalg.vector_norm(g) for g in tensors]
        if norms[0].is_cpu:           # exact as Python floats; on the CPU a read costs less than a stack
            values = [n.item() for n in norms]
        else:
            values = torch.stack(norms).tolist() if len(norms) > 1 else [norms[0].item()]
        sq = {name: v * v for name, v in zip(grads, values)}
        if self._bounds_pay:
            self.update_bound.measured(grads, sq)
        return sq

    def update(self, grads: Mapping[str, Any]) -> dict[str, ParamUpdate]:
        for name, p in self._train:
            g = grads.get(name)
            if p.grad is not g:
                p.grad = g
        names = list(grads)
        fresh = self._fresh
        if fresh is not None and fresh[0].keys() >= grads.keys():
            old, before = fresh
        else:
            old, before = self._param_copies(names), self._state_copies()
        if not self._known_step:   # an optimizer of the user's may change .grad in place
            for _, p in self._train:
                if p.grad is not None:
                    p.grad = p.grad.clone()
        self.optimizer_step()
        self._updates += 1
        by_name = self._by_name
        after, made = self._state_copies([by_name[name] for name in names])
        new = dict(zip(names, made))
        # Nothing changes parameters or optimizer state between updates but restore and
        # set_optimizer (which forget this): the next update starts from these copies.
        self._fresh = (new, after) if self._reuse_copies else None
        return {name: ParamUpdate(name, old[name], grads[name], new[name], before[name], after[name]) for name in names}

    # -- state -----------------------------------------------------------------------------------

    def params(self) -> Mapping[str, Any]:
        return self._views

    def optimizer_state(self) -> Mapping[str, Mapping[str, Any]]:
        torch = self._torch
        out = {}
        for name, p in self._train:
            st = self.torch_optimizer.state.get(p)
            if not st:
                out[name] = self._initial_state(name, p)
                continue
            out[name] = {k: (self._scalar((name, k), v) if isinstance(v, torch.Tensor) and v.ndim == 0 and v.device.type == "cpu"
                             else v) for k, v in st.items()}
        return out

    def set_optimizer(self, optimizer, fresh_state: bool = True) -> None:
        self._fresh = None
        if not fresh_state and same_kind(optimizer, self.torch_optimizer):
            apply(optimizer, self.torch_optimizer)
        else:
            self.torch_optimizer = build(optimizer, [p for _, p in self._train])
            self._known_step = type(self.torch_optimizer) in set(torch_classes().values())
        self.optimizer = optimizer

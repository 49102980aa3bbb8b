"""The user's own model as users write it (attach mode and Python scenarios).

- a forward with more arguments than the input (`model(x, hidden)`), and inputs, targets
  and outputs of any structure (tuple, dict): the whole output goes to `loss_fn`, and each
  output tensor is shown by name (`named_outputs`);
- a hook between backward and the optimizer's step (`before_update`, e.g. clipping) and a
  GradScaler (the loss scaled for backward, the gradients unscaled, the steps the scaler
  skips skipped), so the update record holds the gradient the optimizer really used;
- a scheduler that gdstep steps after each update (a Python scenario's), kept in checkpoints;
- several param groups, each with its own hyperparameters (`set lr 0.1 group=1`);
- an honest replay: a recomputed iteration's loss and gradient norm are compared with the
  ones first computed (or observed in the loop); a difference is announced
  (gdstep.backends.attach_replay).
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

from gdstep.backends.attach_replay import ReplayCheck
from gdstep.backends.torch_layers import first_tensor
from gdstep.backends.torch_module import ModuleBackend
from gdstep.backends.torch_optim import config_of, group_hyperparameters, same_kind, write_group
from gdstep.errors import GdstepError


def tree_map(fn, value):
    """`fn` applied to every tensor inside tuples, lists and dicts (other leaves kept)."""
    if hasattr(value, "data_ptr"):
        return fn(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(tree_map(fn, v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(tree_map(fn, v) for v in value)
    if isinstance(value, dict):
        return {k: tree_map(fn, v) for k, v in value.items()}
    return value


def named_tensors(value, prefix: str = "output") -> list[tuple[str, Any]]:
    """[(name, tensor)] of every tensor in a model's output: `output`, `output[1]`,
    `output['mu']`, `output[1][0]` (an LSTM's (h, c))."""
    if hasattr(value, "data_ptr"):
        return [(prefix, value)]
    out: list = []
    if isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            out += named_tensors(v, f"{prefix}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            out += named_tensors(v, f"{prefix}[{k!r}]")
    return out


def rows(value) -> int:
    """The number of samples of a batch: the first dimension of its first tensor."""
    t = first_tensor(value) if not hasattr(value, "shape") else value
    if t is None:
        raise GdstepError(f"a batch needs at least one tensor, got {type(value).__name__}")
    return int(t.shape[0]) if t.ndim else 1


def detached(value):
    """A value kept for recomputing: tensors that carry a graph (an RNN's hidden state from
    the last iteration) are detached; their values stay shared."""
    return tree_map(lambda t: t.detach() if t.grad_fn is not None else t, value)


class UserModuleBackend(ReplayCheck, ModuleBackend):
    def __init__(self, model, loss, optimizer, x, y, *, before_update=None, scaler=None, scheduler=None,
                 step_scheduler: bool = False, **kw):
        self.before_update = before_update
        self.scaler = scaler if scaler is not None and scaler.is_enabled() else None
        self.scheduler = scheduler
        self._step_scheduler = step_scheduler and scheduler is not None
        self.output = None                 # the latest forward's whole output (detached)
        self.named_outputs: list[tuple[str, Any]] = []
        self.skipped: list[int] = []       # steps a GradScaler skipped
        self.lr_history: dict[int, tuple[float, ...]] = {}   # step -> each group's lr in force
        self._groups_at: dict[int, tuple] = {}     # step -> each group's hyperparameters (several groups)
        super().__init__(model, loss, optimizer, x, y, **kw)
        self._init_replay()

    # -- structures ------------------------------------------------------------------------------

    @property
    def scheduler_name(self) -> str | None:
        return type(self.scheduler).__name__ if self.scheduler is not None else None

    def _inputs(self, x, y) -> tuple[Any, tuple, dict, Any]:
        """(input, more arguments, keyword arguments, target) of the batch whose input is `x`
        (attach mode keeps them; a Python scenario's batches are plain tensors)."""
        return x, (), {}, y

    def _real_target(self, y):
        """The target of the batch at hand, whose shown tensor is `y`."""
        return y

    def batch(self, indices):
        self._batch_id = hash(indices.tobytes()) if hasattr(indices, "tobytes") else None
        return super().batch(indices)

    def forward(self, x):
        self.lr_history[self._updates] = tuple(_plain_lr(g) for g in self.torch_optimizer.param_groups)
        self._note_forward()
        return super().forward(x)

    def _run_model(self, x):
        x, args, kwargs, _ = self._inputs(x, None)
        if self._sequential and not args and not kwargs and x is not None:
            outs, out = super()._run_model(x)
        else:
            self._slots = [None] * len(self._rows)
            capture, self._capture = self._capture, True
            try:
                out = self.model(*_call_args(x, args), **kwargs)
            finally:
                self._capture = capture
            outs = self._slots
            outs[-1] = first_tensor(out)
            if outs[-1] is None:
                raise GdstepError(f"the model returned {type(out).__name__} with no tensor in it")
        self._keep_output(out)
        return outs, out

    def _keep_output(self, out) -> None:
        self.output = tree_map(lambda t: t.detach(), out)
        self.named_outputs = named_tensors(self.output)

    def loss(self, outputs, y, per_sample: bool = True):
        per_sample, value = super().loss(outputs, self._real_target(y), per_sample)
        self._check_replay("loss", value)
        return per_sample, value

    def loss_lean(self, outputs, y, flags, per_sample: bool = True):
        per_sample, value, finite = super().loss_lean(outputs, self._real_target(y), flags, per_sample)
        self._check_replay("loss", value)
        return per_sample, value, finite

    def grad_sq_norms(self, grads):
        sq = super().grad_sq_norms(grads)
        self._check_replay("grad", sum(sq.values()))
        return sq

    # -- side computations: the whole call, the whole output --------------------------------------

    def _call(self, params: Mapping[str, Any], x):
        torch = self._torch
        if type(self.model) is torch.nn.ModuleDict:      # several models attached (a GAN): none is "the" model
            raise GdstepError("this session holds several models (a GAN's), and no one forward runs them all: "
                              "gradient checks, the landscape, the line and evaluations need one model's; attach "
                              "one model to use them")
        x, args, kwargs, _ = self._inputs(x, None)
        values = dict(params)
        for name, b in self._buffers:
            values[name] = b.detach().clone()
        out = torch.func.functional_call(self.model, values, _call_args(x, args), kwargs, strict=False)
        if first_tensor(out) is None:
            raise GdstepError("the model returned no tensor")
        return out

    def _target(self, x, y):
        return self._inputs(x, y)[3]

    def loss_value(self, x, y, overrides=None) -> float:
        return super().loss_value(x, self._target(x, y), overrides)

    def loss_at(self, x, y, params) -> float:
        return super().loss_at(x, self._target(x, y), params)

    def gradients(self, x, y):
        return super().gradients(x, self._target(x, y))

    def evaluate(self):
        torch = self._torch
        x, y = self.evaluation_data()
        out = self._outputs_of(x)
        y = self._target(x, y)
        with torch.no_grad():
            _, loss = self.loss_fn(out, y, False)
            accuracy = getattr(self.loss_fn, "accuracy", None)
            if accuracy is None or not isinstance(out, torch.Tensor) or not isinstance(y, torch.Tensor):
                return loss.item(), None
            try:
                return loss.item(), accuracy(out, y)
            except (RuntimeError, ValueError, IndexError, TypeError):   # an output accuracy cannot read
                return loss.item(), None

    def predict(self, x):
        import numpy as np
        torch = self._torch
        first = self._named[0][1] if self._named else None
        t = torch.as_tensor(np.asarray(x), dtype=first.dtype if first is not None else None,
                            device=first.device if first is not None else None)
        return first_tensor(self._outputs_of(t)).detach().cpu().numpy()

    # -- gradients and the step: GradScaler, the hook between them, the scheduler -----------------

    def autograd_grads(self, loss, inputs: list) -> list:
        if self.scaler is not None:
            loss = self.scaler.scale(loss)
        return super().autograd_grads(loss, inputs)

    def backward(self, x, outputs, y):
        grad_output, deltas, grads = super().backward(x, outputs, y)
        if self.scaler is not None:
            inv = 1.0 / self.scaler.get_scale()
            deltas = tuple(None if d is None else d * inv for d in deltas)
            grad_output = deltas[-1] if deltas else grad_output
            self.scaler.unscale_(self.torch_optimizer)       # p.grad is grads: the records hold them unscaled
        return grad_output, deltas, grads

    def backward_lean(self, x, outputs, y):
        grads = super().backward_lean(x, outputs, y)
        if self.scaler is not None:
            self.scaler.unscale_(self.torch_optimizer)
        return grads

    def _used_grads(self, grads: Mapping[str, Any]) -> Mapping[str, Any]:
        """The gradients the optimizer's step will use: after `before_update` (clipping works
        on copies, so the backward record keeps the gradients backward made)."""
        if self.before_update is None:
            return grads
        for name, p in self._train:
            g = grads.get(name)
            p.grad = None if g is None else g.clone()
        try:
            self.before_update()
        except Exception as e:
            raise GdstepError(f"before_update raised {type(e).__name__}: {e}") from None
        return {name: p.grad for name, p in self._train if p.grad is not None}

    def _note_groups(self) -> None:
        """Each group's values in force for this update, for its formula (several groups)."""
        if len(self.torch_optimizer.param_groups) > 1:
            self._groups_at[self._updates] = tuple(group_hyperparameters(g) for g in self.torch_optimizer.param_groups)

    def update(self, grads):
        self._note_groups()
        return super().update(self._used_grads(grads))

    def update_lean(self, grads, check: bool = True, defer: bool = False):
        return super().update_lean(self._used_grads(grads), check, defer)

    def optimizer_step(self) -> None:
        if self.scaler is not None:
            state = self.scaler._per_optimizer_states[id(self.torch_optimizer)]
            found = sum(v.item() for v in state.get("found_inf_per_device", {}).values())
            self.scaler.step(self.torch_optimizer)
            self.scaler.update()
            if found:
                self.skipped.append(self._updates)
                self._announce(self._updates, "GradScaler skipped this step (inf/nan gradients at this scale); "
                                              f"scale now {self.scaler.get_scale():g}", inexact=False)
        else:
            super().optimizer_step()
        if self._step_scheduler:
            self.scheduler.step()
            self.optimizer = config_of(self.torch_optimizer)      # the lr in force next

    # -- param groups ----------------------------------------------------------------------------

    def group_hyperparameters(self) -> list[dict[str, Any]]:
        """Each param group's hyperparameters as they are now, with the names of its parameters."""
        names = {id(p): name for name, p in self._named}
        return [dict(group_hyperparameters(g), params=tuple(names.get(id(p), "?") for p in g["params"]))
                for g in self.torch_optimizer.param_groups]

    def group_of(self, name: str) -> int:
        p = self._by_name[name]
        for i, g in enumerate(self.torch_optimizer.param_groups):
            if any(q is p for q in g["params"]):
                return i
        raise GdstepError(f"{name} is in no param group of the optimizer")

    def config_for(self, name: str, step: int | None = None) -> Any:
        """The optimizer config of the group `name` is in — its own lr and hyperparameters,
        as they were in the update of `step` (None: as they are now)."""
        opt = self.torch_optimizer
        index = self.group_of(name)
        group = dict(opt.param_groups[index])
        if step is not None and step in self._groups_at:
            group.update(self._groups_at[step][index])
        owner = opt.owner_of(self._by_name[name]) if hasattr(opt, "owner_of") else opt
        solo = copy.copy(owner)
        solo.param_groups = [group]
        return config_of(solo)

    def set_groups(self, values: Mapping[int, Mapping[str, Any]]) -> None:
        """Hyperparameters for some groups, keeping the state (a `param_groups` edit)."""
        groups = self.torch_optimizer.param_groups
        for i, changes in values.items():
            if not 0 <= i < len(groups):
                raise GdstepError(f"no param group {i} (the optimizer has {len(groups)})")
            write_group(groups[i], changes)
        self.optimizer = config_of(self.torch_optimizer)
        self._fresh = None

    def set_optimizer(self, optimizer, fresh_state: bool = True) -> None:
        """An edit of the same optimizer writes only the hyperparameters it changes into every
        group (`set lr` keeps each group's momentum); a new one starts afresh."""
        old = self.optimizer
        if (not fresh_state and same_kind(optimizer, self.torch_optimizer) and type(old) is type(optimizer)
                and len(self.torch_optimizer.param_groups) > 1):
            import dataclasses
            changed = {f.name: getattr(optimizer, f.name) for f in dataclasses.fields(optimizer)
                       if getattr(optimizer, f.name) != getattr(old, f.name)}
            self.set_groups({i: changed for i in range(len(self.torch_optimizer.param_groups))})
            return
        if fresh_state:
            self._new_branch()
        super().set_optimizer(optimizer, fresh_state)

    # -- checkpoints: the scaler's and the scheduler's state too ----------------------------------

    def _capture_extra(self):
        scaler = self.scaler.state_dict() if self.scaler is not None else None
        scheduler = copy.deepcopy(self.scheduler.state_dict()) if self._step_scheduler else None
        return scaler, scheduler

    def _restore_extra(self, extra) -> None:
        if extra is None:
            return
        scaler, scheduler = extra
        if scaler is not None and self.scaler is not None:
            from collections import defaultdict

            self.scaler.load_state_dict(scaler)
            fresh = self.scaler._per_optimizer_states.default_factory
            self.scaler._per_optimizer_states = defaultdict(fresh)
        if scheduler is not None:
            self.scheduler.load_state_dict(copy.deepcopy(scheduler))


def _call_args(x, args: tuple) -> tuple:
    return args if x is None else (x, *args)


def _plain_lr(group) -> float:
    lr = group.get("lr")
    return float(lr.item() if hasattr(lr, "item") else lr) if lr is not None else float("nan")

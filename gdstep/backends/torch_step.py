"""The optimizer's step of gdstep's own torch optimizers, on lists kept from one step to the
next, with the same arithmetic as torch.optim's `step()`, bit for bit.

`step()` gathers its lists again every time (`_init_group`), runs its hooks' machinery, and
on the CPU takes its per-parameter loop: a dozen tensor operations a parameter. Here the
lists are kept while the optimizer and each parameter's state stay the same objects (a
restore or `load_state_dict` makes new ones), and the step is taken by

- Adam and AdamW on the CPU: `adam_foreach`, torch's multi-tensor Adam (`_multi_tensor_adam`,
  its branch for plain-number hyperparameters) written out operation for operation, with
  the bias corrections from step counts kept as numbers (torch reads each parameter's count
  tensor back twice a step: twelve reads on a three-layer MLP);
- the others (and Adam off the CPU): torch.optim's own functional form (`torch.optim.sgd.sgd`,
  …), called as `step()` calls it, on the CPU with its multi-tensor loop.

The multi-tensor loops run the per-parameter loop's operations in its order, each on every
tensor at once: on the CPU, the same kernels, the same bits (held to `torch.optim`'s default
step, every optimizer and option gdstep builds, float32 and float64:
tests/test_torch_step.py). A step hook, a missing or sparse gradient, several param groups,
other options and the first step (which makes the state) take `step()` itself.

Measured on the MLP 64-128-128-10's Adam, in a run: `step()` 197 µs a step; the functional
form on kept lists ~180 µs; `adam_foreach` ~140 µs.
"""

from __future__ import annotations

import importlib
import sys
from typing import Callable

_EMPTY = object()      # a state list the group's options leave out: passed as []


def _adam(group: dict) -> tuple:
    return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq" if group["amsgrad"] else _EMPTY, "step")


def _adam_args(group: dict) -> dict:
    beta1, beta2 = group["betas"]
    return dict(amsgrad=group["amsgrad"], has_complex=False, beta1=beta1, beta2=beta2, lr=group["lr"],
                weight_decay=group["weight_decay"], eps=group["eps"], maximize=group["maximize"],
                capturable=False, differentiable=False, fused=None, grad_scale=None, found_inf=None,
                decoupled_weight_decay=group["decoupled_weight_decay"])


def _sgd(group: dict) -> tuple:
    return ("momentum_buffer" if group["momentum"] != 0 else _EMPTY,)


def _sgd_args(group: dict) -> dict:
    return dict(weight_decay=group["weight_decay"], momentum=group["momentum"], lr=group["lr"],
                dampening=group["dampening"], nesterov=group["nesterov"], maximize=group["maximize"],
                has_sparse_grad=False, fused=None, grad_scale=None, found_inf=None)


def _rmsprop(group: dict) -> tuple:
    return ("square_avg", "grad_avg" if group["centered"] else _EMPTY,
            "momentum_buffer" if group["momentum"] > 0 else _EMPTY, "step")


def _rmsprop_args(group: dict) -> dict:
    return dict(lr=group["lr"], alpha=group["alpha"], eps=group["eps"], weight_decay=group["weight_decay"],
                momentum=group["momentum"], centered=group["centered"], maximize=group["maximize"],
                differentiable=False, capturable=False, has_complex=False)


def _adagrad(group: dict) -> tuple:
    return ("sum", "step")


def _adagrad_args(group: dict) -> dict:
    return dict(lr=group["lr"], weight_decay=group["weight_decay"], lr_decay=group["lr_decay"], eps=group["eps"],
                has_sparse_grad=False, maximize=group["maximize"], differentiable=False, has_complex=False,
                fused=None, grad_scale=None, found_inf=None)


# torch.optim's class name: (its module, whose function of that name is the functional form;
# the state lists a group gives it, in its order; the keyword arguments, as step() passes them)
FORMS: dict[str, tuple[str, Callable[[dict], tuple], Callable[[dict], dict]]] = {
    "Adam": ("adam", _adam, _adam_args), "AdamW": ("adam", _adam, _adam_args), "SGD": ("sgd", _sgd, _sgd_args),
    "RMSprop": ("rmsprop", _rmsprop, _rmsprop_args), "Adagrad": ("adagrad", _adagrad, _adagrad_args),
}


def adam_foreach(torch, params: list, grads: list, exp_avgs: list, exp_avg_sqs: list, max_exp_avg_sqs: list,
                 steps: list, counts: list, group: dict) -> None:
    """One Adam (AdamW) step: torch's `_multi_tensor_adam` for plain-number hyperparameters,
    operation for operation. `counts`: each parameter's step count (its `steps` tensor's
    value), a number, counted here with it."""
    beta1, beta2 = group["betas"]
    lr, weight_decay, eps = group["lr"], group["weight_decay"], group["eps"]
    if group["maximize"]:
        grads = torch._foreach_neg(grads)
    torch._foreach_add_(steps, 1)
    for i in range(len(counts)):
        counts[i] += 1
    if weight_decay != 0:
        if group["decoupled_weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        elif group["maximize"]:
            torch._foreach_add_(grads, params, alpha=weight_decay)
        else:
            grads = torch._foreach_add(grads, params, alpha=weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
    step_size = [(lr / (1 - beta1 ** t)) * -1 for t in counts]
    bias_correction2_sqrt = [(1 - beta2 ** t) ** 0.5 for t in counts]
    if group["amsgrad"]:
        torch._foreach_maximum_(max_exp_avg_sqs, exp_avg_sqs)
        denom = torch._foreach_sqrt(max_exp_avg_sqs)
    else:
        denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bias_correction2_sqrt)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)


class KeptStep:
    """The step on kept lists, for one backend's optimizer (whichever it holds now)."""

    def __init__(self) -> None:
        # (optimizer, group, keys, [(state, its values)], lists, function, foreach, direct)
        self._kept: tuple | None = None
        self._counts: tuple[list, list] | None = None     # adam_foreach's (counts, their tensors' versions)

    def step(self, torch, optimizer) -> bool:
        """Take `optimizer`'s step here; False where `step()` must take it."""
        group = self._group(torch, optimizer)
        if group is None:
            return False
        form = FORMS[type(optimizer).__name__]
        keys = form[1](group)
        params = group["params"]
        kept = self._kept
        if not (kept is not None and kept[0] is optimizer and kept[1] is group and kept[2] == keys
                and self._holds(optimizer.state, params, kept[3])):
            kept = self._keep(torch, optimizer, group, keys, form[0])
            if kept is None:
                return False
        grads = []
        for p in params:
            g = p.grad
            if g is None or g.is_sparse:
                return False
            grads.append(g)
        lists = kept[4]
        with torch.no_grad():
            if kept[7]:
                steps = lists[3]
                counts = self._step_counts(steps)
                adam_foreach(torch, params, grads, *lists, counts, group)
                self._counts = (counts, [t._version for t in steps])
            else:
                kept[5](params, grads, *lists, foreach=kept[6], **form[2](group))
        return True

    def _step_counts(self, steps: list) -> list:
        """Each step tensor's value as a number: kept from the last step while no one else
        changed a tensor (its version counter stands where that step left it)."""
        kept = self._counts
        if kept is not None and len(kept[1]) == len(steps) and all(t._version == v for t, v in zip(steps, kept[1])):
            return kept[0]
        return [t.item() for t in steps]

    @staticmethod
    def _group(torch, optimizer) -> dict | None:
        """The optimizer's one param group, where the kept step can take its step: a class of
        torch.optim's own that gdstep builds, no step hooks, the options `step()` would take
        its default loop with."""
        torch_optimizer = sys.modules["torch.optim.optimizer"]      # loaded with torch.optim
        name = type(optimizer).__name__
        if (name not in FORMS or type(optimizer) is not getattr(torch.optim, name, None)
                or "step" in optimizer.__dict__           # wrapped (an lr scheduler counts the calls)
                or len(optimizer.param_groups) != 1 or optimizer._optimizer_step_pre_hooks
                or optimizer._optimizer_step_post_hooks or torch_optimizer._global_optimizer_pre_hooks
                or torch_optimizer._global_optimizer_post_hooks
                or getattr(optimizer, "grad_scale", None) is not None or getattr(optimizer, "found_inf", None) is not None):
            return None
        group = optimizer.param_groups[0]
        if (group.get("foreach") or group.get("fused") or group.get("capturable") or group.get("differentiable")
                or not group["params"] or not all(isinstance(group[k], (int, float)) for k in ("lr", "weight_decay"))
                or ("betas" in group and not all(isinstance(b, (int, float)) for b in group["betas"]))):
            return None
        return group

    @staticmethod
    def _holds(states, params: list, pairs: list) -> bool:
        """Whether each parameter's state is still the dict kept (or still none), holding the
        same tensors."""
        for p, (state, values) in zip(params, pairs):
            if states.get(p) is not state:
                return False
            if state is not None:
                if len(state) != len(values):
                    return False
                for a, b in zip(state.values(), values):
                    if a is not b:
                        return False
        return True

    def _keep(self, torch, optimizer, group: dict, keys: tuple, module: str) -> tuple | None:
        """The lists of this optimizer's state, kept; None where the state is not all there (the
        first step makes it) or is not what the functional form takes."""
        self._kept = self._counts = None
        params, states = group["params"], optimizer.state
        pairs, lists = [], [[] for _ in keys]
        for p in params:
            state = states.get(p)
            if not (p.requires_grad and p.dtype.is_floating_point and not p.is_sparse and not p.is_complex()):
                return None
            for key, out in zip(keys, lists):
                if key is not _EMPTY:
                    value = None if state is None else state.get(key)
                    if not isinstance(value, torch.Tensor):
                        return None
                    out.append(value)
            pairs.append((state, () if state is None else tuple(state.values())))
        function = getattr(importlib.import_module(f"torch.optim.{module}"), module)
        first = params[0]
        same = all(p.device == first.device and p.dtype == first.dtype for p in params)
        # the multi-tensor loop where the CPU's default is the per-parameter one (the same
        # kernels, the same bits); on another device torch's own default, as step() takes it
        foreach = (same and first.dtype in (torch.float32, torch.float64)) if first.is_cpu else None
        direct = bool(foreach) and module == "adam" and all(s.is_cpu and s.numel() == 1 for s in lists[3])
        self._kept = (optimizer, group, keys, pairs, lists, function, foreach, direct)
        return self._kept

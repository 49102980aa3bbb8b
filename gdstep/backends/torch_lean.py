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
from operator import is_
from typing import Any, Mapping, NamedTuple

from gdstep import arrays
from gdstep.backends.torch_finite import cpu_norms, exactly_finite, finite_flag, fused_finite
from gdstep.backends.torch_optim import twin_formula
from gdstep.backends.update_bound import UpdateBound
from gdstep.errors import GdstepError


def _held(states: Mapping) -> list:
    """Each parameter of the optimizer's state, its state dict and that dict's values, in
    order: compared by identity, the same list says every state tensor is the one it was (a
    state tensor replaced by assignment, `state.clear()` then a step, makes new ones). Read
    without hashing a tensor (torch's `Tensor.__hash__` is Python)."""
    return [x for p, state in states.items() for x in (p, state, *state.values())]


BOUNDS_FROM = 1 << 20
"""Bytes of parameters from which a run bounds its updates rather than reading them."""


class UpdateParts(NamedTuple):
    """What an update changed, for its finiteness test and its bounds."""
    plain: list           # the parameters (and any state that shows in them)
    guarded: list         # the state tested apart (Optimizer.guarded_state)
    watched: list         # plain, guarded, and the rest of the state the bounds are about
    names: list           # the state name of each of watched[len(plain):]
    others: tuple         # the rest of the state's tensors (Adam's step count): unwatched, unmoved


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

    def loss_lean(self, outputs, y, flags: list, per_sample: bool = True) -> tuple[Any, float, list[bool]]:
        """The loss, with pending flags read back in the same transfer."""
        torch = self._torch
        out = self._graph[1] if self._graph is not None else outputs[-1]
        per, loss = self.loss_fn(out, y, per_sample)
        self._loss_tensor = loss
        values = (torch.stack([loss.detach().double(), *(f.double() for f in flags)]).tolist() if flags
                  else [loss.item()])       # the loss alone: a read costs less than a stack (0.5 µs, not 8)
        if per is None and not per_sample and not math.isfinite(values[0]):   # a pause names the sample
            per = self.loss_fn.per_sample(out, y)
        return per, values[0], [math.isfinite(v) for v in values[1:]]

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
        if self._bounds_pay:
            self.update_bound.before_step(self._updates, self.torch_optimizer.param_groups)
        self.optimizer_step()
        return self._stepped(grads, check, defer)

    def _stepped(self, grads: Mapping[str, Any], check: bool, defer: bool):
        """After an optimizer step: count it, and (with `check`) the finiteness of what it
        changed. Where bounds already say it is finite (`UpdateBound`), nothing is read; a
        full test's norms give the bounds anew."""
        self._updates += 1
        self._fresh = None
        if not check:
            return True
        tensors = self._updated_tensors(grads)
        if not tensors:
            return True
        if defer or not tensors[0].is_cpu or not self._bounds_pay:
            if defer:
                self.update_bound.forget()
                return finite_flag(self._torch, tensors)
            return self._read_finite(tensors)
        parts = self._update_parts(grads)
        bounds = self._bounds_after(grads, parts)
        if bounds is not None:                  # finite by its bounds: nothing to read
            self.update_bound.tested(parts.watched, bounds, parts.others)
            return True
        torch = self._torch
        norms = cpu_norms(torch, parts.watched)
        tested = len(parts.plain) + len(parts.guarded)
        finite = all(math.isfinite(n) for n in norms[:tested]) or exactly_finite(torch, parts.plain + parts.guarded)
        rules = self._bound_rules if finite and self._known_step else None
        known = (rules is not None and all(math.isfinite(n) for n in norms)       # √v needs v ≥ 0: so it stays
                 and all(float(t.min()) >= 0 for t, name in zip(parts.guarded, parts.names) if name in rules.guarded_state))
        self.update_bound.tested(parts.watched, UpdateBound.from_norms(norms[:len(parts.plain)], zip(
            parts.names, norms[len(parts.plain):])) if known else None, parts.others)
        return finite

    def updated_finite(self, grads: Mapping[str, Any]) -> bool:
        """Whether the tensors an update with these gradients changes, and their guarded
        optimizer state, are finite now: one fused test, read."""
        return self._read_finite(self._updated_tensors(grads))

    def _read_finite(self, tensors: list) -> bool:
        self.update_bound.forget()      # no bounds carried: the next test reads them all
        if not tensors:
            return True
        return self._finite_on_cpu(tensors) if tensors[0].is_cpu else fused_finite(self._torch, tensors)

    @property
    def update_test_reads(self) -> bool:
        """Whether an update's test reads what it changed (no bounds say it is finite: a
        small model), so one test may follow several updates (gdstep.run_ahead)."""
        return not self._bounds_pay

    owns_tensors = False
    """Whether the model and optimizer are gdstep's own (built from a scenario), so that
    numpy may view their tensors: a view marks a tensor's storage not resizable, for good,
    which a user's own module or optimizer state must never find done to it."""

    def _finite_on_cpu(self, tensors: list) -> bool:
        """Whether CPU tensors are all finite, read through numpy views of them kept while
        the list (`_updated_tensors`') and each tensor's memory stay the same, where the
        tensors are gdstep's own (`owns_tensors`): a numpy dot product costs a third of a
        torch norm and its read on a small tensor, where each operation's fixed cost is
        what counts (in a run of the MLP 64-128-128-10, 41 µs against 56 µs for Adam's
        12 tensors: 6 products)."""
        if not self.owns_tensors:       # .numpy() marks a storage not resizable, for good: not the user's
            return fused_finite(self._torch, tensors)
        kept = getattr(self, "_cpu_views", None)
        if kept is None or kept[0] is not tensors or any(t.data_ptr() != p for t, p in zip(tensors, kept[1])):
            kept = self._cpu_views = (tensors, [t.data_ptr() for t in tensors], arrays.paired_views(tensors))
        if kept[2] is None:
            return fused_finite(self._torch, tensors)
        return arrays.all_finite_paired(kept[2])

    @property
    def _bounds_pay(self) -> bool:
        """Whether the update's bounds cost less than the test they spare: where the
        parameters take at least `BOUNDS_FROM` bytes. Below, reading them (and the state
        tested with them) is cheaper than the bounds' bookkeeping, ~100 µs of Python a step
        (measured: one fused read of the MLP 64-128-128-10's 52,000 numbers, 33 µs; of the
        784-1024-1024-10's 3.7 million, 790 µs)."""
        params = self._train_params
        kept = getattr(self, "_bounds_pay_for", None)
        if kept is None or kept[0] is not params:
            kept = self._bounds_pay_for = (params, sum(p.numel() * p.element_size() for p in params) >= BOUNDS_FROM)
        return kept[1]

    @property
    def update_bound(self) -> UpdateBound:
        bound = getattr(self, "_update_bound", None)
        if bound is None:
            bound = self._update_bound = UpdateBound()
        return bound

    def _bounds_after(self, grads: Mapping[str, Any], parts) -> dict[str, float] | None:
        """Bounds on what this step changed, where they follow (see UpdateBound)."""
        if not self._known_step:
            return None
        if self._foreign_step_hooks():
            return None
        by_name = self._by_name
        return self.update_bound.after_step(self._bound_rules, parts.watched,
                                            [(name, by_name[name]) for name in grads], self._updates - 1)

    def _foreign_step_hooks(self) -> bool:
        """Whether hooks other than gdstep's own run in the optimizer's step: they may change
        the parameters (a projection after the step) where no formula says how."""
        from torch.optim import optimizer as torch_optimizer     # already imported: a dict lookup
        own = getattr(self, "own_step_hooks", ())
        opt = self.torch_optimizer
        return bool(torch_optimizer._global_optimizer_pre_hooks or torch_optimizer._global_optimizer_post_hooks
                    or any(k not in own for k in opt._optimizer_step_pre_hooks)
                    or any(k not in own for k in opt._optimizer_step_post_hooks))

    @property
    def _bound_rules(self):
        """Whose formula bounds an update: the optimizer's config, or where its param groups'
        values differ (an opaque config), gdstep's optimizer of that formula, which reads
        each group's own values; None where gdstep has no formula."""
        if hasattr(self.optimizer, "bound_after"):
            return self.optimizer
        kept = getattr(self, "_twin", None)
        if kept is None or kept[0] is not self.torch_optimizer:
            kept = self._twin = (self.torch_optimizer, twin_formula(self.torch_optimizer))
        return kept[1]

    def _updated_tensors(self, grads: Mapping[str, Any]) -> list:
        """The parameters an update changed and their guarded state. torch.optim's own
        optimizers change their state tensors in place, so the list is kept while the
        optimizer and each parameter's state dict stay the same objects (a restore or a new
        optimizer makes new ones); another optimizer's list is made afresh each time."""
        held = _held(self.torch_optimizer.state)
        kept = getattr(self, "_lean_tensors", None)
        if (kept is not None and kept[0] is self.torch_optimizer and kept[1] == grads.keys()
                and len(kept[2]) == len(held) and all(map(is_, held, kept[2]))):
            return kept[3]
        tensors = self._list_updated_tensors(grads)
        self._lean_tensors = (self.torch_optimizer, set(grads), held, tensors) if self._known_step else None
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
        cloned, and ΔW written over it. Whether the update is finite comes with them: ΔW and
        W_old finite make W_new finite, so the guarded optimizer state joins the same fused
        norm, and one number, the sum of the squares, says it (read now on the CPU; with
        `defer`, left on the device)."""
        torch = self._torch
        params = self._train_params
        if not params:
            return self.update_lean(grads, check, defer), []
        old = self._old_param_buffers(params)
        with torch.no_grad():
            torch._foreach_copy_(old, params)
            self.update_lean(grads, check=False)
            # the state after the step: the first one makes it (Adam's v, which may overflow)
            guarded = self._guarded_state(grads) if check and len(grads) == len(params) else []
            parts = self._update_parts(grads) if check and len(grads) == len(params) and not defer else None
            bounds = (self._bounds_after(grads, parts) if parts is not None and params[0].is_cpu and self._bounds_pay
                      else None)
            tested = [] if bounds is not None else guarded     # finite by its bounds: not read
            # ‖W_old‖, then W_old − W_new = −ΔW written over W_old (no new memory: a fresh
            # buffer of a large model's size costs its page faults) and its norm, in the
            # groups update_norms makes (on a device, its kernels' chunks; on the CPU each
            # norm is its tensor's own)
            weights = list(torch._foreach_norm(old))
            torch._foreach_sub_(old, params)
            norms = list(torch._foreach_norm(old)) + weights
            if tested:
                norms += torch._foreach_norm(tested)
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
                if bounds is not None:
                    self.update_bound.tested(parts.watched, bounds, parts.others)
                else:
                    self.update_bound.forget()      # the next test reads them all, and knows them again
                return True, sq
            self.update_bound.forget()
            return exactly_finite(torch, params + guarded), sq

    def _guarded_state(self, grads) -> list:
        """The optimizer state a run checks after an update (see Optimizer.guarded_state)."""
        return self._update_parts(grads).guarded

    def _update_parts(self, grads) -> "UpdateParts":
        """`_updated_tensors` in parts, with the state the optimizer's bounds are about; the
        same lists while that list is the same."""
        tensors = self._updated_tensors(grads)
        kept = getattr(self, "_parts", None)
        if kept is not None and kept[0] is tensors:
            return kept[1]
        changed = {id(p) for p in self._train_params}
        plain = [t for t in tensors if id(t) in changed]
        guarded = [t for t in tensors if id(t) not in changed]
        seen = {id(t) for t in guarded}
        states, by_name = self.torch_optimizer.state, self._by_name
        named = {id(v): k for n in grads for k, v in states.get(by_name[n], {}).items() if isinstance(v, self._torch.Tensor)}
        bounded = getattr(self._bound_rules, "bounded_state", ()) if self._known_step else ()
        extra = [v for n in grads for k, v in states.get(by_name[n], {}).items()
                 if k in bounded and isinstance(v, self._torch.Tensor) and v.ndim and v.is_floating_point()
                 and id(v) not in seen]
        watched = plain + guarded + extra
        ids = {id(t) for t in watched}
        others = tuple(v for n in grads for v in states.get(by_name[n], {}).values()
                       if isinstance(v, self._torch.Tensor) and id(v) not in ids)
        parts = UpdateParts(plain, guarded, watched, [named.get(id(t), "?") for t in guarded + extra], others)
        self._parts = (tensors, parts)
        return parts

    @property
    def update_norms_nbytes(self) -> int:
        """Bytes the ‖ΔW‖ measurement holds: W_old of every trainable parameter
        (`_old_param_buffers`; in watch mode, `update_norms.before`'s copies). The Session
        charges them to the history budget."""
        return sum(p.numel() * p.element_size() for p in self._train_params)

    def _old_param_buffers(self, params: list) -> list:
        """Tensors shaped as the parameters, for their values before an update (made once)."""
        kept = getattr(self, "_old_params", None)
        if kept is None:                     # the parameters stay the same tensors: a restore copies into them
            kept = self._old_params = [self._torch.empty_like(p, requires_grad=False) for p in params]
        return kept

"""Several models and optimizers in one debugger session (a GAN's generator and
discriminator): `gdstep.attach({"G": netG, "D": netD}, [optG, optD], loss_fn)`.

The models become one `nn.ModuleDict` (parameters named `G.…`, `D.…`); the optimizers one
`JointOptimizer` whose param groups are theirs, in order, and whose state is theirs, so
checkpoints, records and `set lr V group=N` see both. In watch mode each optimizer's own
`step()` ends an iteration, and the update record holds the parameters that optimizer moved.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from gdstep.errors import GdstepError


class JointState(MutableMapping):
    """The optimizers' `state`, one mapping: each parameter's entry lives in its owner's."""

    def __init__(self, joint: Any):
        self._joint = joint

    def __getitem__(self, p):
        return self._joint.owner_of(p).state[p]

    def __setitem__(self, p, value) -> None:
        self._joint.owner_of(p).state[p] = value

    def __delitem__(self, p) -> None:
        del self._joint.owner_of(p).state[p]

    def __iter__(self):
        for o in self._joint.optimizers:
            yield from list(o.state)

    def __len__(self) -> int:
        return sum(len(o.state) for o in self._joint.optimizers)

    def get(self, p, default=None):
        o = self._joint.owner_of(p, None)
        return default if o is None else o.state.get(p, default)

    def clear(self) -> None:
        for o in self._joint.optimizers:
            o.state.clear()


def joint_class():
    import torch

    class JointOptimizer(torch.optim.Optimizer):
        """Optimizers seen as one. Its `step()` steps the one whose turn it is (`turn`, an
        index, set by whoever knows: gdstep learns it from the loop's own steps)."""

        def __init__(self, optimizers):
            self.optimizers = list(optimizers)
            self.defaults = {}
            self._owner = {id(p): o for o in self.optimizers for g in o.param_groups for p in g["params"]}
            self.turn: int | None = None
            self._optimizer_step_pre_hooks, self._optimizer_step_post_hooks = {}, {}

        @property
        def param_groups(self):
            return [g for o in self.optimizers for g in o.param_groups]

        @property
        def state(self):
            return JointState(self)

        def owner_of(self, p, *default):
            o = self._owner.get(id(p))
            if o is None:
                if default:
                    return default[0]
                raise KeyError("a parameter none of the optimizers updates")
            return o

        def step(self, closure=None):
            if self.turn is None:
                raise GdstepError("gdstep does not know which optimizer steps in this iteration: the loop has "
                                  "not stepped one yet here (quit the debugger to let the loop go on)")
            return self.optimizers[self.turn].step()

        def zero_grad(self, set_to_none: bool = True) -> None:
            for o in self.optimizers:
                o.zero_grad(set_to_none)

        def __repr__(self) -> str:
            return f"JointOptimizer({', '.join(type(o).__name__ for o in self.optimizers)})"

    return JointOptimizer


def joint(models, optimizers) -> tuple[Any, Any]:
    """(one module, one optimizer) for a dict or list of models and a list of optimizers."""
    import torch.nn as nn

    if isinstance(models, dict):
        model = nn.ModuleDict(models)
    elif isinstance(models, (list, tuple)):
        model = nn.ModuleDict({str(i): m for i, m in enumerate(models)})
    else:
        model = models
    if not isinstance(model, nn.Module) or not all(isinstance(m, nn.Module) for m in model.children()):
        raise GdstepError("attach: models must be torch.nn.Modules")
    optimizers = list(optimizers) if isinstance(optimizers, (list, tuple)) else [optimizers]
    if len(optimizers) == 1:
        return model, optimizers[0]
    return model, joint_class()(optimizers)

"""gdstep's hooks as the loop's own objects hold them. A model, loss module or optimizer with
gdstep attached stays as copyable as without it: `copy.deepcopy(model)` (a best-model or EMA
copy) and `torch.save(model)` (a whole-module checkpoint) copy each of gdstep's hooks as an
inert one — a standard-library callable that returns None (it raises an audit event,
`sys.audit("gdstep.detached_hook", …)`, which nothing listens to unless the program installed
an audit hook), so the copy runs as the original would without gdstep, and a checkpoint loads
without gdstep installed. The original keeps its hooks. (`copy.copy(model)` shares the
original's hook dictionaries, as torch's shallow copies do: such a copy is still seen.)"""

from __future__ import annotations

import functools
import sys

INERT = functools.partial(sys.audit, "gdstep.detached_hook")
"""What a copy holds in place of a hook of gdstep's: called as any hook is, it returns None."""


class Detachable(functools.partial):
    """A hook of gdstep's (called through functools.partial, at C speed): copied, deep-copied
    or pickled, it becomes INERT. `owner`: the backend whose hook it is (None: unsaid)."""

    owner = None

    def __reduce__(self):           # pickled (torch.save(model)): deep copies take __deepcopy__
        _say_pickled()
        return INERT.__reduce__()

    def __deepcopy__(self, memo):
        return INERT

    def __copy__(self):
        return INERT


PICKLED = ("gdstep: a model (or optimizer) pickled while attached, as torch.save(model) does, holds gdstep's hooks "
           "as inert standard-library calls: it loads without gdstep, but only with torch.load(f, weights_only=False) "
           "(torch's default, weights_only=True, refuses any hook object, whatever safe_globals allow); "
           "torch.save(model.state_dict()) holds no hooks, nor does a model saved after dbg.close()")
_said_pickled = False


def _say_pickled() -> None:
    """Once a process, at the first pickle of a hook of gdstep's: how such a file loads."""
    global _said_pickled
    if not _said_pickled:
        _said_pickled = True
        print(PICKLED, file=sys.stderr)


def detachable(fn, owner=None) -> Detachable:
    """`fn` as a hook of gdstep's, run outside any compiled graph: traced into a loop's
    torch.compile'd forward, its bookkeeping of Python objects would be compiled with it,
    or refused ("already tracked for mutation"). Where torch is tracing, the hook calls
    `fn` through `torch.compiler.disable` (a graph break: `fn` runs eagerly); anywhere else
    it calls `fn` itself, without the disabling wrapper's own work on every call (in a
    training loop, where each hook runs cold, ~4 µs a call: a CNN's 11 hook calls an
    iteration). (torch._dynamo is imported with torch.optim's first optimizer; before,
    where it is not, gdstep does not import it for this: it takes a second.)"""
    if "torch._dynamo" in sys.modules:
        import torch
        fn = _eager_unless_traced(fn, torch.compiler.disable(fn), torch.compiler.is_compiling)
    hook = Detachable(fn)
    hook.owner = owner
    return hook


def _eager_unless_traced(fn, disabled, compiling):
    def hook(*args, **kwargs):
        if compiling():           # torch.compile traces this call: a graph break, fn run eagerly
            return disabled(*args, **kwargs)
        return fn(*args, **kwargs)
    return hook

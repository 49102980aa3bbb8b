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
    or pickled, it becomes INERT."""

    def __reduce__(self):
        return INERT.__reduce__()

    def __deepcopy__(self, memo):
        return INERT

    def __copy__(self):
        return INERT


def detachable(fn) -> Detachable:
    """`fn` as a hook of gdstep's. Where torch.compile is in use (torch._dynamo imported: it
    takes a second to import, so gdstep never imports it itself), the hook runs outside any
    compiled graph (`torch.compiler.disable`): traced into the loop's compiled forward, its
    bookkeeping of Python objects would be compiled with it, or refused ("already tracked
    for mutation")."""
    if "torch._dynamo" in sys.modules:
        import torch
        fn = torch.compiler.disable(fn)
    return Detachable(fn)

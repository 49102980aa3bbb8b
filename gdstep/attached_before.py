"""One debugger a model: attaching a model that a debugger not closed is attached to (the
notebook cell that attaches run again) closes that one first. Each backend knows its
debugger (`attached_by`) for that."""

from __future__ import annotations

import sys

from gdstep.backends.detachable import Detachable


def attached_by(debugger, backend):
    """The backend, marked as `debugger`'s (a weak reference to it)."""
    backend.attached_by = debugger
    return backend


def close_earlier(model, mine) -> None:
    """A debugger attached to this model before and not closed (the notebook cell that
    attaches run again, a script that attaches in a loop): closed, and said in one line, so
    that one debugger records the loop, not two, each hooking every forward. Found by the
    hooks gdstep put on the model (the debugger itself may be gone, its hooks not): on its
    call, and on each of its rows, so that a debugger attached to a model that holds this
    one (`ddp`, then `ddp.module`; any wrapper) is found too."""
    earlier = {id(h.owner): h.owner for m in model.modules()
               for hooks in (m._forward_pre_hooks, m._forward_hooks) for h in hooks.values()
               if type(h) is Detachable and h.owner is not mine and hasattr(h.owner, "attached_by")}
    mine._capture = False          # an earlier one's close may run the model (the iteration a break left,
    try:                           # finished): no forward of the loop's for `mine`
        for backend in earlier.values():
            debugger = backend.attached_by()
            if debugger is not None:
                debugger.close()
            else:
                backend.remove_hooks()
    finally:
        mine._capture = True
    if earlier:
        what = "; ".join(sorted({_how(model, b.model) for b in earlier.values()}))
        print(f"gdstep: attach: {what}, to a debugger not closed (the code that attaches ran again?): that one is "
              "closed now, and this one records the loop", file=sys.stderr)


def _how(model, theirs) -> str:
    """How `model` was attached already, through the model `theirs` an earlier debugger has."""
    name, other = type(model).__name__, type(theirs).__name__
    if theirs is model:
        return f"{name} was attached already"
    if any(m is model for m in theirs.modules()):
        return f"{name} was attached already, as part of the {other} that holds it"
    if any(m is theirs for m in model.modules()):
        return f"a part of {name} (its {other}) was attached already"
    return f"a {other} that shares modules with {name} was attached already"

"""Gradients from one `loss.backward()`, where `torch.autograd.grad` cannot give them: under
DDP (its all-reduce runs in hooks that fire in backward()), and through a reentrant
`torch.utils.checkpoint` (`use_reentrant=True`), which refuses `.grad()` and
`backward(inputs=…)`. The parameters' gradients are what backward() leaves in `.grad` (each
set to None first, as a loop's zero_grad() does); any other input's (a layer's output: δ)
comes from a hook on that tensor in the same pass. backward() also accumulates into every
other leaf that asks for a gradient: the `.grad` of those given as `others` (the model's
parameters no optimizer of gdstep's holds) is given back after, as autograd.grad leaves it
(a recomputed iteration must not add to what the loop's own backward made); a leaf outside
the model (an input that requires grad) is not."""

from __future__ import annotations

from typing import Any, Sequence

REENTRANT = "CheckpointFunctionBackward"     # the node a reentrant torch.utils.checkpoint leaves in the graph


def grads_by_backward(loss, inputs: Sequence[Any], params: Sequence[Any], others: Sequence[Any] = ()) -> list:
    """∂loss/∂(each input) by `loss.backward()`; `params`: the parameters whose `.grad` it
    fills (the inputs among them are read from there); `others`: leaves whose `.grad` it
    gives back as it found them."""
    own = {id(p) for p in params}
    found: dict[int, Any] = {}
    handles = [t.register_hook(lambda g, i=i: found.__setitem__(i, g))
               for i, t in enumerate(inputs) if id(t) not in own and t.requires_grad]
    kept = [(t, t.grad) for t in others]
    try:
        for p in (*params, *others):        # (backward() would add to a gradient there, in place)
            p.grad = None
        if loss.requires_grad:
            loss.backward()
    finally:
        for h in handles:
            h.remove()
        for t, g in kept:
            t.grad = g
    return [t.grad if id(t) in own else found.get(i) for i, t in enumerate(inputs)]


def reentrant_checkpoint(loss) -> bool:
    """Whether the graph behind `loss` runs a reentrant torch.utils.checkpoint: a walk of its
    nodes (once a backend: a model that checkpoints does so from its first iteration)."""
    node = getattr(loss, "grad_fn", None)
    stack, seen = [node] if node is not None else [], set()
    while stack:
        node = stack.pop()
        if type(node).__name__ == REENTRANT:
            return True
        for child, _ in getattr(node, "next_functions", ()):
            if child is not None and id(child) not in seen:
                seen.add(id(child))
                stack.append(child)
    return False

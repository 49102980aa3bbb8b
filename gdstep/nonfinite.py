"""Where a non-finite value first appeared: one search over named arrays, and the order in
which each phase's values are searched.

A run checks each phase cheaply (one fused finiteness test); only when that fails do these
searches name the culprit, so they may be thorough rather than fast.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from gdstep import arrays
from gdstep.records import BackwardRecord, ForwardRecord, LossRecord, NonFinite, UpdateRecord

# after the culprit's name, where a phase ran on to its end (stepping on, not pausing before
# it); no part of a message where the debugger cannot rewind (the loop goes on from there)
REWIND_HINT = " (the phase ran; rewind with back)"


def first_nonfinite(phase: str, named: Iterable[tuple[str, Any]]) -> NonFinite | None:
    """The first non-finite element among (where, array) pairs, in order."""
    for where, value in named:
        hit = arrays.first_nonfinite(value)
        if hit:
            return NonFinite(phase, where, hit[0], hit[1])
    return None


def call_order(n: int, order: Sequence[int] | None) -> list[int]:
    """The layer rows in the order the model called them (first call first), then any it
    did not call; registration order when the call order is not known."""
    if not order:
        return list(range(n))
    seen = list(dict.fromkeys(i for i in order if 0 <= i < n))
    return seen + [i for i in range(n) if i not in set(seen)]


def in_forward(rec: ForwardRecord, order: Sequence[int] | None = None) -> NonFinite | None:
    """The first layer output, in the order the layers ran, that holds a non-finite value: a
    module registered early but called late (a Dropout defined before the Linear it follows)
    is searched after the layers that ran before it."""
    rows = call_order(len(rec.outputs), order)
    return first_nonfinite("forward", ((f"layer {rec.layer_names[i]} output", rec.outputs[i]) for i in rows
                                       if i < len(rec.layer_names)))


def in_loss(rec: LossRecord) -> NonFinite | None:
    """A non-finite loss: a sample's loss, else an output or target that was already
    non-finite, else the loss function itself made it from finite values (log of a negative
    or of zero, 0/0) — or, when every per-sample loss is finite, their sum overflowed."""
    if math.isfinite(rec.value):
        return None
    if rec.per_sample is not None:
        return (first_nonfinite("loss", [("loss of sample", rec.per_sample)])
                or NonFinite("loss", "loss (the sum over the batch overflowed)", None, rec.value))
    found = first_nonfinite("loss", [("the model output reaching the loss", rec.output),
                                     ("the target", rec.target if _floating(rec.target) else None)])
    who = rec.kind if str(rec.kind).isidentifier() else "loss_fn"          # a lambda's name is "<lambda>"
    return found or NonFinite("loss", f"loss ({who} made it from finite outputs and targets)", None, rec.value)


def _floating(a: Any) -> bool:
    kind = getattr(getattr(a, "dtype", None), "kind", None)
    if kind is not None:
        return kind == "f"
    return bool(getattr(a, "is_floating_point", lambda: False)())


def in_backward(rec: BackwardRecord, layer_names: tuple[str, ...]) -> NonFinite | None:
    """The gradients first, then δ of each layer; a finite gradient whose squares overflow
    still makes ‖∇L‖ non-finite, which is named as such."""
    found = first_nonfinite("backward", [*((f"{name} gradient", g) for name, g in rec.grads.items()),
                                         *((f"δ of layer {name}", d) for name, d in zip(layer_names, rec.deltas))])
    if found is None and not math.isfinite(rec.grad_norm):
        return NonFinite("backward", "‖∇L‖ (the squared gradient norm overflowed)", None, rec.grad_norm)
    return found


def in_update(rec: UpdateRecord) -> NonFinite | None:
    def named():
        for name, u in rec.params.items():
            yield name, u.new
            for key, value in u.state_after.items():
                yield f"{name} state {key}", value
    return first_nonfinite("update", named())


def in_iteration(records: dict[str, Any], layer_names: tuple[str, ...] = (),
                 order: Sequence[int] | None = None) -> NonFinite | None:
    """The first non-finite value of one iteration's records, in the order a run checks
    them (forward in call order, loss, backward, update): what its pause names."""
    fwd, loss, bwd, upd = (records.get(p) for p in ("forward", "loss", "backward", "update"))
    step = fwd.step if fwd is not None else None
    same = [r for r in (loss, bwd, upd) if r is not None and (step is None or r.step == step)]
    found = in_forward(fwd, order) if fwd is not None else None
    for rec in same:
        if found is not None:
            break
        if isinstance(rec, LossRecord):
            found = in_loss(rec)
        elif isinstance(rec, BackwardRecord):
            found = in_backward(rec, layer_names or (fwd.layer_names if fwd is not None else ()))
        else:
            found = in_update(rec)
    return found


def anywhere(phase: str, params, optimizer_state, records: dict[str, Any],
             order: Sequence[int] | None = None) -> NonFinite | None:
    """The first non-finite value in the live parameters, the optimizer state, then the
    latest records (what the condition name `nan` reads)."""
    found = first_nonfinite(phase, params.items()) or first_nonfinite(
        phase, ((f"{name} state {key}", v) for name, state in optimizer_state.items() for key, v in state.items()))
    if found:
        return found
    fwd, loss, bwd = records.get("forward"), records.get("loss"), records.get("backward")
    if fwd is not None and (found := in_forward(fwd, order)):
        return found
    if loss is not None and not math.isfinite(loss.value):
        return NonFinite("loss", "loss", None, loss.value)
    if bwd is not None:
        return first_nonfinite("backward", ((f"{name} gradient", g) for name, g in bwd.grads.items()))
    return None

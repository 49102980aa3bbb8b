"""Where a non-finite value first appeared: one search over named arrays, and the order in
which each phase's values are searched.

A run checks each phase cheaply (one fused finiteness test); only when that fails do these
searches name the culprit, so they may be thorough rather than fast.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

from gdstep import arrays
from gdstep.records import BackwardRecord, ForwardRecord, LossRecord, NonFinite, UpdateRecord


def first_nonfinite(phase: str, named: Iterable[tuple[str, Any]]) -> NonFinite | None:
    """The first non-finite element among (where, array) pairs, in order."""
    for where, value in named:
        hit = arrays.first_nonfinite(value)
        if hit:
            return NonFinite(phase, where, hit[0], hit[1])
    return None


def in_forward(rec: ForwardRecord) -> NonFinite | None:
    return first_nonfinite("forward", ((f"layer {name} output", out) for name, out in zip(rec.layer_names, rec.outputs)))


def in_loss(rec: LossRecord) -> NonFinite | None:
    if math.isfinite(rec.value):
        return None
    return (first_nonfinite("loss", [("loss of sample", rec.per_sample)])
            or NonFinite("loss", "loss (the sum over the batch overflowed)", None, rec.value))


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


def anywhere(phase: str, params, optimizer_state, records: dict[str, Any]) -> NonFinite | None:
    """The first non-finite value in the live parameters, the optimizer state, then the
    latest records (what the condition name `nan` reads)."""
    found = first_nonfinite(phase, params.items()) or first_nonfinite(
        phase, ((f"{name} state {key}", v) for name, state in optimizer_state.items() for key, v in state.items()))
    if found:
        return found
    fwd, loss, bwd = records.get("forward"), records.get("loss"), records.get("backward")
    if fwd is not None and (found := in_forward(fwd)):
        return found
    if loss is not None and not math.isfinite(loss.value):
        return NonFinite("loss", "loss", None, loss.value)
    if bwd is not None:
        return first_nonfinite("backward", ((f"{name} gradient", g) for name, g in bwd.grads.items()))
    return None

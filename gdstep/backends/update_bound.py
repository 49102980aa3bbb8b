"""Bounds that let a run know an update finite without reading what it changed.

After each update a run tests the parameters it changed, and the optimizer state that can
turn infinite while the parameter stays finite (Adam's v: v = inf makes the step 0), for
finiteness. The test reads every one of them, every update. But an update of torch's own
optimizers is a fixed formula of the gradient. Take SGD with momentum:

    buf ← μ·buf + (1 − d)·g,   W ← W − η·buf

Say B ≥ every |element| of buf and P ≥ every |element| of W, and G ≥ every |gᵢ|. Then
afterwards |buf| ≤ |μ|·B + |1 − d|·G and |W| ≤ P + η·(that), up to a few roundings.
Each optimizer writes its own rule (`Optimizer.bound_after`). Adam's step is m̂/(√v̂ + ε),
at most |m|/((1 − β₁)·ε).

The inputs come from what a run already has:
- G from the gradient norms it computes for its history (‖g‖ ≥ max|gᵢ|);
- P and B from the norms of the last full test (‖W‖ ≥ max|Wᵢ|).

Each bound is taken twice over, for the rounding of the norms, and every result is times
(1 + 16ε). While every bound stays under a quarter of the dtype's largest number, all of it
is finite, and the test reads nothing. Otherwise the test reads as before, and its norms
give new bounds. A run keeps bounds only where its parameters take `BOUNDS_FROM` bytes
(`torch_lean`): on a smaller net one read costs less than this bookkeeping.

The bounds hold only for the update they describe:
- the gradients the step used are the ones measured (the same memory, unchanged: version
  counters);
- the parameters and all the state are untouched since the last test: the same tensors in
  the state dicts, at the same memory, their version counters unmoved (Adam's step count
  too). A rewind, the loop's own edits, `load_state_dict` and `vector_to_parameters` (which
  assigns `.data`) all change one of these.
- the step runs no hook but gdstep's own (a hook of the loop's may change parameters);
- each group's formula is read with the values it had as the step began (a Python
  scenario's scheduler steps right after the optimizer);
- the optimizer is torch's own, every group with a rule (no centred RMSprop: √(v − ḡ²) can
  round to √(−0.0…1), NaN).

Not seen: an in-place change through `.data` (it moves no version counter), and a
GradScaler the loop uses without passing it to `attach` (its unscaling moves none either;
with a scale below 1 the gradients measured would be smaller than those the step used).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping


class UpdateBound:
    """What a run knows of the parameters and optimizer state between its updates (one per backend)."""

    def __init__(self) -> None:
        self._grads: dict[str, tuple[Any, int]] = {}   # name -> (gradient, its version) as measured, until the test
        self._grad = math.inf                           # ≥ every |element| of those gradients
        self._known: tuple | None = None               # (watched tensors, their marks, bounds, limit, eps, tiny, others)
        self._clean: int | None = None                  # the update before which all was as last tested
        self._groups: list = []                         # the param groups' values as that update began

    def measured(self, grads: Mapping[str, Any], sq: Mapping[str, float]) -> None:
        """The gradients whose squared norms the run just computed (√Σ‖g‖² ≥ every |gᵢ|)."""
        self._grads = {name: (g, g._version) for name, g in grads.items()}
        self._grad = math.sqrt(2 * math.fsum(sq.values())) if sq else math.inf

    def before_step(self, update: int, groups: Iterable[Mapping[str, Any]]) -> None:
        """Just before the optimizer's step (`update`: how many came before it; `groups`: its
        param groups, whose values are taken now, before a scheduler moves them): whether
        the parameters and the state are as the last test left them."""
        known = self._known
        clean = known is not None and _marks(known[0], known[6]) == known[1]
        self._clean = update if clean else None
        self._groups = [dict(g) for g in groups] if clean else []

    def after_step(self, optimizer, watched: list, used: Iterable[tuple[str, Any]],
                   update: int) -> dict[str, float] | None:
        """The bounds after this step (`update`, as given to before_step), or None where none
        follow. `watched`: the parameters and state tensors the bounds are about (the same
        list as at the last test); `used`: each updated parameter (name, tensor), whose
        `.grad` is the gradient the step used."""
        known = self._known
        rule = getattr(optimizer, "bound_after", None)
        if rule is None or self._clean != update or known is None or known[0] is not watched:
            return None
        for name, p in used:
            seen = self._grads.get(name)
            if seen is None or not _same(p.grad, seen[0]) or p.grad._version != seen[1]:
                return None
        bounds, limit, eps, tiny = known[2:6]
        out: dict[str, float] = {}
        for group in self._groups:
            after = rule(group, bounds, self._grad, eps, tiny)
            if after is None:
                return None
            for name in bounds.keys() | after.keys():   # what a group's step leaves alone keeps its bound
                value = after.get(name, bounds.get(name, math.inf))
                out[name] = max(out.get(name, value), value)
        return out if out and all(v <= limit for v in out.values()) else None     # NaN compares False

    def tested(self, watched: list, bounds: Mapping[str, float] | None, others: tuple = ()) -> None:
        """After the update's test: every |element| of the watched tensors within `bounds`
        ("param" for the parameters, else by state name; None: not known). `others`: the
        rest of the optimizer's state (Adam's step count), which must not move either."""
        self._clean, self._grads, self._groups = None, {}, []   # no gradient of the loop's held past its step
        if bounds is None or not watched or not all(math.isfinite(v) for v in bounds.values()):
            self._known = None
            return
        known = self._known
        if known is not None and known[0] is watched:      # the same tensors: the same dtypes
            limits = known[3:6]
        else:
            import torch
            info = [torch.finfo(t.dtype) for t in watched]
            limits = (min(f.max for f in info) / 4, max(f.eps for f in info), max(f.tiny for f in info))
        self._known = (watched, _marks(watched, others), dict(bounds), *limits, others)

    def forget(self) -> None:
        self._known, self._clean, self._grads, self._groups = None, None, {}, []

    @staticmethod
    def from_norms(params: list[float], state: Iterable[tuple[str, float]]) -> dict[str, float] | None:
        """Bounds from a full test's norms (each ≥ its tensor's largest |element|), taken
        twice over; None where one is not finite."""
        bounds = {"param": 2 * max(params, default=0.0)}
        for name, norm in state:
            bounds[name] = max(bounds.get(name, 0.0), 2 * norm)
        return bounds if all(math.isfinite(v) for v in bounds.values()) else None


def _marks(watched: list, others: tuple) -> tuple:
    """What moves when a tensor changes: each one's version counter, and where the watched
    ones keep their memory (`p.data = …`, as `vector_to_parameters` does, moves no version)."""
    return (tuple(t._version for t in watched), tuple(t.data_ptr() for t in watched),
            tuple(t._version for t in others))


def _same(g, seen) -> bool:
    """Whether `g` is the measured gradient: the tensor itself, or a view of the same memory
    as it (watch mode measures `.grad.detach()`). `seen` is held, so no other tensor can
    have its memory; an alias shares its version counter."""
    if g is seen:
        return True
    try:
        return (g is not None and g.data_ptr() == seen.data_ptr() and g.dtype == seen.dtype
                and g.shape == seen.shape and g.stride() == seen.stride())
    except RuntimeError:            # a sparse gradient has no one memory to compare
        return False

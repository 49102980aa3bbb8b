"""‖ΔW‖² and ‖W‖² of each trainable parameter at every update: the history behind the
per-layer health plot (‖ΔW‖/‖W‖ per layer over time).

An update with full records has W_old and W_new in its record (`of_record`): every update
stepped phase by phase is measured. A lean update (a run's, records on demand) keeps
neither, so the parameters are taken before it (`before`: the arrays themselves on numpy,
where an update makes new arrays; one copy on torch, whose update is in place) and compared
after it (`after`): a copy, a subtraction and two reductions a parameter, which on a large
torch model cost a tenth of the bare step. A run so measures the first `EVERY` updates it
makes, then every `EVERY`-th (`measured`); where that copy is large (`COPY_LARGE`: on
784-1024-1024-10, 3.3 ms a measured update against a step of ~30 ms) only its first update,
then every `EVERY`-th; attach mode, whose loop asks for one iteration at a time, every
`EVERY`-th only. The others are NaN in the history (the health plot draws the measured ones
and says so). Stepping iteration by iteration measures every update. On torch the result
stays on the device (one tensor an update) until the history is read, so a run adds no host
read.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from gdstep import arrays


EVERY = 10       # a long run measures the update of iterations 1, 11, 21, … (step 0, 10, 20, …)


COPY_LARGE = 1 << 20
"""Bytes of W_old (a torch backend's copy, `update_norms_nbytes`) from which a run measures
its first update only, not its first `EVERY`: on a 28-step run of 784-1024-1024-10 the first
ten measured updates cost 4 % of it."""


def measured(step: int, into_run: int | None, copy_nbytes: int = 0) -> bool:
    """Whether a lean update of iteration `step` (0-based), `into_run` updates after its run
    began (None: attach mode, which counts no runs), measures its norms, where measuring
    copies `copy_nbytes` of parameters."""
    if step % EVERY == 0:
        return True
    return into_run is not None and into_run < (EVERY if copy_nbytes < COPY_LARGE else 1)


def before(params: Mapping[str, Any], names: Sequence[str]) -> tuple[list, Any]:
    """The parameters about to be updated, kept so that `after` can compare; on torch, with
    their ‖W‖ (still on the device)."""
    values = [params[n] for n in names]
    if values and arrays.is_torch(values[0]):
        import torch
        kept = [v.detach().clone() for v in values]
        return kept, torch._foreach_norm(kept)
    return values, None


def after(params: Mapping[str, Any], names: Sequence[str], kept: tuple[list, Any]) -> Any:
    """[‖ΔW‖² of each name…, ‖W_old‖² of each name…]: floats on numpy, a device tensor on
    torch (read later with `to_floats`)."""
    old, weight_norms = kept
    if weight_norms is not None:
        import torch
        torch._foreach_sub_(old, [params[n].detach() for n in names])        # old − new = −ΔW
        norms = torch.stack(list(torch._foreach_norm(old)) + list(weight_norms)).double()
        return norms * norms
    return _squares(old, [params[n] for n in names])


def of_record(updates: Mapping[str, Any], names: Sequence[str], params: Mapping[str, Any] | None = None) -> Any:
    """The same from a full update record (each ParamUpdate holds old and new). A parameter
    the update left out (no gradient) did not move: ‖ΔW‖² 0 and ‖W‖² of its value in
    `params`, as a lean update measures it, in the same groups of norms (0 in both where
    `params` lacks it)."""
    params = params or {}
    missing = [n for n in names if n not in updates and n not in params]
    if missing:
        return [arrays.sq_norm(updates[n].new - updates[n].old) if n in updates else 0.0 for n in names] + \
            [arrays.sq_norm(updates[n].old) if n in updates else 0.0 for n in names]
    olds = [updates[n].old if n in updates else params[n] for n in names]
    news = [updates[n].new if n in updates else params[n] for n in names]
    if olds and arrays.is_torch(olds[0]):
        import torch
        with torch.no_grad():
            deltas = torch._foreach_sub(news, olds)
            norms = torch.stack(list(torch._foreach_norm(deltas)) + list(torch._foreach_norm(olds))).double()
        return norms * norms
    return _squares(olds, news)


def _squares(olds: list[np.ndarray], news: list[np.ndarray]) -> list[float]:
    deltas, weights = [], []
    for old, new in zip(olds, news):
        d = (new - old).ravel()
        w = old.ravel()
        deltas.append(float(d.dot(d)))
        weights.append(float(w.dot(w)))
    return deltas + weights


def to_floats(pending: list, width: int) -> list[float]:
    """Values `after`/`of_record` returned (None: an update not measured, `width` NaNs),
    flattened to floats, reading device tensors back in one transfer."""
    tensors = [v for v in pending if v is not None and arrays.is_torch(v)]
    read = iter([])
    if tensors:
        import torch
        read = iter(torch.stack(tensors).cpu().tolist())
    out: list[float] = []
    for v in pending:
        out.extend([math.nan] * width if v is None else next(read) if arrays.is_torch(v) else v)
    return out

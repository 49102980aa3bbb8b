"""‖ΔW‖² and ‖W‖² of each trainable parameter at every update: the history behind the
per-layer health plot (‖ΔW‖/‖W‖ per layer over time).

An update with full records has W_old and W_new in its record (`of_record`). A lean update
keeps neither, so the parameters are taken before it (`before`: the arrays themselves on
numpy, where an update makes new arrays; one copy on torch, whose update is in place) and
compared after it (`after`): two reductions a parameter. On torch the result stays on the
device (one tensor an update) until the history is read, so a run adds no host read.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from gdstep import arrays


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


def of_record(updates: Mapping[str, Any], names: Sequence[str]) -> Any:
    """The same from a full update record (each ParamUpdate holds old and new); a parameter
    the update left out (no gradient) counts 0 in both."""
    if any(n not in updates for n in names):
        return [arrays.sq_norm(updates[n].new - updates[n].old) if n in updates else 0.0 for n in names] + \
            [arrays.sq_norm(updates[n].old) if n in updates else 0.0 for n in names]
    olds = [updates[n].old for n in names]
    news = [updates[n].new for n in names]
    if olds and arrays.is_torch(olds[0]):
        import torch
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


def to_floats(pending: list) -> list[float]:
    """Values `after`/`of_record` returned, flattened to floats, reading device tensors back
    in one transfer."""
    if not pending:
        return []
    if arrays.is_torch(pending[0]):
        import torch
        return torch.stack(pending).cpu().ravel().tolist()
    return [v for row in pending for v in row]

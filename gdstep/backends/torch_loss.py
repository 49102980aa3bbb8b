"""Losses on the torch backend: the scenario's losses as torch computes them, and the user's
own `loss_fn`, each returning (per-sample losses, the loss with its autograd graph).

The scenario losses reduce exactly as gdstep.nn.losses does (mean, except `sse` and
`half_sse`); the per-sample values are the unreduced torch loss averaged (or summed) over
each sample's outputs, as the numpy engine reports them.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from gdstep.errors import GdstepError

KINDS = ("mse", "sse", "half_sse", "mae", "huber", "bce", "cross_entropy")


class ScenarioLoss:
    """A scenario's `[loss]` on torch tensors: `(per_sample, loss) = loss(output, target)`."""

    def __init__(self, kind: str, delta: float = 1.0):
        import torch.nn.functional as F

        if kind not in KINDS:
            raise ValueError(f"unknown loss {kind!r}")
        self.kind, self.delta = kind, delta
        elementwise: dict[str, Callable] = {
            "mse": F.mse_loss, "sse": F.mse_loss, "half_sse": F.mse_loss, "mae": F.l1_loss,
            "bce": F.binary_cross_entropy, "cross_entropy": F.cross_entropy,
            "huber": lambda out, t, reduction: F.huber_loss(out, t, reduction=reduction, delta=delta),
        }
        self._elementwise = elementwise[kind]

    def __call__(self, output, target):
        per = self._elementwise(output, target, reduction="none")
        kind = self.kind
        if kind == "cross_entropy":
            return per.detach(), per.mean()
        if kind == "sse":
            return per.detach().sum(1), per.sum()
        if kind == "half_sse":
            return 0.5 * per.detach().sum(1), 0.5 * per.sum()
        return per.detach().mean(1), per.mean()


def loss_kind(loss_fn: Any) -> str:
    """The scenario loss kind a user's torch loss computes, or its class (function) name."""
    from torch import nn

    t = type(loss_fn)
    reduction = getattr(loss_fn, "reduction", None)
    if t is nn.CrossEntropyLoss and loss_fn.weight is None and not loss_fn.label_smoothing and reduction == "mean":
        return "cross_entropy"
    if t is nn.BCELoss and loss_fn.weight is None and reduction == "mean":
        return "bce"
    if t is nn.MSELoss and reduction in ("mean", "sum"):
        return "mse" if reduction == "mean" else "sse"
    if t is nn.L1Loss and reduction == "mean":
        return "mae"
    if t is nn.HuberLoss and reduction == "mean":
        return "huber"
    return getattr(loss_fn, "__name__", None) or t.__name__


class ModuleLoss:
    """A user's `loss_fn(output, target)`: the loss is exactly what it returns; per-sample
    values come from an unreduced copy when it is a torch loss with a `reduction`."""

    def __init__(self, loss_fn: Any):
        self.loss_fn = loss_fn
        self.kind = loss_kind(loss_fn)
        self._unreduced = None
        reduction = getattr(loss_fn, "reduction", None)
        if reduction in ("mean", "sum") and type(loss_fn).__module__.startswith("torch.nn"):
            unreduced = copy.copy(loss_fn)
            unreduced.reduction = "none"
            self._unreduced, self._reduction = unreduced, reduction

    def __call__(self, output, target):
        import torch

        loss = self.loss_fn(output, target)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise GdstepError(f"loss_fn must return a one-element tensor, got {type(loss).__name__}"
                            + (f" of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else ""))
        per_sample = None
        if self._unreduced is not None:
            with torch.no_grad():
                per = self._unreduced(output, target)
            if per.ndim > 1:
                flat = per.reshape(per.shape[0], -1)
                per = flat.mean(1) if self._reduction == "mean" else flat.sum(1)
            per_sample = per
        return per_sample, loss.reshape(())

"""Losses on the torch backend: the scenario's losses as torch computes them, and the user's
own `loss_fn`, each returning (per-sample losses, the loss with its autograd graph).

A scenario loss is its gdstep.nn.losses class's torch twin (`Loss.torch`), which reduces
exactly as the numpy engine does; a user's torch loss is recognised as a gdstep loss kind
where it computes one (`Loss.recognizes`).
"""

from __future__ import annotations

import copy
from typing import Any

from gdstep.errors import GdstepError
from gdstep.nn.losses import LOSSES, loss_class, loss_for_torch_class, torch_loss_kind


class ScenarioLoss:
    """A scenario's `[loss]` on torch tensors: `(per_sample, loss) = loss(output, target)`."""

    def __init__(self, kind: str, **options):
        if kind not in LOSSES:
            raise ValueError(f"unknown loss {kind!r}")
        self.kind = kind
        self._loss = LOSSES[kind](**options)

    def __call__(self, output, target, per_sample: bool = True):
        return self._loss.torch(output, target)      # the twin reduces its per-sample values: they come anyway

    def per_sample(self, output, target):
        return self._loss.torch(output, target)[0]

    def accuracy(self, output, target) -> float | None:
        return self._loss.accuracy(output, target)


def loss_kind(loss_fn: Any) -> str:
    """The scenario loss kind a user's torch loss computes, or its class (function) name."""
    return torch_loss_kind(loss_fn) or getattr(loss_fn, "__name__", None) or type(loss_fn).__name__


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

    def __call__(self, output, target, per_sample: bool = True):
        """(per-sample losses or None, the loss). Without `per_sample` (a run, whose records
        are recomputed when read), the unreduced copy is not computed: the loss alone, as the
        loop computes it (a backend asks `per_sample` after all where the loss is not finite,
        so that the pause names the sample)."""
        import torch

        try:
            loss = self.loss_fn(output, target)
        except TypeError as e:      # (a loss of more arguments: the mistake is the call gdstep makes)
            e.add_note("gdstep: the loss_fn given to attach is called as loss_fn(output, y), with the model's whole "
                       "output and the y given: for a loss of more arguments attach e.g. "
                       "lambda out, y: loss_function(out[0], y, *out[1:])")
            raise
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise GdstepError(f"loss_fn must return a one-element tensor, got {type(loss).__name__}"
                            + (f" of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else ""))
        return (self.per_sample(output, target) if per_sample else None), loss.reshape(())

    def per_sample(self, output, target):
        """Each sample's loss from the unreduced copy (None: the loss has no `reduction`)."""
        import torch

        if self._unreduced is None:
            return None
        with torch.no_grad():
            per = self._unreduced(output, target)
        if per.ndim > 1:
            flat = per.reshape(per.shape[0], -1)
            per = flat.mean(1) if self._reduction == "mean" else flat.sum(1)
        return per

    def accuracy(self, output, target) -> float | None:
        """As the gdstep loss it is, or the one whose torch class it is a variant of (a weighted
        CrossEntropyLoss still predicts the largest output); BCEWithLogitsLoss, which gdstep
        has no kind for, by the sign of the logit."""
        cls = loss_class(self.kind) or loss_for_torch_class(type(self.loss_fn).__name__)
        if cls is not None:
            return cls().accuracy(output, target)
        if type(self.loss_fn).__name__ == "BCEWithLogitsLoss":
            return float(((output > 0) == (target > 0.5)).sum()) / output.numel()
        return None

"""What a loss kind is, and the registry everything else looks losses up in.

A loss kind is one class in one file (`register`ed here by its `kind`): how the scenario's
`[loss]` table configures it, the targets it takes, its numpy forward and backward
(`forward(output, target)` returns (per-sample losses, the loss); `backward` returns
∂L/∂output of the reduced loss), its torch twin with the same reduction, how a user's torch
loss is recognised as it, accuracy, the gradient text `chain_rule` prints and the TeX
`export` writes.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Sequence

import numpy as np

LOSSES: dict[str, type["Loss"]] = {}
"""kind -> loss class."""


def register(cls: type["Loss"]) -> type["Loss"]:
    LOSSES[cls.kind] = cls
    return cls


def loss_class(kind: str) -> type["Loss"] | None:
    """The class of a gdstep loss kind; None for anything else (a user's own loss_fn)."""
    return LOSSES.get(kind)


def make_loss(kind: str, options=None) -> "Loss":
    return LOSSES[kind](**dict(options or {}))


def torch_loss_kind(loss_fn: Any) -> str | None:
    """The gdstep loss kind a user's torch loss computes exactly, or None."""
    return next((kind for kind, cls in LOSSES.items() if cls.recognizes(loss_fn)), None)


def loss_for_torch_class(name: str) -> type["Loss"] | None:
    """The loss whose torch twin is the class `name` (for what a variant of it predicts)."""
    return next((cls for cls in LOSSES.values() if cls.torch_class == name), None)


def mean(a: np.ndarray) -> float:
    """float(a.mean()) bit for bit, without numpy's Python wrapper around it: the sum in a's
    dtype, divided by the count as numpy divides it (an intp), rounded back to a's dtype."""
    if a.dtype.kind != "f" or a.dtype.itemsize < 4 or not a.size:
        return float(a.mean())
    total = np.add.reduce(a, axis=None)
    return float(total.dtype.type(total / np.intp(a.size)))


def fraction(match) -> float:
    """The share of true elements of a boolean numpy array or torch tensor, count / size."""
    return float(match.sum()) / math.prod(match.shape)


def class_indices(y: np.ndarray, out_features: int, kind: str, two_class_hint: str = "") -> np.ndarray:
    """Integer class labels, one output per class."""
    if y.ndim == 2:
        if y.shape[1] != 1 or not np.all(y == np.round(y)):
            raise ValueError(f"{kind} needs integer class labels as targets")
        y = y[:, 0].astype(np.int64)
    if y.min() < 0 or y.max() >= out_features:
        k = int(y.max()) + 1
        raise ValueError(f"class labels run 0..{k - 1} but the model has {out_features} output"
                         f"{'s' if out_features != 1 else ''}: {kind} needs one output per class, "
                         f"so end the layers with {{ linear = {k} }}" + (two_class_hint if k == 2 else ""))
    return y


def float_targets(y: np.ndarray, out_features: int) -> np.ndarray:
    """Float columns: one column of 0/1 for labels and one output, one-hot for k > 1 outputs."""
    if y.ndim == 1:
        if out_features == 1:
            return y.astype(float)[:, None]
        if y.max() >= out_features:
            raise ValueError(f"class labels run 0..{int(y.max())} but the model has {out_features} outputs")
        onehot = np.zeros((len(y), out_features))
        onehot[np.arange(len(y)), y] = 1.0
        return onehot
    if y.shape[1] != out_features:
        raise ValueError(f"targets have {y.shape[1]} columns but the model has {out_features} outputs")
    return y


class Loss:
    kind: ClassVar[str]
    grad_formula: ClassVar[str] = "∂L/∂y"   # ∂L/∂y, as chain_rule prints it
    tex: ClassVar[str] = "L"                # what `export` writes
    classification: ClassVar[bool] = False  # the model classifies: accuracy is reported
    class_targets: ClassVar[bool] = False   # targets are class indices (else float columns)
    two_class_hint: ClassVar[str] = ""      # added to the class-count error for two classes
    torch_class: ClassVar[str] = ""         # the torch.nn loss of its twin
    torch_reductions: ClassVar[tuple[str, ...]] = ("mean",)   # the reductions of it that are this loss

    # -- the scenario ---------------------------------------------------------------------------

    @classmethod
    def read_options(cls, t) -> dict[str, Any]:
        """Its keys of the `[loss]` table besides `kind`; `t` is the scenario's table reader."""
        return {}

    @classmethod
    def check_layers(cls, kinds: Sequence[str]) -> str | None:
        """What is wrong with a model of these layer kinds for this loss, or None."""
        return None

    @classmethod
    def targets(cls, y: np.ndarray, out_features: int) -> np.ndarray:
        """The dataset's labels or targets in the form this loss takes."""
        if cls.class_targets:
            return class_indices(y, out_features, cls.kind, cls.two_class_hint)
        return float_targets(y, out_features)

    @classmethod
    def config_text(cls, options) -> str:
        return cls.kind + (" (" + ", ".join(f"{k} {v:g}" for k, v in options.items()) + ")" if options else "")

    # -- numpy ----------------------------------------------------------------------------------

    def forward(self, output: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
        raise NotImplementedError

    def backward(self, output: np.ndarray, target: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def values_features_first(self, outputs: np.ndarray, target: np.ndarray) -> np.ndarray:
        """The loss of each of several models on the same targets, as `forward` gives it:
        `outputs` is (models, outputs, batch), each model's output laid out features first
        (the landscape's grid runs a few points of its grid at once this way)."""
        return np.array([self.forward(o.T, target)[1] for o in outputs])

    def accuracy(self, output, target) -> float | None:
        """The share of samples classified right (numpy arrays or torch tensors), or None."""
        return None

    # -- torch ----------------------------------------------------------------------------------

    def torch(self, output, target):
        """(per-sample losses, detached; the loss with its graph), reduced as `forward` does."""
        raise NotImplementedError

    @classmethod
    def recognizes(cls, loss_fn: Any) -> bool:
        """Whether a user's torch loss computes exactly this loss."""
        from torch import nn

        return (bool(cls.torch_class) and type(loss_fn) is getattr(nn, cls.torch_class, None)
                and getattr(loss_fn, "reduction", None) in cls.torch_reductions
                and getattr(loss_fn, "weight", None) is None and not getattr(loss_fn, "label_smoothing", 0.0))


class ArgmaxAccuracy:
    """Accuracy of a classifier with one output per class: the largest output is the class."""

    def accuracy(self, output, target) -> float | None:
        if output.ndim != 2 or target.ndim != 1:
            return None
        return fraction(output.argmax(1) == target)

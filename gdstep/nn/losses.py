"""Losses with torch's reductions, each with its gradient ∂L/∂output beside it.

`forward(output, target)` returns (per-sample losses, the loss); `backward` returns
∂L/∂output for the reduced loss. All reduce by mean as torch does, except `sse` (sum) and
`half_sse` (½·sum, the textbook loss).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np


class Loss:
    kind: ClassVar[str]
    formula: ClassVar[str]
    classification: ClassVar[bool] = False

    def forward(self, output: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
        raise NotImplementedError

    def backward(self, output: np.ndarray, target: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class MSE(Loss):
    kind, formula = "mse", "L = mean((y − t)²)"

    def forward(self, output, target):
        d2 = (output - target) ** 2
        return d2.mean(axis=1), float(d2.mean())

    def backward(self, output, target):
        return (2.0 / output.size) * (output - target)


class SSE(Loss):
    kind, formula = "sse", "L = Σ (y − t)²"

    def forward(self, output, target):
        per_sample = ((output - target) ** 2).sum(axis=1)
        return per_sample, float(per_sample.sum())

    def backward(self, output, target):
        return 2.0 * (output - target)


class HalfSSE(Loss):
    kind, formula = "half_sse", "L = Σ ½(t − y)²"

    def forward(self, output, target):
        per_sample = 0.5 * ((target - output) ** 2).sum(axis=1)
        return per_sample, float(per_sample.sum())

    def backward(self, output, target):
        return output - target


class MAE(Loss):
    kind, formula = "mae", "L = mean(|y − t|)"

    def forward(self, output, target):
        d = np.abs(output - target)
        return d.mean(axis=1), float(d.mean())

    def backward(self, output, target):
        return np.sign(output - target) / output.size


class Huber(Loss):
    kind, formula = "huber", "L = mean(½d² if |d| ≤ δ else δ·(|d| − ½δ)),  d = y − t"

    def __init__(self, delta: float = 1.0):
        self.delta = delta

    def forward(self, output, target):
        z = np.abs(output - target)
        per_element = np.where(z < self.delta, 0.5 * z * z, self.delta * (z - 0.5 * self.delta))
        return per_element.mean(axis=1), float(per_element.mean())

    def backward(self, output, target):
        d = output - target
        return np.clip(d, -self.delta, self.delta) / output.size


class BCE(Loss):
    """torch.nn.BCELoss on probabilities: logs clamped at −100, gradient denominator at 1e-12."""

    kind, formula, classification = "bce", "L = −mean(t·log y + (1 − t)·log(1 − y))", True

    def forward(self, output, target):
        log_y = np.maximum(np.log(output), -100.0)
        log_1my = np.maximum(np.log(1.0 - output), -100.0)
        per_element = -(target * log_y + (1.0 - target) * log_1my)
        return per_element.mean(axis=1), float(per_element.mean())

    def backward(self, output, target):
        return (output - target) / np.maximum((1.0 - output) * output, 1e-12) / output.size


class CrossEntropy(Loss):
    """torch.nn.CrossEntropyLoss: log-softmax of logits (stable) and NLL of integer classes."""

    kind, formula, classification = "cross_entropy", "L = −mean(log softmax(z)[class])", True

    def __init__(self):
        self._cache: tuple = (None, None, None)  # (output, target, log-probabilities) of the last forward

    @staticmethod
    def log_softmax(z: np.ndarray) -> np.ndarray:
        shifted = z - z.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    def forward(self, output, target):
        logp = self.log_softmax(output)
        self._cache = (output, target, logp)
        per_sample = -logp[np.arange(len(target)), target]
        return per_sample, float(per_sample.mean())

    def backward(self, output, target):
        cached_output, cached_target, logp = self._cache
        if cached_output is not output or cached_target is not target:
            logp = self.log_softmax(output)
        grad = np.exp(logp)                               # softmax(z) − onehot(t), over the batch
        grad[np.arange(len(target)), target] -= 1.0
        grad /= len(target)
        return grad


LOSSES: dict[str, type[Loss]] = {cls.kind: cls for cls in (MSE, SSE, HalfSSE, MAE, Huber, BCE, CrossEntropy)}

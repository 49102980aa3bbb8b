"""cross_entropy: log-softmax of logits (stable) and NLL of integer classes, as
torch.nn.CrossEntropyLoss()."""

from __future__ import annotations

import numpy as np

from gdstep.nn.losses.base import ArgmaxAccuracy, Loss, mean, register


@register
class CrossEntropy(ArgmaxAccuracy, Loss):
    kind, classification = "cross_entropy", True
    class_targets = True
    two_class_hint = " (or use bce after a sigmoid)"
    grad_formula = "(softmax(z) − onehot(t)) / B"
    tex = r"L = -\frac{1}{B}\sum_b \log \operatorname{softmax}(z_b)_{t_b}"
    torch_class = "CrossEntropyLoss"

    def __init__(self):
        self._cache: tuple = (None, None, None)  # (output, target, log-probabilities) of the last forward

    @staticmethod
    def log_softmax(z: np.ndarray) -> np.ndarray:
        # z.max and .sum as the ufuncs' reductions they call, without their Python wrappers
        shifted = z - np.maximum.reduce(z, axis=1, keepdims=True)
        return shifted - np.log(np.add.reduce(np.exp(shifted), axis=1, keepdims=True))

    def forward(self, output, target):
        logp = self.log_softmax(output)
        self._cache = (output, target, logp)
        per_sample = -logp[np.arange(len(target)), target]
        return per_sample, mean(per_sample)

    def values_features_first(self, outputs, target):
        # forward's arithmetic on (models, classes, batch): its sums over the classes run
        # in the same order (one class after another), its mean over the samples as `mean`
        # (log-probabilities of the targets only: the same operations on the elements used)
        shifted = outputs - np.maximum.reduce(outputs, axis=1, keepdims=True)
        log_total = np.log(np.add.reduce(np.exp(shifted), axis=1))
        per_sample = -(shifted[:, target, np.arange(len(target))] - log_total)   # (models, batch)
        total = np.add.reduce(np.ascontiguousarray(per_sample), axis=1)   # rows: each sum is mean's pairwise one
        return (total / np.intp(len(target))).astype(total.dtype)

    def backward(self, output, target):
        cached_output, cached_target, logp = self._cache
        if cached_output is not output or cached_target is not target:
            logp = self.log_softmax(output)
        grad = np.exp(logp)                               # softmax(z) − onehot(t), over the batch
        grad[np.arange(len(target)), target] -= 1.0
        grad /= len(target)
        return grad

    def torch(self, output, target):
        import torch.nn.functional as F
        per = F.cross_entropy(output, target, reduction="none")
        return per.detach(), per.mean()

"""bce: −mean(t·log y + (1 − t)·log(1 − y)) on probabilities, as torch.nn.BCELoss():
logs clamped at −100, the gradient's denominator at torch's EPSILON (a C++ `float` 1e-12,
which is 9.99999996e-13 as a double)."""

from __future__ import annotations

import numpy as np

from gdstep.nn.losses.base import Loss, fraction, register

EPSILON = float(np.float32(1e-12))      # torch: `constexpr float EPSILON = 1e-12`


@register
class BCE(Loss):
    kind, classification = "bce", True
    grad_formula = "(y − t) / (y·(1 − y)) / N"
    tex = r"L = -\frac{1}{N}\sum_i \big(t_i \log y_i + (1 - t_i)\log(1 - y_i)\big)"
    torch_class = "BCELoss"

    @classmethod
    def check_layers(cls, kinds):
        if kinds[-1] != "sigmoid":
            return 'bce takes probabilities: end model.layers with "sigmoid"'
        return None

    def forward(self, output, target):
        log_y = np.maximum(np.log(output), -100.0)
        log_1my = np.maximum(np.log(1.0 - output), -100.0)
        per_element = -(target * log_y + (1.0 - target) * log_1my)
        return per_element.mean(axis=1), float(per_element.mean())

    def backward(self, output, target):
        return (output - target) / np.maximum((1.0 - output) * output, EPSILON) / output.size

    def accuracy(self, output, target):
        return fraction((output > 0.5) == (target > 0.5))

    def torch(self, output, target):
        """torch's BCELoss; on a non-finite output (which torch refuses with a RuntimeError)
        the same formula by hand, so the loss is nan and the run takes its non-finite pause."""
        import torch
        import torch.nn.functional as F
        if bool(torch.isfinite(output).all()):
            per = F.binary_cross_entropy(output, target, reduction="none")
        else:
            per = -(target * torch.clamp(torch.log(output), min=-100.0)
                    + (1.0 - target) * torch.clamp(torch.log(1.0 - output), min=-100.0))
        return per.detach().mean(1), per.mean()

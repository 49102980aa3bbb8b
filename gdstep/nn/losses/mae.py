"""mae: mean(|y − t|), as torch.nn.L1Loss()."""

from __future__ import annotations

import numpy as np

from gdstep.nn.losses.base import Loss, register


@register
class MAE(Loss):
    kind = "mae"
    grad_formula = "sign(y − t) / N"
    tex = r"L = \frac{1}{N}\sum_i |y_i - t_i|"
    torch_class = "L1Loss"

    def forward(self, output, target):
        d = np.abs(output - target)
        return d.mean(axis=1), float(d.mean())

    def backward(self, output, target):
        return np.sign(output - target) / output.size

    def torch(self, output, target):
        import torch.nn.functional as F
        per = F.l1_loss(output, target, reduction="none")
        return per.detach().mean(1), per.mean()

"""half_sse: Σ ½(t − y)² over outputs and samples, the classic textbook loss (torch has no
class for it: ½·MSELoss(reduction="sum"))."""

from __future__ import annotations

from gdstep.nn.losses.base import Loss, register


@register
class HalfSSE(Loss):
    kind = "half_sse"
    grad_formula = "y − t"
    tex = r"L = \sum_i \tfrac{1}{2}(t_i - y_i)^2"

    def forward(self, output, target):
        per_sample = 0.5 * ((target - output) ** 2).sum(axis=1)
        return per_sample, float(per_sample.sum())

    def backward(self, output, target):
        return output - target

    def torch(self, output, target):
        import torch.nn.functional as F
        per = F.mse_loss(output, target, reduction="none")
        return 0.5 * per.detach().sum(1), 0.5 * per.sum()

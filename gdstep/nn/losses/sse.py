"""sse: Σ (y − t)² over outputs and samples, as torch.nn.MSELoss(reduction="sum")."""

from __future__ import annotations

from gdstep.nn.losses.base import Loss, register


@register
class SSE(Loss):
    kind = "sse"
    grad_formula = "2·(y − t)"
    tex = r"L = \sum_i (y_i - t_i)^2"
    torch_class = "MSELoss"
    torch_reductions = ("sum",)

    def forward(self, output, target):
        per_sample = ((output - target) ** 2).sum(axis=1)
        return per_sample, float(per_sample.sum())

    def backward(self, output, target):
        return 2.0 * (output - target)

    def torch(self, output, target):
        import torch.nn.functional as F
        per = F.mse_loss(output, target, reduction="none")
        return per.detach().sum(1), per.sum()

"""mse: mean((y − t)²), as torch.nn.MSELoss()."""

from __future__ import annotations

from gdstep.nn.losses.base import Loss, register


@register
class MSE(Loss):
    kind = "mse"
    grad_formula = "2·(y − t) / N"
    tex = r"L = \frac{1}{N}\sum_i (y_i - t_i)^2"
    torch_class = "MSELoss"

    def forward(self, output, target):
        d2 = (output - target) ** 2
        return d2.mean(axis=1), float(d2.mean())

    def backward(self, output, target):
        return (2.0 / output.size) * (output - target)

    def torch(self, output, target):
        import torch.nn.functional as F
        per = F.mse_loss(output, target, reduction="none")
        return per.detach().mean(1), per.mean()

"""huber: mean(½d² if |d| ≤ δ else δ·(|d| − ½δ)), d = y − t, as torch.nn.HuberLoss(delta=δ).
Scenario: `kind = "huber"` and `delta = 0.5` (default 1)."""

from __future__ import annotations

import numpy as np

from gdstep.nn.losses.base import Loss, register


@register
class Huber(Loss):
    kind = "huber"
    grad_formula = "clip(y − t, −δ, δ) / N"
    tex = (r"L = \frac{1}{N}\sum_i \begin{cases} \tfrac12 d_i^2 & |d_i| \le \delta \\ "
           r"\delta(|d_i| - \tfrac12\delta) & \text{else} \end{cases}")
    torch_class = "HuberLoss"

    def __init__(self, delta: float = 1.0):
        self.delta = delta

    @classmethod
    def read_options(cls, t):
        delta = t.get("delta", float, 1.0)
        if delta <= 0:
            t.fail(t.key_path("delta"), f"must be positive, got {delta}")
        return {"delta": delta}

    def forward(self, output, target):
        z = np.abs(output - target)
        per_element = np.where(z < self.delta, 0.5 * z * z, self.delta * (z - 0.5 * self.delta))
        return per_element.mean(axis=1), float(per_element.mean())

    def backward(self, output, target):
        d = output - target
        return np.clip(d, -self.delta, self.delta) / output.size

    def torch(self, output, target):
        import torch.nn.functional as F
        per = F.huber_loss(output, target, reduction="none", delta=self.delta)
        return per.detach().mean(1), per.mean()

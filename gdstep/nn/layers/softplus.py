"""softplus: log(1 + e^(β·x)) / β, and x itself where β·x > threshold, as
torch.nn.Softplus(beta, threshold). Scenario: `"softplus"` (β = 1, threshold = 20),
`{ softplus = 2 }` or `{ softplus = 2, threshold = 10 }`."""

from __future__ import annotations

import numpy as np

from gdstep.nn.layers.base import Activation, register


@register
class Softplus(Activation):
    kind = "softplus"
    table_form = "{ softplus = BETA }"
    torch_class = "Softplus"
    tex = r"a = \tfrac{1}{\beta}\log\!\big(1 + e^{\beta z}\big) \quad (a = z \text{ where } \beta z > \text{threshold})"

    def __init__(self, index: int, beta: float = 1.0, threshold: float = 20.0):
        super().__init__(index)
        self.beta, self.threshold = beta, threshold

    @classmethod
    def read_table(cls, t):
        beta = t.get("softplus", float)
        if beta <= 0:
            t.fail(t.key_path("softplus"), f"beta must be positive, got {beta}")
        return {"beta": beta, "threshold": t.get("threshold", float, 20.0)}

    @classmethod
    def spec_text(cls, options):
        extra = "" if options["threshold"] == 20.0 else f", threshold={options['threshold']:g}"
        return f"softplus({options['beta']:g}{extra})"

    @property
    def derivative_text(self) -> str:
        return f"softplus'(z) = σ(β·z), 1 where β·z > {self.threshold:g}; β = {self.beta:g}"

    def forward(self, params, x):
        bx = x * self.beta
        return np.where(bx > self.threshold, x, np.log1p(np.exp(np.minimum(bx, self.threshold))) / self.beta)

    def derivative(self, x, y):
        bx = x * self.beta
        e = np.exp(np.minimum(bx, self.threshold))
        return np.where(bx > self.threshold, 1.0, e / (e + 1.0)).astype(x.dtype)    # σ(β·x)

    def torch_module(self):
        import torch.nn as nn
        return nn.Softplus(beta=self.beta, threshold=self.threshold)

    @classmethod
    def from_torch(cls, module, index=0):
        import torch.nn as nn
        return cls(index, float(module.beta), float(module.threshold)) if type(module) is nn.Softplus else None

    def __repr__(self) -> str:
        return f"Softplus(beta={self.beta}, threshold={self.threshold})"

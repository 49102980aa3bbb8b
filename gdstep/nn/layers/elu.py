"""elu: x if x > 0 else α·(e^x − 1), as torch.nn.ELU(alpha). Scenario: `"elu"` (α = 1) or
`{ elu = 0.5 }`."""

from __future__ import annotations

import numpy as np

from gdstep.nn.layers.base import Activation, register


@register
class ELU(Activation):
    kind = "elu"
    table_form = "{ elu = ALPHA }"
    torch_class = "ELU"
    tex = r"a = \begin{cases} z & z > 0 \\ \alpha\,(e^{z} - 1) & z \le 0 \end{cases}"

    def __init__(self, index: int, alpha: float = 1.0):
        super().__init__(index)
        self.alpha = alpha

    @classmethod
    def read_table(cls, t):
        return {"alpha": t.get("elu", float)}

    @property
    def derivative_text(self) -> str:
        return f"elu'(z) = 1 if z > 0 else α·e^z; α = {self.alpha:g}"

    def forward(self, params, x):
        return np.where(x > 0, x, self.alpha * np.expm1(np.minimum(x, 0.0)))

    def derivative(self, x, y):
        return np.where(x > 0, 1.0, self.alpha * np.exp(np.minimum(x, 0.0))).astype(x.dtype)

    def torch_module(self):
        import torch.nn as nn
        return nn.ELU(alpha=self.alpha)

    @classmethod
    def from_torch(cls, module, index=0):
        import torch.nn as nn
        return cls(index, float(module.alpha)) if type(module) is nn.ELU else None

    def __repr__(self) -> str:
        return f"ELU(alpha={self.alpha})"

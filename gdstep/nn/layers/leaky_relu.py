"""leaky_relu: x if x > 0 else s·x, as torch.nn.LeakyReLU(s). Scenario: `"leaky_relu"`
(s = 0.01) or `{ leaky_relu = 0.2 }`."""

from __future__ import annotations

import numpy as np

from gdstep.nn.layers.base import Activation, register


@register
class LeakyReLU(Activation):
    kind = "leaky_relu"
    table_form = "{ leaky_relu = SLOPE }"
    torch_class = "LeakyReLU"
    tex = r"a = \begin{cases} z & z > 0 \\ s\,z & z \le 0 \end{cases}"

    def __init__(self, index: int, negative_slope: float = 0.01):
        super().__init__(index)
        self.negative_slope = negative_slope

    @classmethod
    def read_table(cls, t):
        return {"negative_slope": t.get("leaky_relu", float)}

    @property
    def derivative_text(self) -> str:
        return f"leaky_relu'(z) = 1 if z > 0 else {self.negative_slope:g}"

    def forward(self, params, x):
        return np.where(x > 0, x, x * self.negative_slope)

    def derivative(self, x, y):
        return np.where(x > 0, 1.0, self.negative_slope).astype(x.dtype)

    def torch_module(self):
        import torch.nn as nn
        return nn.LeakyReLU(self.negative_slope)

    @classmethod
    def from_torch(cls, module, index=0):
        import torch.nn as nn
        return cls(index, module.negative_slope) if type(module) is nn.LeakyReLU else None

    def __repr__(self) -> str:
        return f"LeakyReLU(negative_slope={self.negative_slope})"

"""gelu_tanh: GELU's tanh approximation ½x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), as
torch.nn.GELU(approximate="tanh")."""

from __future__ import annotations

import math

import numpy as np

from gdstep.nn.layers.base import Activation, register

BETA = math.sqrt(2.0 / math.pi)
KAPPA = 0.044715


@register
class GELUTanh(Activation):
    kind = "gelu_tanh"
    derivative_text = "gelu_tanh'(z) = ½(1 + tanh u) + ½z·(1 − tanh²u)·√(2/π)·(1 + 3·0.044715·z²)"
    torch_class = "GELU"
    tex = (r"a = \tfrac12 z\big(1 + \tanh u\big), \quad u = \sqrt{2/\pi}\,\big(z + 0.044715\,z^3\big)")

    def forward(self, params, x):
        inner = BETA * (x + KAPPA * (x * x * x))
        return 0.5 * x * (1.0 + np.tanh(inner))

    def derivative(self, x, y):
        x_sq = x * x
        t = np.tanh(BETA * (x + KAPPA * (x_sq * x)))
        return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * (BETA * (1.0 + 3.0 * KAPPA * x_sq))

    def torch_module(self):
        import torch.nn as nn
        return nn.GELU(approximate="tanh")

    @classmethod
    def from_torch(cls, module, index=0):
        import torch.nn as nn
        return cls(index) if type(module) is nn.GELU and module.approximate == "tanh" else None

    def __repr__(self) -> str:
        return "GELU(approximate='tanh')"

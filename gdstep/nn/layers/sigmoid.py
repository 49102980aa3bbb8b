"""sigmoid: σ(x) = 1 / (1 + e^−x), as torch.nn.Sigmoid."""

from __future__ import annotations

import numpy as np

from gdstep.nn.layers.base import Activation, register


@register
class Sigmoid(Activation):
    kind = "sigmoid"
    derivative_text = "σ'(z) = a·(1 − a)"
    torch_class = "Sigmoid"
    tex = r"a = \sigma(z) = \frac{1}{1 + e^{-z}}"

    def forward(self, params, x):
        return 1.0 / (1.0 + np.exp(-x))

    def derivative(self, x, y):
        return (1.0 - y) * y                             # σ'(x) = σ(x)·(1 − σ(x))

    def torch_module(self):
        import torch.nn as nn
        return nn.Sigmoid()

"""tanh, as torch.nn.Tanh."""

from __future__ import annotations

import numpy as np

from gdstep.nn.layers.base import Activation, register


@register
class Tanh(Activation):
    kind = "tanh"
    derivative_text = "tanh'(z) = 1 − a²"
    torch_class = "Tanh"
    tex = r"a = \tanh(z)"

    def forward(self, params, x):
        return np.tanh(x)

    def derivative(self, x, y):
        return 1.0 - y * y                               # tanh'(x) = 1 − tanh²(x)

    def torch_module(self):
        import torch.nn as nn
        return nn.Tanh()

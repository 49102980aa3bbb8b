"""relu: max(0, x), as torch.nn.ReLU (derivative 0 at x = 0)."""

from __future__ import annotations

import numpy as np

from gdstep.nn.layers.base import NO_GRADS, Activation, register


@register
class ReLU(Activation):
    kind = "relu"
    derivative_text = "relu'(z) = 1 if z > 0 else 0"
    torch_class = "ReLU"
    tex = r"a = \max(0, z)"

    def forward(self, params, x):
        return np.maximum(x, 0.0)

    def backward(self, params, x, y, grad_y, trainable, need_grad_x=True, out=NO_GRADS):
        return (np.where(x > 0, grad_y, 0.0) if need_grad_x else None), NO_GRADS

    def derivative(self, x, y):
        return (x > 0).astype(x.dtype)

    def torch_module(self):
        import torch.nn as nn
        return nn.ReLU()

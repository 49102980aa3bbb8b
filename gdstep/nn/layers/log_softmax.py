"""log_softmax over the features of each sample (dim=1), as torch.nn.LogSoftmax(dim=1).

Not elementwise: every output depends on every input of its row, so backward is the
vector-Jacobian product δz = δa − softmax(z)·Σ_j δa[j], with softmax(z) = e^a.
"""

from __future__ import annotations

import numpy as np

from gdstep.fmt import factor, num
from gdstep.nn.layers.base import NO_GRADS, Layer, register


@register
class LogSoftmax(Layer):
    kind = "log_softmax"
    keeps_finite = False          # z − max(z) can overflow where a row's values span more than the float range
    torch_class = "LogSoftmax"
    tex = r"a_i = z_i - \log \sum_j e^{z_j}"

    def forward(self, params, x):
        shifted = x - x.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))

    def backward(self, params, x, y, grad_y, trainable, need_grad_x=True, out=NO_GRADS):
        if not need_grad_x:
            return None, NO_GRADS
        return grad_y - np.exp(y) * grad_y.sum(axis=1, keepdims=True), NO_GRADS

    def delta_line(self, i, z, a, upstream, delta):
        softmax_i = float(np.exp(np.float64(a[i])))
        total = float(np.sum(np.asarray(upstream, dtype=np.float64)))
        return (f"δ[0,{i}] = ∂L/∂a[0,{i}] − softmax(z[0])[{i}] · Σ_j ∂L/∂a[0,j] = {factor(num(upstream[i]))} − "
                f"{factor(num(softmax_i))} × {factor(num(total))} = {num(delta)}"
                f"   (log_softmax: δz = δa − softmax(z)·Σ_j δa[j])")

    def torch_module(self):
        import torch.nn as nn
        return nn.LogSoftmax(dim=1)

    @classmethod
    def from_torch(cls, module, index=0):
        import torch.nn as nn
        return cls(index) if type(module) is nn.LogSoftmax and module.dim == 1 else None

    def __repr__(self) -> str:
        return "LogSoftmax(dim=1)"

"""identity: a = z, as torch.nn.Identity."""

from __future__ import annotations

from gdstep.nn.layers.base import NO_GRADS, Activation, register


@register
class Identity(Activation):
    kind = "identity"
    torch_class = "Identity"
    tex = r"a = z"

    def backward(self, params, x, y, grad_y, trainable, need_grad_x=True, out=NO_GRADS):
        return (grad_y if need_grad_x else None), NO_GRADS

    def torch_module(self):
        import torch.nn as nn
        return nn.Identity()

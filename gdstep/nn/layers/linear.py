"""linear: y = x @ W.T + b, as torch.nn.Linear; W has shape (out, in)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from gdstep.nn.init import init_linear
from gdstep.nn.layers.base import NO_GRADS, Layer, Params, register


@register
class Linear(Layer):
    """Scenario: `{ linear = 4 }` or `{ linear = 4, bias = false }`; in-features are inferred."""

    kind: ClassVar[str] = "linear"
    affine = True
    table_form = "{ linear = N }"
    inferred = ("in_features",)
    torch_class = "Linear"
    tex = r"z = a_{\text{in}}\,W^\top + b"

    def __init__(self, index: int, in_features: int, out_features: int, bias: bool = True):
        self.index, self.in_features, self.out_features, self.has_bias = index, in_features, out_features, bias
        self.weight, self.bias = f"{index}.weight", f"{index}.bias"

    @classmethod
    def read_name(cls, fail):
        fail("a linear layer needs its size: { linear = 4 }")

    @classmethod
    def read_table(cls, t):
        out = t.get("linear", int)
        if out < 1:
            t.fail(t.key_path("linear"), f"must be a positive number of units, got {out}")
        return {"out_features": out, "bias": t.get("bias", bool, True)}

    @classmethod
    def spec_text(cls, options):
        return f"linear {options['out_features']}" + ("" if options["bias"] else " (no bias)")

    @classmethod
    def build(cls, index, in_features, **options):
        return cls(index, in_features, **options)

    def features_out(self, in_features: int) -> int:
        return self.out_features

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {self.weight: (self.out_features, self.in_features)}
        if self.has_bias:
            shapes[self.bias] = (self.out_features,)
        return shapes

    def initial_params(self, init, rng, scale):
        weight, bias = init_linear(init, rng, self.out_features, self.in_features, self.has_bias, scale)
        return {self.weight: weight} if bias is None else {self.weight: weight, self.bias: bias}

    def forward(self, params: Params, x: np.ndarray) -> np.ndarray:
        z = x @ params[self.weight].T
        if self.has_bias:
            z += params[self.bias]
        return z

    def forward_features_first(self, params: Params, xt: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        zt = np.matmul(params[self.weight], xt, out=out)   # zᵀ = W·xᵀ
        if self.has_bias:
            zt += params[self.bias][:, None]
        return zt

    def backward(self, params: Params, x: np.ndarray, y: np.ndarray, grad_y: np.ndarray, trainable: frozenset[str],
                 need_grad_x: bool = True, out: Params = NO_GRADS) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        grads = {}
        if self.weight in trainable:
            grads[self.weight] = np.matmul(grad_y.T, x, out=out.get(self.weight))    # ∂L/∂W[i,j] = Σ_b δ[b,i]·x[b,j]
        if self.has_bias and self.bias in trainable:
            grads[self.bias] = np.add.reduce(grad_y, axis=0, out=out.get(self.bias))  # ∂L/∂b[i] = Σ_b δ[b,i]
        grad_x = grad_y @ params[self.weight] if need_grad_x else None
        return grad_x, grads

    def torch_module(self):
        import torch.nn as nn
        return nn.Linear(self.in_features, self.out_features, bias=self.has_bias)

    @classmethod
    def from_torch(cls, module, index=0):
        import torch.nn as nn
        if type(module) is not nn.Linear:
            return None
        return cls(index, module.in_features, module.out_features, bias=module.bias is not None)

    @classmethod
    def torch_text(cls, module):
        return cls.from_torch(module).text

    @property
    def text(self) -> str:
        return f"Linear({self.in_features} → {self.out_features})" + ("" if self.has_bias else ", no bias")

    def __repr__(self) -> str:
        return f"Linear(in_features={self.in_features}, out_features={self.out_features}, bias={self.has_bias})"

"""The layers of a numpy MLP, each with its forward and backward side by side.

Layers hold no parameter values: `forward(params, x)` and `backward(params, x, y, grad_y)`
read them from a dict keyed by torch's names (`0.weight`), so a training state is plain data
that can be snapshotted and rewound. `backward` returns ∂L/∂x and the parameter gradients,
written into `out` when it holds an array for them (the backend's flat gradient).
"""

from __future__ import annotations

from typing import ClassVar, Mapping

import numpy as np

Params = Mapping[str, np.ndarray]
NO_GRADS: dict[str, np.ndarray] = {}


class Linear:
    """y = x @ W.T + b, as torch.nn.Linear; W has shape (out, in)."""

    kind: ClassVar[str] = "linear"

    def __init__(self, index: int, in_features: int, out_features: int, bias: bool = True):
        self.index, self.in_features, self.out_features, self.has_bias = index, in_features, out_features, bias
        self.weight, self.bias = f"{index}.weight", f"{index}.bias"

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = {self.weight: (self.out_features, self.in_features)}
        if self.has_bias:
            shapes[self.bias] = (self.out_features,)
        return shapes

    def forward(self, params: Params, x: np.ndarray) -> np.ndarray:
        z = x @ params[self.weight].T
        if self.has_bias:
            z += params[self.bias]
        return z

    def backward(self, params: Params, x: np.ndarray, y: np.ndarray, grad_y: np.ndarray, trainable: frozenset[str],
                 need_grad_x: bool = True, out: Params = NO_GRADS) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        grads = {}
        if self.weight in trainable:
            grads[self.weight] = np.matmul(grad_y.T, x, out=out.get(self.weight))    # ∂L/∂W[i,j] = Σ_b δ[b,i]·x[b,j]
        if self.has_bias and self.bias in trainable:
            grads[self.bias] = np.sum(grad_y, axis=0, out=out.get(self.bias))         # ∂L/∂b[i] = Σ_b δ[b,i]
        grad_x = grad_y @ params[self.weight] if need_grad_x else None
        return grad_x, grads

    def __repr__(self) -> str:
        return f"Linear(in_features={self.in_features}, out_features={self.out_features}, bias={self.has_bias})"


class Activation:
    """An elementwise function; `derivative(x, y)` is f'(x), written with y = f(x) where cheaper."""

    kind: ClassVar[str] = "identity"
    formula: ClassVar[str] = "x"
    param_shapes: ClassVar[dict] = {}

    def __init__(self, index: int):
        self.index = index

    def forward(self, params: Params, x: np.ndarray) -> np.ndarray:
        return x

    def backward(self, params: Params, x: np.ndarray, y: np.ndarray, grad_y: np.ndarray, trainable: frozenset[str],
                 need_grad_x: bool = True, out: Params = NO_GRADS) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        return (grad_y * self.derivative(x, y) if need_grad_x else None), NO_GRADS

    def derivative(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.ones_like(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Identity(Activation):
    kind = "identity"

    def backward(self, params, x, y, grad_y, trainable, need_grad_x=True, out=NO_GRADS):
        return (grad_y if need_grad_x else None), NO_GRADS


class Sigmoid(Activation):
    kind, formula = "sigmoid", "σ(x) = 1 / (1 + e^−x)"

    def forward(self, params, x):
        return 1.0 / (1.0 + np.exp(-x))

    def derivative(self, x, y):
        return (1.0 - y) * y                             # σ'(x) = σ(x)·(1 − σ(x))


class Tanh(Activation):
    kind, formula = "tanh", "tanh(x)"

    def forward(self, params, x):
        return np.tanh(x)

    def derivative(self, x, y):
        return 1.0 - y * y                               # tanh'(x) = 1 − tanh²(x)


class ReLU(Activation):
    kind, formula = "relu", "max(0, x)"

    def forward(self, params, x):
        return np.maximum(x, 0.0)

    def backward(self, params, x, y, grad_y, trainable, need_grad_x=True, out=NO_GRADS):
        return (np.where(x > 0, grad_y, 0.0) if need_grad_x else None), NO_GRADS

    def derivative(self, x, y):
        return (x > 0).astype(x.dtype)


class LeakyReLU(Activation):
    kind, formula = "leaky_relu", "x if x > 0 else s·x"

    def __init__(self, index: int, negative_slope: float = 0.01):
        super().__init__(index)
        self.negative_slope = negative_slope

    def forward(self, params, x):
        return np.where(x > 0, x, x * self.negative_slope)

    def derivative(self, x, y):
        return np.where(x > 0, 1.0, self.negative_slope).astype(x.dtype)

    def __repr__(self) -> str:
        return f"LeakyReLU(negative_slope={self.negative_slope})"


ACTIVATIONS: dict[str, type[Activation]] = {
    cls.kind: cls for cls in (Sigmoid, Tanh, ReLU, LeakyReLU, Identity)
}

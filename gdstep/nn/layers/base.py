"""What a layer kind is, and the registry everything else looks layers up in.

A layer kind is one class in one file (`register`ed here by its `kind`): how a scenario
names it, its numpy forward and backward side by side, its torch twin, the derivative
`chain_rule` prints and the TeX `export` writes. Layers hold no parameter values:
`forward(params, x)` and `backward(params, x, y, grad_y, …)` read them from a dict keyed by
torch's names (`0.weight`), so a training state is plain data that can be snapshotted and
rewound. `backward` returns ∂L/∂x and the parameter gradients, written into `out` when it
holds an array for them (the backend's flat gradient).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, ClassVar, Mapping

import numpy as np

from gdstep.fmt import factor, num

Params = Mapping[str, np.ndarray]
NO_GRADS: dict[str, np.ndarray] = {}

LAYERS: dict[str, type["Layer"]] = {}
"""kind -> layer class, in the order the scenario's messages list them."""


def register(cls: type["Layer"]) -> type["Layer"]:
    LAYERS[cls.kind] = cls
    return cls


def layer_class(kind: str) -> type["Layer"] | None:
    """The class of a gdstep layer kind; None for anything else (a user's torch module)."""
    return LAYERS.get(kind)


def keeps_finite(kind: str) -> bool:
    """Whether layers of this kind map finite inputs to finite outputs (so a run need not
    check their outputs for nan/inf: the layer before them is checked)."""
    cls = LAYERS.get(kind)
    return cls is not None and cls.keeps_finite


def is_affine(kind: str) -> bool:
    """Whether layers of this kind compute z = a·Wᵀ + b (the chain rule's ∂L/∂W = δᵀ·a)."""
    cls = LAYERS.get(kind)
    return cls is not None and cls.affine


def layer_from_torch(module, index: int = 0) -> "Layer | None":
    """The gdstep layer a torch module computes (nn.Tanh() -> Tanh), or None."""
    for cls in LAYERS.values():
        layer = cls.from_torch(module, index)
        if layer is not None:
            return layer
    return None


class Layer:
    kind: ClassVar[str]
    affine: ClassVar[bool] = False           # z = a·Wᵀ + b: its output is a z, its δ is ∂L/∂z
    keeps_finite: ClassVar[bool] = False     # finite inputs always give finite outputs
    table_form: ClassVar[str | None] = None  # how a TOML table names it, "{ leaky_relu = SLOPE }"
    inferred: ClassVar[tuple[str, ...]] = ()  # constructor arguments the model supplies (in_features)
    torch_class: ClassVar[str] = ""          # the torch.nn class of its twin
    tex: ClassVar[str | None] = None         # what `export` writes beside its outputs
    param_shapes: ClassVar[dict] = {}

    def __init__(self, index: int):
        self.index = index

    # -- the scenario: `"tanh"`, `{ leaky_relu = 0.2 }` -----------------------------------------

    @classmethod
    def options(cls, *args, **kwargs) -> dict[str, Any]:
        """The constructor's arguments the scenario gives (all but index and the inferred ones),
        with their defaults: the canonical form of a layer spec."""
        sig = inspect.signature(cls.__init__)
        params = [p for p in list(sig.parameters.values())[2:] if p.name not in cls.inferred]
        bound = sig.replace(parameters=params).bind(*args, **kwargs)
        bound.apply_defaults()
        return dict(bound.arguments)

    @classmethod
    def read_name(cls, fail: Callable[[str], Any]) -> dict[str, Any]:
        """The options of the bare name (`"tanh"`); `fail(message)` when a name is not enough."""
        return {}

    @classmethod
    def read_table(cls, t) -> dict[str, Any]:
        """The options of a table such as `{ leaky_relu = 0.2 }`; `t` is the scenario's table
        reader (`get(key, type, default)`, `fail(where, message)`, `key_path(key)`)."""
        raise NotImplementedError

    @classmethod
    def spec_text(cls, options: Mapping[str, Any]) -> str:
        if not options:
            return cls.kind
        return f"{cls.kind}(" + ", ".join(f"{v:g}" for v in options.values()) + ")"

    @classmethod
    def build(cls, index: int, in_features: int, **options) -> "Layer":
        return cls(index, **options)

    def features_out(self, in_features: int) -> int:
        return in_features

    # -- numpy ----------------------------------------------------------------------------------

    def initial_params(self, init: str, rng: np.random.Generator, scale: float | None) -> dict[str, np.ndarray]:
        return {}

    def forward(self, params: Params, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward_features_first(self, params: Params, xt: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """`forward` on a batch laid out features first: xt is (features, batch), the
        transpose of forward's input, and so is the result, written into `out` when given.
        The landscape's grid runs a model this way (its reductions over classes then run
        along contiguous memory). An element-wise layer needs nothing more than this; one
        that mixes features overrides it."""
        y = self.forward(params, xt.T).T
        if out is None:
            return y
        out[...] = y
        return out

    def backward(self, params: Params, x: np.ndarray, y: np.ndarray, grad_y: np.ndarray, trainable: frozenset[str],
                 need_grad_x: bool = True, out: Params = NO_GRADS) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        raise NotImplementedError

    # -- torch ----------------------------------------------------------------------------------

    def torch_module(self):
        """The torch.nn module that computes the same function (parameters named alike)."""
        raise NotImplementedError

    @classmethod
    def from_torch(cls, module, index: int = 0) -> "Layer | None":
        """This kind's layer if `module` is its twin, else None."""
        import torch.nn as nn

        if cls.torch_class and type(module) is getattr(nn, cls.torch_class, None):
            return cls(index)
        return None

    @classmethod
    def torch_text(cls, module) -> str | None:
        """The model tree's text for a torch twin; None: the module's own repr."""
        return None

    # -- text -----------------------------------------------------------------------------------

    @property
    def text(self) -> str:
        """The model tree's text: `Tanh`, `LeakyReLU(negative_slope=0.2)`."""
        return repr(self).replace("()", "")

    def delta_line(self, i: int, z: np.ndarray, a: np.ndarray, upstream: np.ndarray, delta: float) -> str | None:
        """How δ[0,i] = ∂L/∂z[0,i] of the layer before comes out of this layer's ∂L/∂a, with
        the numbers of sample 0: z, a and upstream (∂L/∂a) are that sample's rows."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Activation(Layer):
    """An elementwise function; `derivative(x, y)` is f'(x), written with y = f(x) where cheaper."""

    kind: ClassVar[str] = "identity"
    derivative_text: ClassVar[str] = "1"       # the f' that chain_rule prints
    keeps_finite = True

    def forward(self, params: Params, x: np.ndarray) -> np.ndarray:
        return x

    def backward(self, params: Params, x: np.ndarray, y: np.ndarray, grad_y: np.ndarray, trainable: frozenset[str],
                 need_grad_x: bool = True, out: Params = NO_GRADS) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        return (grad_y * self.derivative(x, y) if need_grad_x else None), NO_GRADS

    def derivative(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.ones_like(x)

    def delta_line(self, i, z, a, upstream, delta):
        z64, a64 = np.asarray(z, dtype=np.float64), np.asarray(a, dtype=np.float64)
        fprime = float(self.derivative(z64[i:i + 1], a64[i:i + 1])[0])
        return (f"δ[0,{i}] = ∂L/∂a[0,{i}] · f'(z[0,{i}]) = {factor(num(upstream[i]))} × {num(fprime)}"
                f" = {num(delta)}   ({self.derivative_text})")

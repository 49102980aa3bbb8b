"""A sequential MLP over a dict of parameters: forward keeps every layer's output,
backward walks the chain rule back through them and keeps every δ."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from gdstep.nn.layers import LAYERS, NO_GRADS, Layer

Params = Mapping[str, np.ndarray]


class Sequential:
    """Layers in order; parameter names follow torch.nn.Sequential (`0.weight`, `2.bias`)."""

    def __init__(self, layers: Sequence[Layer]):
        self.layers = tuple(layers)
        self.param_shapes: dict[str, tuple[int, ...]] = {}
        for layer in self.layers:
            self.param_shapes.update(layer.param_shapes)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self.param_shapes)

    @property
    def out_features(self) -> int:
        features = None                               # inferred by the first layer that sets them
        for layer in self.layers:
            features = layer.features_out(features)
        return features

    def forward(self, params: Params, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """The output of every layer: z for a linear layer, a for an activation."""
        outputs = []
        for layer in self.layers:
            x = layer.forward(params, x)
            outputs.append(x)
        return tuple(outputs)

    def backward(self, params: Params, x: np.ndarray, outputs: Sequence[np.ndarray], grad_output: np.ndarray,
                 trainable: frozenset[str], out: Params = NO_GRADS) -> tuple[tuple[np.ndarray, ...], dict[str, np.ndarray]]:
        """δ for every layer's output (∂L/∂z, ∂L/∂a) and the gradient of every trainable parameter
        (written into `out`'s arrays where it has them)."""
        deltas: list[np.ndarray] = [grad_output]
        grads: dict[str, np.ndarray] = {}
        grad = grad_output
        for i in range(len(self.layers) - 1, -1, -1):
            layer_input = outputs[i - 1] if i else x
            grad, layer_grads = self.layers[i].backward(params, layer_input, outputs[i], grad, trainable,
                                                        need_grad_x=i > 0, out=out)
            grads.update(layer_grads)
            if i:
                deltas.append(grad)
        deltas.reverse()
        return tuple(deltas), {name: grads[name] for name in self.param_shapes if name in grads}


    def backward_lean(self, params: Params, x: np.ndarray, outputs: Sequence[np.ndarray], grad_output: np.ndarray,
                      trainable: frozenset[str], out: Params = NO_GRADS) -> dict[str, np.ndarray]:
        """The gradients of `backward` without keeping δ: each ∂L/∂output is held by no one
        but the next layer back, which may write over it (`backward_owned`), so `grad_output`
        must be the caller's to give away. The same operations on the same numbers."""
        grads: dict[str, np.ndarray] = {}
        grad = grad_output
        layers = self.layers
        for i in range(len(layers) - 1, -1, -1):
            layer = layers[i]
            backward = getattr(layer, "backward_owned", None) or layer.backward
            grad, layer_grads = backward(params, outputs[i - 1] if i else x, outputs[i], grad, trainable,
                                         need_grad_x=i > 0, out=out)
            if layer_grads:
                grads.update(layer_grads)
        return {name: grads[name] for name in self.param_shapes if name in grads}


def build_layer(index: int, spec, in_features: int) -> Layer:
    """A layer from its scenario spec (see scenario.LayerSpec): its kind's class, given the spec's options."""
    return LAYERS[spec.kind].build(index, in_features, **dict(spec.options))


def build_model(layer_specs, in_features: int) -> Sequential:
    layers = []
    features = in_features
    for i, spec in enumerate(layer_specs):
        layer = build_layer(i, spec, features)
        features = layer.features_out(features)
        layers.append(layer)
    return Sequential(layers)

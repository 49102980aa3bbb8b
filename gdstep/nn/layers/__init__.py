"""The layer kinds, one file each, registered by kind in LAYERS (see base.py)."""

from gdstep.nn.layers.base import (LAYERS, NO_GRADS, Activation, Layer, Params, is_affine, keeps_finite,
                                   layer_class, layer_from_torch, register)
from gdstep.nn.layers.linear import Linear
from gdstep.nn.layers.sigmoid import Sigmoid
from gdstep.nn.layers.tanh import Tanh
from gdstep.nn.layers.relu import ReLU
from gdstep.nn.layers.leaky_relu import LeakyReLU
from gdstep.nn.layers.identity import Identity
from gdstep.nn.layers.softplus import Softplus
from gdstep.nn.layers.elu import ELU
from gdstep.nn.layers.gelu import GELU
from gdstep.nn.layers.gelu_tanh import GELUTanh
from gdstep.nn.layers.log_softmax import LogSoftmax

ACTIVATIONS: dict[str, type[Layer]] = {kind: cls for kind, cls in LAYERS.items() if not cls.affine}
"""The layers without parameters, by kind."""

__all__ = ["ACTIVATIONS", "ELU", "GELU", "GELUTanh", "LAYERS", "NO_GRADS", "Activation", "Identity", "Layer",
           "LeakyReLU", "Linear", "LogSoftmax", "Params", "ReLU", "Sigmoid", "Softplus", "Tanh", "is_affine",
           "keeps_finite", "layer_class", "layer_from_torch", "register"]

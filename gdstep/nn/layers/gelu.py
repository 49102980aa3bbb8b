"""gelu: x·Φ(x) with the exact normal CDF Φ(x) = ½(1 + erf(x/√2)), as torch.nn.GELU()."""

from __future__ import annotations

import math

import numpy as np

from gdstep.nn.layers.base import Activation, register

_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    """numpy has no erf: the C library's, element by element."""
    return np.asarray(_erf(x), dtype=np.float64).astype(x.dtype, copy=False)


@register
class GELU(Activation):
    kind = "gelu"
    derivative_text = "gelu'(z) = Φ(z) + z·φ(z) = ½(1 + erf(z/√2)) + z·e^(−z²/2)/√(2π)"
    torch_class = "GELU"
    tex = r"a = z\,\Phi(z) = \tfrac12 z\big(1 + \operatorname{erf}(z/\sqrt2)\big)"

    def forward(self, params, x):
        return 0.5 * x * (1.0 + erf(x * math.sqrt(0.5)))

    def derivative(self, x, y):
        cdf = 0.5 * (1.0 + erf(x * math.sqrt(0.5)))
        pdf = np.exp(-0.5 * x * x) * (0.5 * math.sqrt(2.0 / math.pi))
        return cdf + x * pdf

    def torch_module(self):
        import torch.nn as nn
        return nn.GELU()

    @classmethod
    def from_torch(cls, module, index=0):
        import torch.nn as nn
        return cls(index) if type(module) is nn.GELU and module.approximate == "none" else None

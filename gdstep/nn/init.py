"""Initial parameter values, drawn from the scenario's seed in a fixed order.

`torch` is torch.nn.Linear's own default (kaiming_uniform with a=√5 for W, which is
U(±1/√fan_in), and U(±1/√fan_in) for b); the others set biases to zero.
"""

from __future__ import annotations

import math

import numpy as np

INITS = ("torch", "xavier", "he", "normal", "uniform", "zeros")


def init_linear(kind: str, rng: np.random.Generator, fan_out: int, fan_in: int, has_bias: bool,
                scale: float | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    shape = (fan_out, fan_in)
    bias = np.zeros(fan_out) if has_bias else None
    if kind == "torch":
        bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        weight = rng.uniform(-bound, bound, size=shape)
        if has_bias:
            bias = rng.uniform(-bound, bound, size=fan_out)
    elif kind == "xavier":
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        weight = rng.uniform(-bound, bound, size=shape)
    elif kind == "he":
        weight = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
    elif kind == "normal":
        weight = rng.normal(0.0, 0.1 if scale is None else scale, size=shape)
    elif kind == "uniform":
        bound = 0.1 if scale is None else scale
        weight = rng.uniform(-bound, bound, size=shape)
    elif kind == "zeros":
        weight = np.zeros(shape)
    else:
        raise ValueError(f"unknown init {kind!r} (expected one of: {', '.join(INITS)})")
    return weight, bias


def initial_params(model, kind: str, scale: float | None, seed: int,
                   explicit: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Every parameter's starting value, float64: drawn layer by layer from the init stream
    of `seed`, then replaced by any explicit `[init]` values. Both backends start here."""
    rng = np.random.default_rng([seed, 1])
    params: dict[str, np.ndarray] = {}
    for layer in model.layers:
        params.update(layer.initial_params(kind, rng, scale))
    for name, value in (explicit or {}).items():
        params[name] = np.array(value, dtype=float)
    return params

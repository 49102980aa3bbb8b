"""The engine's fast paths compute exactly what the plain formulas do, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from gdstep.nn.layers.relu import masked


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_mask_equals_where_bit_for_bit(dtype):
    rng = np.random.default_rng(1)
    grad = rng.standard_normal((64, 37)).astype(dtype)
    x = rng.standard_normal((64, 37)).astype(dtype)
    grad.flat[:8] = [np.nan, np.inf, -np.inf, -0.0, 0.0, np.nan, -np.inf, -0.0]
    x.flat[:8] = [-1.0, -2.0, 0.0, 1.0, -0.0, 3.0, 4.0, -5.0]
    x.flat[8:12] = [np.nan, np.inf, -np.inf, 0.0]
    got = masked(grad, x > 0)
    want = np.where(x > 0, grad, 0.0)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()
    assert np.signbit(got.flat[3]) and not np.signbit(got.flat[7])    # -0.0 kept where x > 0, +0.0 where not


def test_relu_mask_non_contiguous_falls_back():
    grad = np.arange(12.0).reshape(3, 4).T
    keep = grad > 4
    assert masked(grad, keep).tobytes() == np.where(keep, grad, 0.0).tobytes()

"""relu: max(0, x), as torch.nn.ReLU (derivative 0 at x = 0)."""

from __future__ import annotations

import numpy as np

from gdstep.nn.layers.base import NO_GRADS, Activation, register


def masked(grad: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """`np.where(keep, grad, 0.0)`, bit for bit (nan, inf and -0.0 included): the bits of
    `grad` and'ed with all ones where `keep`, with all zeros (+0.0) elsewhere. Vectorised
    integer operations; np.where has no SIMD loop and runs several times slower right
    after a matrix product."""
    if grad.dtype.kind != "f" or grad.shape != keep.shape or not grad.flags.c_contiguous:
        return np.where(keep, grad, 0.0)
    bits = np.dtype(f"u{grad.dtype.itemsize}")
    mask = keep.astype(bits)
    np.negative(mask, out=mask)                  # 1 -> all ones, 0 -> 0
    np.bitwise_and(grad.view(bits), mask, out=mask)
    return mask.view(grad.dtype)


def mask_in_place(grad: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """`masked`, written over `grad` (a gradient nothing else holds): its bits times 1
    where `keep`, times 0 (+0.0) elsewhere, in one integer multiplication."""
    if grad.dtype.kind != "f" or grad.shape != keep.shape or not grad.flags.writeable:
        return masked(grad, keep)
    bits = grad.view(np.dtype(f"u{grad.dtype.itemsize}"))
    np.multiply(bits, keep, out=bits)
    return grad


_ZEROS: dict[tuple, np.ndarray] = {}


def zeros(shape: tuple[int, ...], dtype) -> np.ndarray:
    """A read-only array of zeros of this shape and dtype, made once (a few shapes are kept)."""
    key = (shape, np.dtype(dtype))
    z = _ZEROS.get(key)
    if z is None:
        if len(_ZEROS) >= 8:
            _ZEROS.clear()
        z = _ZEROS[key] = np.zeros(shape, dtype)
        z.setflags(write=False)
    return z


@register
class ReLU(Activation):
    kind = "relu"
    derivative_text = "relu'(z) = 1 if z > 0 else 0"
    torch_class = "ReLU"
    tex = r"a = \max(0, z)"

    def forward(self, params, x):
        return np.maximum(x, 0.0)

    def forward_features_first(self, params, xt, out=None):
        # element-wise: the layout is the result's. Against an array of zeros rather than
        # the scalar 0.0: numpy's SIMD loop for two arrays runs twice as fast as its loop for
        # an array and a broadcast scalar (the landscape's grid calls this 1,600 times a
        # layer); the same maximum, so the same values
        return np.maximum(xt, zeros(xt.shape, xt.dtype), out=out)

    def backward(self, params, x, y, grad_y, trainable, need_grad_x=True, out=NO_GRADS):
        if not need_grad_x:
            return None, NO_GRADS
        return masked(grad_y, x > 0), NO_GRADS

    def backward_owned(self, params, x, y, grad_y, trainable, need_grad_x=True, out=NO_GRADS):
        """`backward` when nothing else holds `grad_y` (a run's lean backward keeps no δ):
        the mask is applied in place."""
        if not need_grad_x:
            return None, NO_GRADS
        return mask_in_place(grad_y, x > 0), NO_GRADS

    def derivative(self, x, y):
        return (x > 0).astype(x.dtype)

    def torch_module(self):
        import torch.nn as nn
        return nn.ReLU()

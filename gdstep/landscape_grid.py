"""The landscape's grid of losses, L(W₀ + α·d₁ + β·d₂) at every (α, β), computed fast.

On the numpy engine the first layer's output is linear in its parameters (z = x·Wᵀ + b,
an affine layer), so over the whole grid it is Z₀ + α·Z_{d₁} + β·Z_{d₂}: three products
made once, and each point adds two scaled copies instead of a product with the data. The
layers after it run a point at a time in the scenario's dtype (their products differ at
every point, and one BLAS product a point is faster than numpy's stacked matmul), the
points split between threads that each give BLAS one core. Elsewhere (torch, a model
whose first layer is not affine) each point is the backend's own `loss_at`.

Values equal the loss computed directly at those weights up to the rounding of the sum
of three products (a few units in the last place of the dtype).
"""

from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gdstep.nn.model import Sequential

CHUNK = 256        # samples a pass: arrays small enough to be reused, not faulted in afresh


def grid_losses(backend, x, y, origin, d1, d2, alphas, betas, threads: int | None = None) -> np.ndarray:
    """loss[i, j] at origin + alphas[j]·d1 + betas[i]·d2 (dicts of float64 arrays by name)."""
    model = getattr(backend, "model", None)
    if not isinstance(model, Sequential) or not isinstance(x, np.ndarray) or not model.layers:
        return _pointwise(backend, x, y, origin, d1, d2, alphas, betas)
    return _Grid(backend, model, x, y, origin, d1, d2).losses(alphas, betas, threads)


def _pointwise(backend, x, y, origin, d1, d2, alphas, betas) -> np.ndarray:
    loss = np.empty((len(betas), len(alphas)))
    for i, b in enumerate(betas):
        for j, a in enumerate(alphas):
            loss[i, j] = backend.loss_at(x, y, {n: origin[n] + a * d1[n] + b * d2[n] for n in origin})
    return loss


class _Grid:
    def __init__(self, backend, model: Sequential, x, y, origin, d1, d2):
        self.backend, self.x, self.y = backend, x, y
        self.origin, self.d1, self.d2 = origin, d1, d2
        params = dict(backend.params())
        self.dt = next(iter(params.values())).dtype if params else x.dtype
        self.params = params
        first = model.layers[0]
        names = tuple(first.param_shapes)
        self.linear_first = bool(getattr(first, "affine", False)) and bool(names)
        if self.linear_first:
            at = {n: self._cast(origin[n]) if n in origin else params[n] for n in names}
            along = [{n: self._cast(d[n]) if n in d else np.zeros_like(params[n]) for n in names} for d in (d1, d2)]
            with np.errstate(all="ignore"):
                self.z0 = first.forward(at, x)                         # Z₀ = x·W₀ᵀ + b₀
                self.z1, self.z2 = (first.forward(p, x) for p in along)  # x·Dᵀ + d: the linear part
            self.rest = model.layers[1:]
            self.later = [n for n in origin if n not in names]
        else:
            self.rest = model.layers
            self.later = list(origin)

    def _cast(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=self.dt)

    def losses(self, alphas, betas, threads: int | None) -> np.ndarray:
        out = np.empty((len(betas), len(alphas)))
        rows = list(range(len(betas)))
        threads = threads or min(len(rows), os.cpu_count() or 1)
        with _one_blas_thread():
            if threads <= 1:
                self._rows(rows, alphas, betas, out)
                return out
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda part: self._rows(part, alphas, betas, out), [rows[k::threads] for k in range(threads)]))
        return out

    def _rows(self, rows, alphas, betas, out) -> None:
        origin, d1, d2, dt = self.origin, self.d1, self.d2, self.dt
        loss_fn = copy.copy(self.backend.loss_fn)       # its own: a loss keeps its last forward for backward
        params = dict(self.params)
        n = len(self.x)
        chunks = [slice(k, min(k + CHUNK, n)) for k in range(0, n, CHUNK)]
        outputs = None
        with np.errstate(all="ignore"):
            for i in rows:
                b = betas[i]
                zb = self.z0 + dt.type(b) * self.z2 if self.linear_first else None
                wb = {n: origin[n] + b * d2[n] for n in self.later}
                for j, a in enumerate(alphas):
                    for name in self.later:
                        params[name] = (wb[name] + a * d1[name]).astype(dt)
                    for c in chunks:
                        if self.linear_first:
                            h = self.z1[c] * dt.type(a)
                            h += zb[c]
                        else:
                            h = self.x[c]
                        for layer in self.rest:
                            h = layer.forward(params, h)
                        if outputs is None:
                            outputs = np.empty((n,) + h.shape[1:], dtype=h.dtype)
                        outputs[c] = h
                    out[i, j] = loss_fn.forward(outputs, self.y)[1]


class _one_blas_thread:
    """BLAS on one core while the grid computes: our threads split the points, and
    OpenBLAS's own threads on these small products, on a busy machine, ran the grid 5-10×
    slower (measured). The setting is process-wide for that time; the session's jobs run
    on the same worker as the grid, one after the other. A no-op where the BLAS cannot be
    told."""

    def __enter__(self):
        self._set = _blas_threads()
        self._was = 1
        if self._set is not None:
            self._was = self._set[1]()
            if self._was > 1:
                self._set[0](1)
        return self

    def __exit__(self, *exc):
        if self._set is not None and self._was > 1:
            self._set[0](self._was)
        return False


def _blas_threads():
    """(set, get) of numpy's bundled OpenBLAS thread count, or None."""
    try:
        import ctypes
        import glob
        libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*.so*"))
        if not libs:
            return None
        lib = ctypes.CDLL(libs[0])
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                if setter is not None and getter is not None:
                    getter.restype = ctypes.c_int
                    return (lambda n, f=setter: f(ctypes.c_int(n))), getter
    except OSError:
        return None
    return None

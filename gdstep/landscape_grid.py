"""The landscape's grid of losses, L(W₀ + α·d₁ + β·d₂) at every (α, β), computed fast.

On the numpy engine the first layer's output is linear in its parameters (z = x·Wᵀ + b,
an affine layer), so over the whole grid it is Z₀ + α·Z_{d₁} + β·Z_{d₂}: three products
made once, and each point adds two scaled copies instead of a product with the data. The
layers after it run a point at a time in the scenario's dtype (their products differ at
every point, and one BLAS product a point is faster than numpy's stacked matmul), on the
whole data at once laid out features first (`Layer.forward_features_first`: the loss's
reductions over classes then run along contiguous memory, 5× faster than across it), the
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
            with np.errstate(all="ignore"):                  # features first: Zᵀ, (features, batch)
                self.z0 = first.forward_features_first(at, x.T)          # Z₀ᵀ = W₀·xᵀ + b₀
                self.z1, self.z2 = (first.forward_features_first(p, x.T) for p in along)  # D·xᵀ + d
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
        xt = None if self.linear_first else np.ascontiguousarray(self.x.T)
        with np.errstate(all="ignore"):
            for i in rows:
                b = betas[i]
                zb = self.z0 + dt.type(b) * self.z2 if self.linear_first else None
                wb = {n: origin[n] + b * d2[n] for n in self.later}
                for j, a in enumerate(alphas):
                    for name in self.later:
                        params[name] = (wb[name] + a * d1[name]).astype(dt)
                    if self.linear_first:
                        ht = self.z1 * dt.type(a)
                        ht += zb
                    else:
                        ht = xt
                    for layer in self.rest:
                        ht = layer.forward_features_first(params, ht)
                    out[i, j] = loss_fn.forward(ht.T, self.y)[1]


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

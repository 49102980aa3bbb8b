"""The landscape's grid of losses, L(W₀ + α·d₁ + β·d₂) at every (α, β), computed fast.

On the numpy engine the first layer's output is linear in its parameters (z = x·Wᵀ + b,
an affine layer), so over the whole grid it is Z₀ + α·Z_{d₁} + β·Z_{d₂}: three products
made once, and each point adds two scaled copies instead of a product with the data. The
layers after it run a point at a time in the scenario's dtype (their products differ at
every point, and one BLAS product a point is faster than numpy's stacked matmul), laid out
features first (`Layer.forward_features_first`: the loss's reductions over classes then
run along contiguous memory, 5× faster than across it), a block of samples at a time
into buffers made once (`_Plan`), the points split between threads that each give BLAS
one core. Elsewhere (torch, a model
whose first layer is not affine) each point is the backend's own `loss_at`.

Values equal the loss computed directly at those weights up to the rounding of the sum
of three products (a few units in the last place of the dtype).
"""

from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gdstep.errors import Abandoned
from gdstep.nn.model import Sequential

def grid_losses(backend, x, y, origin, d1, d2, alphas, betas, threads: int | None = None, stop=None) -> np.ndarray:
    """loss[i, j] at origin + alphas[j]·d1 + betas[i]·d2 (dicts of float64 arrays by name).
    `stop()` is asked before each point; True gives the grid up (`Abandoned`)."""
    model = getattr(backend, "model", None)
    stop = stop or never
    if not isinstance(model, Sequential) or not isinstance(x, np.ndarray) or not model.layers:
        return _pointwise(backend, x, y, origin, d1, d2, alphas, betas, stop)
    return _Grid(backend, model, x, y, origin, d1, d2, stop).losses(alphas, betas, threads)


def never() -> bool:
    """The `stop` of a computation nobody gives up."""
    return False


def stop_if_asked(stop) -> None:
    """Abandoned when `stop()` says so (checked between pieces of work that may be given up)."""
    if stop():
        raise Abandoned("the landscape was given up: its caller asked to stop")


def _pointwise(backend, x, y, origin, d1, d2, alphas, betas, stop=never) -> np.ndarray:
    loss = np.empty((len(betas), len(alphas)))
    for i, b in enumerate(betas):
        for j, a in enumerate(alphas):
            stop_if_asked(stop)
            loss[i, j] = backend.loss_at(x, y, {n: origin[n] + a * d1[n] + b * d2[n] for n in origin})
    return loss


class _Grid:
    def __init__(self, backend, model: Sequential, x, y, origin, d1, d2, stop=never):
        self.backend, self.x, self.y, self._stop = backend, x, y, stop
        self.given_up = False
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

    def stop(self) -> bool:
        """The caller's stop, remembered: once one thread gives up, the others do at their next point."""
        if not self.given_up and self._stop():
            self.given_up = True
        return self.given_up

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
        if self.linear_first:
            return _Plan(self).rows(rows, alphas, betas, out)
        origin, d1, d2, dt = self.origin, self.d1, self.d2, self.dt
        loss_fn = copy.copy(self.backend.loss_fn)       # its own: a loss keeps its last forward for backward
        params = dict(self.params)
        xt = np.ascontiguousarray(self.x.T)
        with np.errstate(all="ignore"):
            for i in rows:
                b = betas[i]
                wb = {n: origin[n] + b * d2[n] for n in self.later}
                for j, a in enumerate(alphas):
                    stop_if_asked(self.stop)
                    for name in self.later:
                        params[name] = (wb[name] + a * d1[name]).astype(dt)
                    ht = xt
                    for layer in self.rest:
                        ht = layer.forward_features_first(params, ht)
                    out[i, j] = loss_fn.forward(ht.T, self.y)[1]


class _Plan:
    """One thread's way through the layers after the first, a block of samples at a time
    (`BLOCK` of them: every array a point needs then stays in the core's own cache, where
    the whole data's did not), with every array made once: each layer writes into its own
    buffer (`forward_features_first(…, out=)`), and an affine layer's bias rides in its
    product, [W | b]·[a; 1], its input's buffer holding a row of ones under the features
    (one pass less per layer; the bias is the product's last term, so the sum is the same).
    The last layer's outputs for every block go into one array, on which the loss runs
    once, as it would on the whole data."""

    BLOCK = 448

    def __init__(self, grid: "_Grid"):
        self.grid = grid
        self.loss_fn = copy.copy(grid.backend.loss_fn)  # its own: a loss keeps its last forward for backward
        n, dt = grid.z0.shape[1], grid.dt
        self.blocks = [(c, min(c + self.BLOCK, n)) for c in range(0, n, self.BLOCK)]
        width = self.blocks[0][1] - self.blocks[0][0]
        feats = [grid.z0.shape[0]]
        for layer in grid.rest:
            feats.append(layer.features_out(feats[-1]))
        self.inputs = []                               # the buffer each layer reads, a block wide
        for k, layer in enumerate(grid.rest):
            buf = np.empty((feats[k] + (_bias_name(layer) is not None), width), dtype=dt)
            if _bias_name(layer) is not None:
                buf[-1] = 1
            self.inputs.append(buf)
        self.block_out = np.empty((feats[-1], width), dtype=dt)
        self.last = np.empty((feats[-1], n), dtype=dt)
        self.stacked = {}                              # affine layer -> its [W | b] at this point
        for layer in grid.rest:
            if _bias_name(layer) is not None:
                w = grid.params[layer.weight]
                self.stacked[layer] = np.empty((w.shape[0], w.shape[1] + 1), dtype=dt)
        # the first layer's three products, block by block, each block contiguous
        self.z0, self.z1, self.z2 = ([np.ascontiguousarray(z[:, c0:c1]) for c0, c1 in self.blocks]
                                     for z in (grid.z0, grid.z1, grid.z2))

    def rows(self, rows, alphas, betas, out) -> None:
        g, dt = self.grid, self.grid.dt
        params = dict(g.params)
        later = {n: np.empty(g.params[n].shape) for n in g.later}      # float64, cast as stored
        with np.errstate(all="ignore"):
            for i in rows:
                b = betas[i]
                zb = [z0 + dt.type(b) * z2 for z0, z2 in zip(self.z0, self.z2)]
                wb = {n: g.origin[n] + b * g.d2[n] for n in g.later}
                for j, a in enumerate(alphas):
                    stop_if_asked(g.stop)
                    for name, w in later.items():
                        np.multiply(g.d1[name], a, out=w)
                        w += wb[name]
                        params[name] = w
                    self._stack(params)
                    for k, (c0, c1) in enumerate(self.blocks):
                        self._block(params, dt.type(a), self.z1[k], zb[k], c0, c1)
                    out[i, j] = self.loss_fn.forward(self.last.T, g.y)[1]

    def _stack(self, params) -> None:
        for layer, stacked in self.stacked.items():
            stacked[:, :-1] = params[layer.weight]
            stacked[:, -1] = params[layer.bias]

    def _block(self, params, a, z1, zb, c0, c1) -> None:
        rest, inputs, w = self.grid.rest, self.inputs, c1 - c0
        first = inputs[0][:z1.shape[0], :w] if rest else self.block_out[:, :w]
        np.multiply(z1, a, out=first)
        first += zb
        for k, layer in enumerate(rest):
            if k + 1 < len(rest):
                dest = inputs[k + 1][:inputs[k + 1].shape[0] - (_bias_name(rest[k + 1]) is not None), :w]
            else:
                dest = self.block_out[:, :w]
            stacked = self.stacked.get(layer)
            if stacked is None:
                layer.forward_features_first(_cast(params, layer, self.grid.dt), inputs[k][:, :w], out=dest)
            else:
                np.matmul(stacked, inputs[k][:, :w], out=dest)
        self.last[:, c0:c1] = self.block_out[:, :w]


def _bias_name(layer) -> str | None:
    """The name of an affine layer's bias (its product can carry it), else None."""
    if not getattr(layer, "affine", False) or not getattr(layer, "has_bias", False):
        return None
    return layer.bias


def _cast(params, layer, dt):
    """The layer's own parameters in the scenario's dtype (the grid keeps them in float64)."""
    return {**params, **{n: np.asarray(params[n], dtype=dt) for n in layer.param_shapes}} if layer.param_shapes else params


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

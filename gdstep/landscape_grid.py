"""The landscape's grid of losses, L(W₀ + α·d₁ + β·d₂) at every (α, β), computed fast.

On the numpy engine the first layer's output is linear in its parameters (z = x·Wᵀ + b,
an affine layer), so over the whole grid it is Z₀ + α·Z_{d₁} + β·Z_{d₂}: three products
made once, and each point adds two scaled copies instead of a product with the data. The
layers after it run in the scenario's dtype, a few points of a row at a time (`_Plan`:
one numpy call a step for all of them), laid out features first
(`Layer.forward_features_first`: the loss's reductions over classes then run along
contiguous memory, 5× faster than across it), a block of samples at a time into buffers
made once, the rows split between threads that each give BLAS one core. Elsewhere
(torch, a model whose first layer is not affine) each point is the backend's own `loss_at`.

Values equal the loss computed directly at those weights up to the rounding of the sum
of three products (a few units in the last place of the dtype).
"""

from __future__ import annotations

import copy
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from gdstep.errors import Abandoned
from gdstep.nn.layers import Activation
from gdstep.nn.model import Sequential


def grid_losses(backend, x, y, origin, d1, d2, alphas, betas, threads: int | None = None, stop=None) -> np.ndarray:
    """loss[i, j] at origin + alphas[j]·d1 + betas[i]·d2 (dicts of float64 arrays by name).
    `stop()` is asked before each point (each chunk of `_Plan.CHUNK` points on the fast
    path); True gives the grid up (`Abandoned`)."""
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
            shared = _Rows(rows)
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda _: self._rows(shared, alphas, betas, out), range(threads)))
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


class _Rows:
    """The grid's rows, handed out one at a time to whichever thread asks next: the two
    cores here do not run at the same speed (one thread's half of the rows took 20–35 %
    longer than the other's), so a fixed half each left the faster one idle."""

    def __init__(self, rows: list[int]):
        self._rows, self._next, self._lock = rows, 0, threading.Lock()

    def __iter__(self):
        return self

    def __next__(self) -> int:
        with self._lock:
            if self._next >= len(self._rows):
                raise StopIteration
            self._next += 1
            return self._rows[self._next - 1]


class _Plan:
    """One thread's way through the layers after the first, `CHUNK` points of a row at a
    time and a block of `BLOCK` samples at a time, every array made once (4 × 224 measured
    fastest on the benchmark MLP; against a point at a time, 448 samples, in one process,
    interleaved: a fifth less time on one thread, a quarter less on two).

    - A chunk's points go through each step in one numpy call (a stacked product is one
      BLAS product a point): the Python between the calls, which holds the GIL the other
      thread waits for, is paid once a chunk.
    - A block of samples keeps the arrays a chunk needs in the core's own cache (2 MiB).
    - The first layer's output at the chunk's points, [1 α]·[Z₀ + β·Z_{d₂}; Z_{d₁}], is a
      product with two terms: one pass writes it, row of ones included, where a multiply
      and an add took two.
    - Each element-wise layer works in place, in the buffer its input came in.
    - An affine layer's bias rides in its product, [W | b]·[a; 1]: its input's buffer holds
      a row of ones under the features (one pass less; the bias is the product's last term).
    - The last layer's outputs for every block go into one array, on which the loss of the
      chunk's points runs at once, each point's as `forward` gives it on the whole data
      (`Loss.values_features_first`)."""

    BLOCK = 224
    CHUNK = 4

    def __init__(self, grid: "_Grid"):
        self.grid = grid
        self.loss_fn = copy.copy(grid.backend.loss_fn)  # its own: a loss keeps its last forward for backward
        n, dt, k, rest = grid.z0.shape[1], grid.dt, self.CHUNK, grid.rest
        self.blocks = [(c, min(c + self.BLOCK, n)) for c in range(0, n, self.BLOCK)]
        self.feats = [grid.z0.shape[0]]
        for layer in rest:
            self.feats.append(layer.features_out(self.feats[-1]))
        # which buffer holds each layer's input (the last: the model's output); an
        # element-wise layer's output stays in its input's buffer
        self.slot = [0]
        for layer in rest:
            self.slot.append(self.slot[-1] if _in_place(layer) else self.slot[-1] + 1)
        self.ones = [False] * (self.slot[-1] + 1)      # the buffer has a row of ones under its features
        for at, layer in enumerate(rest):
            self.ones[self.slot[at]] |= _bias_name(layer) is not None
        self.buffers = [np.empty(k * (self.feats[self.slot.index(s)] + self.ones[s]) * self.BLOCK, dtype=dt)
                        for s in range(len(self.ones))]
        self.last = np.empty((k, self.feats[-1], n), dtype=dt)
        self.later = {name: np.empty((k,) + grid.params[name].shape) for name in grid.later}  # float64, cast as stored
        self.stacked = {}                              # affine layer -> its [W | b] at each point of the chunk
        for layer in rest:
            if getattr(layer, "affine", False):
                w = grid.params[layer.weight]
                self.stacked[layer] = np.empty((k, w.shape[0], w.shape[1] + (_bias_name(layer) is not None)), dtype=dt)
        # the first layer's products, block by block: [Z₀ + β·Z_{d₂}; Z_{d₁}] with its row of ones and of zeros
        f0, ones = self.feats[0], self.ones[0]
        self.first = []
        for c0, c1 in self.blocks:
            terms = np.zeros((2, f0 + ones, c1 - c0), dtype=dt)
            terms[1, :f0] = grid.z1[:, c0:c1]
            terms[0, f0:] = 1
            self.first.append(terms)
        self.z0, self.z2 = ([np.ascontiguousarray(z[:, c0:c1]) for c0, c1 in self.blocks] for z in (grid.z0, grid.z2))
        self.coefficients = np.ones((k, 2), dtype=dt)  # [1 α] a point

    def rows(self, rows, alphas, betas, out) -> None:
        g, dt = self.grid, self.grid.dt
        alphas = np.asarray(alphas, dtype=np.float64)
        f0 = self.feats[0]
        with np.errstate(all="ignore"):
            for i in rows:
                b = betas[i]
                for terms, z0, z2 in zip(self.first, self.z0, self.z2):
                    np.multiply(z2, dt.type(b), out=terms[0, :f0])
                    terms[0, :f0] += z0
                wb = {n: g.origin[n] + b * g.d2[n] for n in g.later}
                for j in range(0, len(alphas), self.CHUNK):
                    stop_if_asked(g.stop)
                    a = alphas[j:j + self.CHUNK]
                    self._weights(a, wb)
                    self.coefficients[:len(a), 1] = a
                    for terms, (c0, c1) in zip(self.first, self.blocks):
                        self._block(len(a), terms, c0, c1)
                    out[i, j:j + len(a)] = self.loss_fn.values_features_first(self.last[:len(a)], g.y)

    def _weights(self, a, wb) -> None:
        """Each later parameter at the chunk's points, W₀ + β·d₂ + α·d₁ in float64, and
        each affine layer's [W | b] from them in the scenario's dtype."""
        g, m = self.grid, len(a)
        for name, w in self.later.items():
            d1 = g.d1[name]
            np.multiply(a.reshape((m,) + (1,) * d1.ndim), d1, out=w[:m])
            w[:m] += wb[name]
        for layer, stacked in self.stacked.items():
            bias = _bias_name(layer)
            stacked[:m, :, :stacked.shape[2] - (bias is not None)] = self._value(layer.weight, m)
            if bias is not None:
                stacked[:m, :, -1] = self._value(bias, m)

    def _value(self, name, m):
        """A parameter at the chunk's points, or its stored value where it is not trained."""
        return self.later[name][:m] if name in self.later else self.grid.params[name]

    def _view(self, at, m, w) -> np.ndarray:
        """The buffer of layer `at`'s input for m points and w samples, (m, rows, w), its
        row of ones (where it has one) last."""
        s = self.slot[at]
        rows = self.feats[at] + self.ones[s]
        return self.buffers[s][:self.CHUNK * rows * w].reshape(self.CHUNK, rows, w)[:m]

    def _block(self, m, terms, c0, c1) -> None:
        rest, w, feats = self.grid.rest, c1 - c0, self.feats
        x = self._view(0, m, w)
        np.matmul(self.coefficients[:m], terms.reshape(2, -1), out=x.reshape(m, -1))
        for at, layer in enumerate(rest):
            if _in_place(layer):
                features = x[:, :feats[at]]
                layer.forward_features_first(self.grid.params, features, out=features)
                continue
            dest = self._view(at + 1, m, w)
            if self.ones[self.slot[at + 1]]:
                dest[:, -1] = 1
            dest = dest[:, :feats[at + 1]]
            stacked = self.stacked.get(layer)
            if stacked is not None:
                np.matmul(stacked[:m], x if _bias_name(layer) is not None else x[:, :feats[at]], out=dest)
            else:
                for p in range(m):
                    layer.forward_features_first(self._point(layer, p), x[p, :feats[at]], out=dest[p])
            x = self._view(at + 1, m, w)
        self.last[:m, :, c0:c1] = x[:, :feats[-1]]

    def _point(self, layer, p):
        """The parameters at the chunk's point p, each of this layer's in the scenario's dtype."""
        params = dict(self.grid.params)
        for name in layer.param_shapes:
            params[name] = np.asarray(self.later[name][p] if name in self.later else params[name], dtype=self.grid.dt)
        return params


def _in_place(layer) -> bool:
    """An element-wise layer with nothing to learn: the grid runs it in place."""
    return isinstance(layer, Activation) and not layer.param_shapes


def _bias_name(layer) -> str | None:
    """The name of an affine layer's bias (its product can carry it), else None."""
    if not getattr(layer, "affine", False) or not getattr(layer, "has_bias", False):
        return None
    return layer.bias


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

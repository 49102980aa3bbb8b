"""The engine's fast paths compute exactly what the plain formulas do, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from gdstep.nn.layers.relu import mask_in_place, masked


def mask_case(seed, shape, dtype):
    """A gradient and ReLU inputs with nan, ±inf and ±0.0 in both, at the start."""
    rng = np.random.default_rng(seed)
    grad = rng.standard_normal(shape).astype(dtype)
    x = rng.standard_normal(shape).astype(dtype)
    grad.flat[:8] = [np.nan, np.inf, -np.inf, -0.0, 0.0, np.nan, -np.inf, -0.0]
    x.flat[:8] = [-1.0, -2.0, 0.0, 1.0, -0.0, 3.0, 4.0, -5.0]
    x.flat[8:12] = [np.nan, np.inf, -np.inf, 0.0]
    return grad, x


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_relu_mask_equals_where_bit_for_bit(dtype):
    grad, x = mask_case(1, (64, 37), dtype)
    got = masked(grad, x > 0)
    want = np.where(x > 0, grad, 0.0)
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()
    assert np.signbit(got.flat[3]) and not np.signbit(got.flat[7])    # -0.0 kept where x > 0, +0.0 where not


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_the_in_place_mask_equals_where_bit_for_bit(dtype):
    grad, x = mask_case(2, (16, 9), dtype)
    want = np.where(x > 0, grad, 0.0).astype(dtype)
    got = mask_in_place(grad.copy(), x > 0)
    assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
    assert masked(grad, x > 0).tobytes() == want.tobytes()
    read_only = grad.copy()
    read_only.setflags(write=False)                  # not the caller's to overwrite: a new array
    out = mask_in_place(read_only, x > 0)
    assert out is not read_only and out.tobytes() == want.tobytes()


def test_relu_mask_non_contiguous_falls_back():
    grad = np.arange(12.0).reshape(3, 4).T
    keep = grad > 4
    assert masked(grad, keep).tobytes() == np.where(keep, grad, 0.0).tobytes()


def _session(dtype="float64"):
    import gdstep
    from gdstep.scenario import parse_scenario
    sc = parse_scenario(f"""
name = "speed"
seed = 4
[data]
kind = "blobs"
n = 40
classes = 3
features = 4
[model]
layers = [ {{ linear = 6 }}, "relu", {{ linear = 3 }} ]
dtype = "{dtype}"
[loss]
kind = "cross_entropy"
[optimizer]
kind = "adam"
lr = 0.05
[training]
batch_size = 8
shuffle = true
epochs = 1000
""")
    return gdstep.open(sc, dtype=dtype)


def test_a_run_keeps_grid_checkpoints_by_time_and_rewinds_exactly_from_sparse_ones():
    due = _session()
    due.checkpoint_seconds = 0
    due.run(max_steps=70)
    assert due._timeline.steps == [0, 16, 32, 48, 64]
    sparse = _session()
    sparse.checkpoint_seconds = 3600                  # no grid checkpoint is due within the run
    sparse.run(max_steps=70)
    assert sparse._timeline.steps == [0]
    stepped = _session()
    for _ in range(70 * 4):
        stepped.next_phase()
    for s in (due, sparse):                           # records materialised from step 0 or 64
        for phase in ("forward", "loss", "backward", "update"):
            a, b = s.record(phase), stepped.record(phase)
            assert type(a) is type(b)
        assert s.record("update").params.keys() == stepped.record("update").params.keys()
        for name, u in s.record("update").params.items():
            v = stepped.record("update").params[name]
            assert u.new.tobytes() == v.new.tobytes() and u.old.tobytes() == v.old.tobytes()
        assert all(s.params[k].tobytes() == stepped.params[k].tobytes() for k in stepped.params)
        s.back(iterations=30)                         # a rewind from a sparse grid is exact too
        stepped_back = _session()
        for _ in range(40 * 4):
            stepped_back.next_phase()
        assert all(s.params[k].tobytes() == stepped_back.params[k].tobytes() for k in stepped_back.params)
        assert list(s.history.losses) == list(stepped_back.history.losses)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_paired_finiteness_finds_every_non_finite_element(dtype):
    from gdstep.arrays import all_finite_paired
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(50).astype(dtype), np.abs(rng.standard_normal(50)).astype(dtype)
    b[7] = 0.0
    assert all_finite_paired([a, b])
    for bad in (np.nan, np.inf, -np.inf):
        for which, i in ((0, 7), (1, 7), (0, 3), (1, 3)):      # against a zero of the other and not
            x, y = a.copy(), b.copy()
            (x if which == 0 else y)[i] = bad
            with np.errstate(all="ignore"):
                assert not all_finite_paired([x, y]), (bad, which, i)
                assert not all_finite_paired([x, y, a]) and not all_finite_paired([a, a, x, y])
    big = np.full(50, np.finfo(dtype).max / 4, dtype=dtype)     # the dot overflows: the exact test says finite
    with np.errstate(all="ignore"):
        assert all_finite_paired([big, big]) and all_finite_paired([big, big, big])
    assert all_finite_paired([a, b[:10]]) and not all_finite_paired([a, np.array([np.nan], dtype=dtype)])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_loss_mean_equals_numpy_mean_bit_for_bit(dtype):
    from gdstep.nn.losses.base import mean
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 7, 64, 100, 129, 1000, 4097):
        a = (rng.standard_normal(n) * 10.0 ** rng.integers(-8, 8)).astype(dtype)
        assert np.float64(mean(a)).tobytes() == np.float64(float(a.mean())).tobytes(), n
    with np.errstate(all="ignore"):
        for bad in ([np.inf, 1.0], [np.nan, 2.0], [np.finfo(dtype).max] * 3):
            a = np.array(bad, dtype=dtype)
            assert np.float64(mean(a)).tobytes() == np.float64(float(a.mean())).tobytes()


@pytest.mark.parametrize("hold", ["record", "dict", "one array"])
def test_gradient_buffers_are_reused_only_when_nothing_holds_them(hold):
    s = _session()
    for _ in range(2):
        s.next_phase()
    rec = s.backward()
    held = {"record": rec, "dict": rec.grads, "one array": rec.grads["0.weight"]}[hold]
    want = {k: v.copy() for k, v in rec.grads.items()}
    del rec
    s.run(max_steps=6)                                   # runs reuse gradient buffers
    for _ in range(9):
        s.next_phase()
    got = {"record": lambda: held.grads, "dict": lambda: held, "one array": lambda: {"0.weight": held}}[hold]()
    for name, g in got.items():
        assert g.tobytes() == want[name].tobytes(), name
    ids = set()
    for _ in range(8):                                   # nothing held: two buffers in turn
        s.next_phase()
        ids.add(id(s.backend._flat_grad[1]))
    assert len(ids) <= 3


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_log_softmax_and_bias_sum_equal_the_numpy_methods_bit_for_bit(dtype):
    from gdstep.nn.layers.linear import Linear
    from gdstep.nn.losses.cross_entropy import CrossEntropy
    rng = np.random.default_rng(5)
    z = (rng.standard_normal((64, 10)) * 30).astype(dtype)
    z[3, 4], z[5] = np.nan, np.inf
    with np.errstate(all="ignore"):
        shifted = z - z.max(axis=1, keepdims=True)
        want = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        assert CrossEntropy.log_softmax(z).tobytes() == want.tobytes()
    layer = Linear(0, 5, 3)
    params = {"0.weight": rng.standard_normal((3, 5)).astype(dtype), "0.bias": np.zeros(3, dtype)}
    x, g = rng.standard_normal((64, 5)).astype(dtype), rng.standard_normal((64, 3)).astype(dtype)
    _, grads = layer.backward(params, x, None, g, frozenset(params))
    assert grads["0.bias"].tobytes() == g.sum(axis=0).tobytes()
    assert grads["0.weight"].tobytes() == (g.T @ x).tobytes()


def test_a_quick_run_coarsens_the_grid_evenly_so_rewinds_stay_short():
    s = _session()
    s.checkpoint_seconds = 10.0                       # every grid period counts as cheap
    s.run(max_steps=2500)
    steps, interval = s._timeline.steps, s._timeline.interval
    assert interval == 1024                           # coarsened up to the cap, no further
    assert steps == [0, 1024, 2048]                   # an even grid: no gap wider than it
    fast = _session()
    fast.checkpoint_seconds = 0.0                     # never cheap: the grid of 16 stays
    fast.run(max_steps=100)
    assert fast._timeline.interval == 16 and fast._timeline.steps == [0, 16, 32, 48, 64, 80, 96]

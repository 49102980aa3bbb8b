"""The landscape's fast grid (the first layer's output linear in the grid coordinates,
threads over points) against an MLP and cross-entropy written out by hand in numpy, at the
grid's own weights, in float64 and float32."""

from __future__ import annotations

import numpy as np
import pytest

import gdstep
from gdstep import landscape_grid
from gdstep.scenario import parse_scenario

MLP = '''
name = "small mlp"
seed = 1
[data]
kind = "blobs"
n = 96
classes = 4
features = 6
std = 2.0
[model]
layers = [ { linear = 12 }, "tanh", { linear = 9 }, "relu", { linear = 4 } ]
dtype = "{dtype}"
[loss]
kind = "cross_entropy"
[optimizer]
kind = "adam"
lr = 0.01
[training]
batch_size = 16
'''


def loss_by_hand(x, y, w, dtype):
    """tanh → relu MLP and mean cross-entropy, in that dtype."""
    p = {k: v.astype(dtype) for k, v in w.items()}
    h = np.tanh(x @ p["0.weight"].T + p["0.bias"])
    h = np.maximum(h @ p["2.weight"].T + p["2.bias"], 0)
    z = (h @ p["4.weight"].T + p["4.bias"]).astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(y)), y].mean())


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 2e-5)])
@pytest.mark.parametrize("directions", ["random", "pca", "gradient"])
def test_grid_values_equal_the_loss_by_hand_at_those_weights(dtype, rtol, directions):
    s = gdstep.open(parse_scenario(MLP.replace("{dtype}", dtype)))
    s.step(12)
    land = s.landscape(directions, resolution=(9, 7))
    x, y = s.backend.x, s.backend.y
    for i, j in [(0, 0), (3, 4), (6, 8), (2, 7), (5, 1)]:
        w = land.weights_at(land.alphas[j], land.betas[i])
        assert land.loss[i, j] == pytest.approx(loss_by_hand(x, y, w, np.dtype(dtype)), rel=rtol)


def test_threads_and_one_thread_agree_bit_for_bit_and_the_pointwise_path_agrees():
    s = gdstep.open(parse_scenario(MLP.replace("{dtype}", "float64")))
    s.step(5)
    land = s.landscape("random", resolution=(6, 5))
    args = (s.backend, s.backend.x, s.backend.y, land.origin, land.d1, land.d2, land.alphas, land.betas)
    one = landscape_grid.grid_losses(*args, threads=1)
    np.testing.assert_array_equal(landscape_grid.grid_losses(*args, threads=3), one)
    np.testing.assert_allclose(landscape_grid._pointwise(*args), one, rtol=1e-12)


def test_blas_thread_count_is_put_back():
    hooks = landscape_grid._blas_threads()
    if hooks is None:
        pytest.skip("this numpy's BLAS cannot be told its thread count")
    before = hooks[1]()
    with landscape_grid._one_blas_thread():
        assert hooks[1]() == 1
    assert hooks[1]() == before


@pytest.mark.parametrize("kind", sorted(__import__("gdstep.nn.layers", fromlist=["LAYERS"]).LAYERS))
def test_every_layer_kinds_features_first_forward_is_its_forward_transposed(kind):
    """The grid runs layers features first; each kind must give its own forward's values
    (a product summed in another order may differ in the last place, nothing more)."""
    from gdstep.nn.layers import LAYERS

    cls = LAYERS[kind]
    layer = cls.build(0, 5, **cls.options() if not cls.inferred else {**cls.options(out_features=3)})
    rng = np.random.default_rng(0)
    params = layer.initial_params("normal", rng, 1.0)
    x = rng.standard_normal((7, 5)) * 2
    want = layer.forward(params, x)
    got = layer.forward_features_first(params, np.ascontiguousarray(x.T))
    assert got.shape == want.T.shape
    np.testing.assert_allclose(got.T, want, rtol=1e-13, atol=1e-15)
    into = np.full(want.T.shape, np.nan)
    assert layer.forward_features_first(params, np.ascontiguousarray(x.T), out=into) is into
    np.testing.assert_array_equal(into, got)


@pytest.mark.parametrize("block", [40, 7])
def test_blocks_of_samples_with_a_short_last_block_and_a_layer_without_bias(monkeypatch, block):
    """The grid runs the data a block of samples at a time; a last block shorter than the
    others and a linear layer with no bias (no row of ones under its input) give the same
    values as the loss by hand."""
    s = gdstep.open(parse_scenario(MLP.replace("{dtype}", "float64")
                                   .replace("{ linear = 9 }", "{ linear = 9, bias = false }")))
    s.step(6)
    land = s.landscape("random", resolution=(5, 4))
    monkeypatch.setattr(landscape_grid._Plan, "BLOCK", block)
    args = (s.backend, s.backend.x, s.backend.y, land.origin, land.d1, land.d2, land.alphas, land.betas)
    got = landscape_grid.grid_losses(*args, threads=2)
    x, y = s.backend.x, s.backend.y
    for i, j in [(0, 0), (3, 2), (1, 4)]:
        w = land.weights_at(land.alphas[j], land.betas[i])
        w.setdefault("2.bias", np.zeros(9))
        assert got[i, j] == pytest.approx(loss_by_hand(x, y, w, np.dtype("float64")), rel=1e-12)
    np.testing.assert_allclose(got, land.loss, rtol=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_landscape_asked_to_stop_is_given_up_and_changes_nothing(monkeypatch, threads):
    from gdstep.errors import Abandoned

    s = gdstep.open(parse_scenario(MLP.replace("{dtype}", "float32")))
    s.step(8)
    before = {n: v.copy() for n, v in s.params.items()}
    monkeypatch.setattr(landscape_grid.os, "cpu_count", lambda: threads)
    counted = []
    want = s.landscape("pca", resolution=(12, 10), stop=lambda: counted.append(1) is not None)
    pieces = (12 + landscape_grid._Plan.CHUNK - 1) // landscape_grid._Plan.CHUNK * 10   # the grid asks once a chunk
    cut = len(counted) - pieces // 2                    # half-way through the grid
    asked = []
    with pytest.raises(Abandoned):
        s.landscape("pca", resolution=(12, 10), stop=lambda: asked.append(1) or len(asked) > cut)
    assert len(asked) == cut + 1                        # given up at the next chunk: nobody asked again
    assert all(np.array_equal(before[n], v) for n, v in s.params.items()) and s.step_count == 8
    np.testing.assert_array_equal(s.landscape("pca", resolution=(12, 10), stop=lambda: False).loss, want.loss)


def test_once_one_grid_thread_gives_up_the_others_do_even_if_stop_no_longer_says_so(monkeypatch):
    """stop() true once (a job arrived, then the queue was emptied by a pause): every
    thread ends at its next point, none computes the rest of its rows."""
    from gdstep.errors import Abandoned

    s = gdstep.open(parse_scenario(MLP.replace("{dtype}", "float32")))
    s.step(8)
    asked = []
    monkeypatch.setattr(landscape_grid.os, "cpu_count", lambda: 2)
    with pytest.raises(Abandoned):
        s.landscape("random", resolution=(20, 20), stop=lambda: asked.append(1) or len(asked) == 30)
    assert len(asked) <= 32                 # after the one True, nobody asks the caller again


ODD = '''
name = "odd layers"
seed = 3
[data]
kind = "blobs"
n = 50
classes = 4
features = 5
std = 2.0
[model]
layers = {layers}
frozen = {frozen}
dtype = "float64"
[loss]
kind = "cross_entropy"
[optimizer]
kind = "sgd"
lr = 0.1
[training]
batch_size = 10
'''


@pytest.mark.parametrize("layers,frozen", [
    ('[ { linear = 4 } ]', '[]'),                                                   # the first layer alone
    ('[ { linear = 7 }, "sigmoid", { linear = 6, bias = false }, "log_softmax", "relu", { linear = 4 } ]', '[]'),
    ('[ { linear = 7 }, "leaky_relu", { linear = 6 }, "tanh", { linear = 4 } ]', '["2.weight", "4.bias"]'),
])
@pytest.mark.parametrize("chunk,block", [(1, 448), (3, 7), (4, 50)])
def test_chunks_of_points_give_each_points_own_loss(monkeypatch, layers, frozen, chunk, block):
    """The grid runs a few points at once through each layer (element-wise ones in place, a
    layer that mixes features and is not affine a point at a time, a frozen parameter as
    it is stored); every point's loss is still the backend's own loss at its weights, with
    chunks and blocks that do not divide the grid and the data."""
    s = gdstep.open(parse_scenario(ODD.replace("{layers}", layers).replace("{frozen}", frozen)))
    s.step(4)
    land = s.landscape("random", resolution=(5, 4))
    monkeypatch.setattr(landscape_grid._Plan, "CHUNK", chunk)
    monkeypatch.setattr(landscape_grid._Plan, "BLOCK", block)
    args = (s.backend, s.backend.x, s.backend.y, land.origin, land.d1, land.d2, land.alphas, land.betas)
    got = landscape_grid.grid_losses(*args, threads=2)
    np.testing.assert_allclose(got, landscape_grid._pointwise(*args), rtol=1e-12)


@pytest.mark.parametrize("kind", sorted(__import__("gdstep.nn.losses", fromlist=["LOSSES"]).LOSSES))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_loss_of_several_outputs_features_first_is_its_forward_bit_for_bit(kind, dtype):
    """The grid's loss of a chunk of points at once gives each point exactly forward's loss
    on that point's outputs, laid out as the grid has them (ten classes: numpy sums ten
    contiguous numbers in another order than ten strided ones)."""
    from gdstep.nn.losses import LOSSES

    loss = LOSSES[kind]()
    rng = np.random.default_rng(1)
    classes, n = 10, 301
    outputs = (rng.standard_normal((3, classes, n)) * 3).astype(dtype)
    if kind in ("bce",):
        outputs = 1 / (1 + np.exp(-outputs[:, :1]))
    target = loss.targets(rng.integers(0, outputs.shape[1] if loss.class_targets else 2, n), outputs.shape[1])
    if kind == "nll":
        outputs = outputs - np.log(np.exp(outputs).sum(axis=1, keepdims=True))
    want = [loss.forward(o.T, target)[1] for o in outputs]
    got = loss.values_features_first(outputs, target)
    assert [float(v) for v in got] == want

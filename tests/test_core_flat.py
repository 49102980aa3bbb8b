"""The fast paths behind the records: the numpy backend's flat update and the finiteness test
over views of one buffer. Each is checked against the plain computation it replaces."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import gdstep
from gdstep import arrays
from gdstep.optim import make_optimizer

CONFIGS = [("sgd", {}), ("sgd", dict(momentum=0.9, nesterov=True, weight_decay=0.01)),
           ("sgd", dict(momentum=0.9, dampening=0.3)), ("adam", {}), ("adam", dict(amsgrad=True, weight_decay=0.1)),
           ("adamw", {}), ("rmsprop", dict(centered=True, momentum=0.5, weight_decay=0.01)),
           ("adagrad", dict(lr_decay=0.01, initial_accumulator_value=0.1))]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind,args", CONFIGS)
def test_the_flat_update_equals_one_update_per_parameter_to_the_bit(kind, args, dtype):
    s = gdstep.open("spiral", dtype=dtype)
    s.set(optimizer=make_optimizer(kind, lr=0.05, **args))
    s.step(3)
    s.forward(), s.loss(), s.backward()
    opt = s.backend.optimizer
    expected = {}
    for name, state in s.optimizer_state.items():
        expected[name] = opt.update(s.params[name], s.grads[name], state)
    rec = s.update()
    for name, (new, after) in expected.items():
        u = rec.params[name]
        assert u.new.dtype == new.dtype and u.new.shape == new.shape
        np.testing.assert_array_equal(u.new, new)
        assert set(u.state_after) == set(after)
        for key, value in after.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(u.state_after[key], value)
                assert u.state_after[key].shape == value.shape
            else:
                assert u.state_after[key] == value


def test_flat_records_are_read_only_and_frozen_parameters_stay_apart():
    s = gdstep.open("spiral")
    sc = dataclasses.replace(s.scenario, model=dataclasses.replace(s.scenario.model, frozen=("0.bias",)))
    s = gdstep.Session(sc, type(s.backend)(sc))
    start = s.params["0.bias"]
    s.step(2)
    rec = s.record("update")
    assert "0.bias" not in rec.params
    np.testing.assert_array_equal(s.params["0.bias"], start)
    for u in rec.params.values():
        for a in (u.old, u.new, *(v for v in u.state_after.values() if isinstance(v, np.ndarray))):
            assert not a.flags.writeable


def test_all_finite_over_views_of_one_buffer():
    flat = np.arange(10.0)
    views = [flat[:4].reshape(2, 2), flat[4:]]
    assert arrays.all_finite(views)
    flat[7] = np.nan
    assert not arrays.all_finite(views)
    assert arrays.all_finite([views[0]])          # the bad element lies outside this view
    flat[7] = 1.0
    flat[9] = np.inf
    assert not arrays.all_finite([flat[:4], flat[4:8], flat[8:]])
    assert arrays.all_finite([flat[:4], flat[4:8], flat[:4], flat[4:8]])   # as large as the buffer, not covering it
    assert arrays.all_finite([flat[:4], flat[4:8]])
    big = np.full(4096, 1e308)                    # the sum overflows, every element is finite
    with np.errstate(over="ignore"):
        assert arrays.all_finite([big[:2048], big[2048:]])


def test_all_finite_over_torch_views_of_one_buffer():
    torch = pytest.importorskip("torch")
    flat = torch.arange(10.0)
    views = [flat[:4].view(2, 2), flat[4:]]
    assert arrays.all_finite(views)
    flat[7] = math.nan
    assert not arrays.all_finite(views)
    assert arrays.all_finite([views[0], flat[:4], flat[:2]])
    flat[7] = 1.0
    flat[9] = math.inf
    assert not arrays.all_finite([flat[:4], flat[4:8], flat[8:], torch.ones(3)])
    assert arrays.all_finite([flat[:4], flat[4:8], flat[:4], flat[4:8]])
    assert arrays.all_finite([flat[:4], flat[4:8]])
    big = torch.full((4096,), 3e38)
    assert arrays.all_finite([big[:2048], big[2048:], torch.ones(2, dtype=torch.float64)])

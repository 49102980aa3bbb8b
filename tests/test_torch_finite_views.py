"""A torch run's update test on the CPU, read through numpy views of the tensors it changed
(`arrays.paired_views`, `LeanPhases._finite_on_cpu`): it says what the exact test says, element by
element, and never trusts a view of memory a tensor no longer has."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gdstep
from gdstep.arrays import paired_views
from gdstep.backends.torch_finite import exactly_finite
from gdstep.scenario import parse_scenario

SCENARIO = """
name = "finite views"
seed = 3
[data]
kind = "blobs"
n = 64
classes = 3
features = 5
[model]
layers = [ { linear = 7 }, "relu", { linear = 3 } ]
[loss]
kind = "cross_entropy"
[optimizer]
kind = "adam"
lr = 0.01
[training]
batch_size = 16
"""


def adam_run(steps: int = 3):
    """A small torch run (under BOUNDS_FROM: every update read) and its update's tensors."""
    s = gdstep.open(parse_scenario(SCENARIO), backend="torch", dtype="float32")
    s.run(max_steps=steps)
    b = s.backend
    grads = {name: p.grad for name, p in b._train}
    return s, b, b._updated_tensors(grads)


def test_views_share_the_tensors_memory_in_pairs_of_one_size():
    a, b, c = torch.zeros(3, 4), torch.ones(12), torch.zeros(5, dtype=torch.float64)
    views = paired_views([a, c, b])
    assert [(v.size, v.dtype) for v in views] == [(12, np.float32)] * 2 + [(5, np.float64)] * 2
    assert views[2] is views[3]                       # alone in its size: paired with itself
    a[1, 2] = 7.0
    assert views[0][6] == 7.0                         # a view, not a copy


@pytest.mark.parametrize("tensor", [torch.zeros(4, 4).t(), torch.zeros(4, dtype=torch.bfloat16),
                                    torch.zeros(4, dtype=torch.int64)])
def test_no_views_where_numpy_cannot_see_the_memory_as_it_is(tensor):
    # a strided tensor's flat view would be a copy, stale after the next update
    assert paired_views([torch.zeros(4), tensor]) is None


def test_the_update_test_through_views_says_what_the_exact_test_says():
    _, b, tensors = adam_run()
    assert b._finite_on_cpu(tensors) is True
    rng = np.random.default_rng(0)
    for bad in (math.nan, math.inf, -math.inf):
        for t in tensors:
            flat = t.detach().view(-1)
            i = int(rng.integers(flat.numel()))
            keep = flat[i].item()
            flat[i] = bad
            assert b._finite_on_cpu(tensors) is False == exactly_finite(torch, tensors)
            flat[i] = keep
            assert b._finite_on_cpu(tensors) is True


def test_finite_values_whose_products_overflow_are_finite():
    _, b, tensors = adam_run()
    with torch.no_grad():
        tensors[0].fill_(1e30)                        # Σ a·b overflows float32: the exact test decides
    assert b._finite_on_cpu(tensors) is True


def test_a_tensor_given_new_memory_is_viewed_afresh():
    _, b, tensors = adam_run()
    assert b._finite_on_cpu(tensors) is True
    p = tensors[0]
    p.data = torch.full_like(p, math.nan)            # new memory: the old view would still say finite
    assert b._finite_on_cpu(tensors) is False


def test_a_run_whose_update_overflows_pauses_before_it():
    s = gdstep.open(parse_scenario(SCENARIO.replace('kind = "adam"\nlr = 0.01', 'kind = "sgd"\nlr = 3e38')),
                    backend="torch", dtype="float32")
    result = s.run(max_steps=50)
    assert result.reason == "nonfinite" and result.nonfinite.phase == "update"
    assert all(torch.isfinite(p).all() for p in s.backend.params().values())   # the state from before it


def test_a_users_own_tensors_are_never_viewed_their_storage_stays_resizable():
    """A numpy view marks a storage not resizable, for good: an attached loop's parameters and
    optimizer state (the user's, which FSDP-style code frees and re-allocates) never get one."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    dbg = gdstep.attach(model, opt, torch.nn.MSELoss(), on_break="raise")
    for _ in range(15):
        dbg.step(torch.randn(8, 3), torch.randn(8, 1))
    assert not dbg.backend.owns_tensors
    dbg.close()
    p = model[0].weight
    for t in (p, opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]):
        storage = t.untyped_storage()
        n = storage.nbytes()
        storage.resize_(0)                            # raises where a view was ever taken
        storage.resize_(n)


def test_a_scenario_run_views_its_own_tensors():
    _, b, tensors = adam_run(15)                      # past the run's first ten (measured) updates
    assert b.owns_tensors and b._cpu_views[0] is tensors and b._cpu_views[2] is not None

"""Each gdstep optimizer names its torch twin: the torch backend builds that class, and a torch
optimizer of any spelling gdstep knows (AdamW, or Adam with decoupled_weight_decay) maps back
to the same config; anything else stays opaque."""

from __future__ import annotations

import inspect

import pytest
import torch

from gdstep.backends.torch_optim import build, config_of, is_opaque, same_kind, torch_classes
from gdstep.optim import OPTIMIZERS, hyperparameters, make_optimizer
from optim_cases import ALL_ON, CASES, TORCH, case_id


def params():
    return [torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))]


def test_every_optimizer_builds_its_torch_class():
    assert set(OPTIMIZERS) == set(TORCH)
    assert {kind: cls.__name__ for kind, cls in torch_classes().items()} == TORCH
    for kind, args in ALL_ON.items():
        opt = build(make_optimizer(kind, **args), params())
        assert type(opt) is getattr(torch.optim, TORCH[kind])
        for key, value in hyperparameters(make_optimizer(kind, **args)).items():
            assert opt.param_groups[0][key] == value, (kind, key)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_a_torch_optimizer_maps_back_to_its_config(case):
    kind, args = case
    opt = getattr(torch.optim, TORCH[kind])(params(), **args)
    config = config_of(opt)
    assert config == make_optimizer(kind, **args)
    assert same_kind(config, opt)
    assert config_of(build(config, params())) == config


needs_decoupled_adam = pytest.mark.skipif("decoupled_weight_decay" not in inspect.signature(torch.optim.Adam).parameters,
                                          reason="torch.optim.Adam has no decoupled_weight_decay before torch 2.7")


@needs_decoupled_adam
def test_adam_with_decoupled_weight_decay_is_adamw():
    opt = torch.optim.Adam(params(), lr=0.01, weight_decay=0.2, decoupled_weight_decay=True)
    assert config_of(opt) == make_optimizer("adamw", lr=0.01, weight_decay=0.2)
    assert same_kind(make_optimizer("adamw"), opt)
    assert not same_kind(make_optimizer("adam"), opt)
    assert config_of(torch.optim.Adam(params(), weight_decay=0.2)) == make_optimizer("adam", weight_decay=0.2)


def test_same_kind_tells_adam_from_adamw():
    adam, adamw = torch.optim.Adam(params()), torch.optim.AdamW(params())
    assert same_kind(make_optimizer("adam"), adam) and not same_kind(make_optimizer("adam"), adamw)
    assert same_kind(make_optimizer("adamw"), adamw) and not same_kind(make_optimizer("adamw"), adam)
    assert not same_kind(make_optimizer("sgd"), adam)


def test_what_gdstep_has_no_formula_for_stays_opaque():
    assert is_opaque(config_of(torch.optim.SGD(params(), lr=0.1, maximize=True)))
    assert is_opaque(config_of(torch.optim.Adamax(params(), lr=0.1)))
    two_groups = torch.optim.SGD([{"params": params()[:1], "lr": 0.1}, {"params": params()[1:], "lr": 0.2}])
    assert is_opaque(config_of(two_groups))

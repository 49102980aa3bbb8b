"""Several param groups: each group's hyperparameters are there to read, `set lr V group=N`
changes one group (a torch param_groups edit, state kept), and a plain `set lr V` never
changes groups nobody meant: refused where the groups' lrs differ."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import gdstep
from attach_loop import attached_iteration
from gdstep.errors import GdstepError, ScriptError
from gdstep.script.parser import parse_script
from gdstep.script.runner import Runner


def build(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = torch.optim.SGD([{"params": model[0].parameters(), "lr": 0.1, "momentum": 0.9},
                           {"params": model[2].parameters(), "lr": 0.01, "momentum": 0.5}], lr=0.05)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(6)]
    return model, opt, batches


def test_set_lr_of_one_group_matches_a_param_groups_edit_in_a_bare_loop():
    model, opt, batches = build()
    loss_fn = nn.CrossEntropyLoss()
    for i, (x, y) in enumerate(batches):
        if i == 4:
            opt.param_groups[1]["lr"] = 0.5            # from the 5th iteration on, group 1 only
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    expected = copy.deepcopy((model.state_dict(), opt.state_dict()))

    model, opt, batches = build()
    seen = {}

    def look(session, message):
        if session.step_count == 3:            # after the 4th forward: from the next iteration on
            groups = session.backend.group_hyperparameters()
            seen["groups"] = [(g["lr"], g["momentum"], g["params"]) for g in groups]
            session.set(lr=0.5, group=1)
            return
        e = session.explain("2.weight", (0, 0))            # group 1's lr and momentum in the formula
        u = session.record("update").params["2.weight"]
        seen["explain"] = (e.optimizer, e.note, e.terms[1].numbers.startswith("0.5 ×"),      # μ of group 1
                           "− 0.5 ×" in e.terms[-1].numbers, e.w_new == u.new[0, 0].item())   # η of group 1

    dbg = gdstep.attach(model, opt, loss_fn, ["step == 3 and phase == 'forward'", "step == 5"], on_break=look)
    for x, y in batches:
        dbg.step(x, y)
    assert seen["explain"] == ("sgd", None, True, True, True)
    assert seen["groups"] == [(0.1, 0.9, ("0.weight", "0.bias")), (0.01, 0.5, ("2.weight", "2.bias"))]
    for a, b in zip((model.state_dict(), opt.state_dict()), expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    assert dbg.session.backend.config_for("2.weight").lr == 0.5
    assert dbg.session.backend.config_for("0.weight").momentum == 0.9
    assert dbg.session.replay_inexact is None


def test_plain_set_lr_is_refused_where_groups_differ_and_group_all_sets_each():
    model, opt, batches = build()
    outcome = []

    def look(session, message):
        with pytest.raises(GdstepError, match="param groups differ .* group=N"):
            session.set(lr=0.2)
        with pytest.raises(GdstepError, match="no param group 2"):
            session.set(lr=0.2, group=2)
        session.set(lr=0.2, group="all")
        outcome.append(True)

    dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss(), ["step == 2"], on_break=look)
    for x, y in batches:
        dbg.step(x, y)
    assert outcome == [True]
    assert [(g["lr"], g["momentum"]) for g in opt.param_groups] == [(0.2, 0.9), (0.2, 0.5)]   # momentum kept per group


def test_the_script_language_takes_group():
    commands = parse_script("set lr 0.1 group=1\nset momentum 0.5 group=0\nset lr 0.2 group=all\nset lr 0.3\n")
    assert [c.args for c in commands] == [("lr", 0.1, 1), ("hyperparameter", "momentum", 0.5, 0),
                                          ("lr", 0.2, "all"), ("lr", 0.3)]
    with pytest.raises(ScriptError, match="param group must be a whole number"):
        parse_script("set lr 0.1 group=x\n")
    with pytest.raises(ScriptError, match="takes no group"):
        parse_script("set batch_size 8 group=1\n")


def test_a_script_sets_one_group_in_a_python_scenario(tmp_path):
    path = tmp_path / "groups.py"
    path.write_text(
        "import torch\nfrom torch import nn\n"
        "torch.manual_seed(0)\n"
        "model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))\n"
        "optimizer = torch.optim.SGD([{'params': model[0].parameters()}, {'params': model[2].parameters(), 'lr': 0.01}], lr=0.1)\n"
        "loss_fn = nn.MSELoss()\n"
        "data = (torch.randn(16, 3), torch.randn(16, 1))\n", encoding="utf-8")
    s = gdstep.open(path)
    runner = Runner(s)
    for command in parse_script("set lr 0.5 group=1\nstep 2\n"):
        runner.execute(command)
    assert [g["lr"] for g in s.backend.torch_optimizer.param_groups] == [0.1, 0.5]
    with pytest.raises(GdstepError, match="param groups differ"):
        s.set(lr=0.3)


@pytest.mark.parametrize("mode", ["step", "watch"])
def test_an_lr_tensor_the_loop_changes_in_place_is_seen_and_replayed(mode):
    """torch allows a tensor lr; a loop may change it in place (`lr.fill_`), which leaves the
    group's dict holding the very same object. gdstep still sees the change (the groups are
    read by value where one holds a tensor) and logs it, so a rewind replays it: the
    parameters after a rewind to the start and back equal the loop's, bit for bit."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))
    lr = torch.tensor(0.05)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss(), breakpoints=["nan"], on_break="raise")
    g = torch.Generator().manual_seed(1)
    for i in range(6):
        x, y = torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)
        opt.param_groups[0]["lr"].fill_(0.05 / (i + 1))
        attached_iteration(mode, dbg, model, opt, nn.functional.cross_entropy, x, y)
    s = dbg.session
    assert s.record("update").lr == pytest.approx(0.05 / 6)
    live = [p.detach().clone() for p in model.parameters()]
    if mode == "step":               # step mode's rewinds move the model: back to the start and forward again
        at = s.position
        s.seek(0)
        s.seek(at)
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), live))
    assert s.replay_inexact is None

"""A model, loss module and optimizer with gdstep attached copy and save as without it:
`copy.deepcopy(model)` (a best-model or EMA copy) and `torch.save(model)` (pytorch/examples'
super_resolution saves the whole module each epoch) failed with "cannot pickle 'module'
object" / "Can't pickle local object". A copy holds inert hooks: it trains as a bare model
would, and gdstep sees nothing of it."""

from __future__ import annotations

import copy
import io
import pickle
import subprocess
import sys

import pytest
import torch
from torch import nn

import gdstep
from attach_loop import attached_iteration


def make():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    return model, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def train(model, opt, batches) -> None:
    for x, y in batches:
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def batches(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)) for _ in range(n)]


@pytest.mark.parametrize("mode", ["step", "watch"])
@pytest.mark.parametrize("how", ["deepcopy", "torch.save"])
def test_a_copy_of_an_attached_model_trains_as_a_bare_one_and_gdstep_sees_nothing_of_it(mode, how):
    model, opt = make()
    loss_fn = nn.MSELoss()
    dbg = gdstep.attach(model, opt, loss_fn)
    for x, y in batches(3, 1):
        attached_iteration(mode, dbg, model, opt, loss_fn, x, y)
    if how == "deepcopy":
        twin = copy.deepcopy(model)
        copy.deepcopy(loss_fn)                          # the loss module, hooked too
    else:
        buffer = io.BytesIO()
        torch.save(model, buffer)
        torch.save(opt, io.BytesIO())                  # the optimizer, hooked too
        buffer.seek(0)
        twin = torch.load(buffer, weights_only=False)
    reference = copy.deepcopy(dict(model.state_dict()))
    steps = dbg.session.step_count
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9)
    train(twin, twin_opt, batches(4, 2))
    assert dbg.session.step_count == steps             # gdstep saw nothing of the copy
    bare = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 1))
    bare.load_state_dict(reference)
    train(bare, torch.optim.SGD(bare.parameters(), lr=0.05, momentum=0.9), batches(4, 2))
    assert all(torch.equal(p, q) for p, q in zip(twin.parameters(), bare.parameters()))
    dbg.close()


def test_a_whole_module_saved_while_attached_loads_where_gdstep_is_not_installed(tmp_path):
    model, opt = make()
    dbg = gdstep.attach(model, opt, nn.MSELoss())
    dbg.step(*batches(1, 1)[0])
    torch.save(model, tmp_path / "model.pth")
    dbg.close()
    code = ("import sys; sys.modules['gdstep'] = None\n"      # import gdstep would fail
            "import torch\n"
            f"m = torch.load({str(tmp_path / 'model.pth')!r}, weights_only=False)\n"
            "print(m(torch.ones(2, 4)).shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "torch.Size([2, 1])" in out.stdout


def test_saving_a_whole_module_while_attached_says_once_how_it_loads(capsys, monkeypatch):
    """torch.save(model) while attached: one stderr line says the file loads only with
    weights_only=False — true: torch's default refuses it even with the model's classes
    allowed (pytorch/examples' word_language_model loads so) — and that a state_dict has no
    hooks, which loads with the default."""
    from gdstep.backends import detachable
    monkeypatch.setattr(detachable, "_said_pickled", False)
    model, opt = make()
    dbg = gdstep.attach(model, opt, nn.MSELoss())
    dbg.step(*batches(1, 1)[0])
    whole, weights = io.BytesIO(), io.BytesIO()
    torch.save(model, whole)
    torch.save(model, io.BytesIO())
    torch.save(model.state_dict(), weights)
    err = capsys.readouterr().err
    assert err.count("weights_only=False") == 1 and "state_dict()" in err
    whole.seek(0)
    with torch.serialization.safe_globals([nn.Sequential, nn.Linear, nn.ReLU]):
        with pytest.raises(pickle.UnpicklingError):
            torch.load(whole)
    weights.seek(0)
    assert set(torch.load(weights)) == set(model.state_dict())
    dbg.close()

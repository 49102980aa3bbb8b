"""Python scenarios written as practitioners write them: a model returning a tuple (the whole
output goes to loss_fn), a scheduler gdstep steps after every update and replays exactly on
rewind, and a `before_update` that clips — each against the same loop in bare PyTorch."""

from __future__ import annotations

import copy
import textwrap

import torch
import torch.nn.functional as F

import gdstep
from gdstep.cli import main

VAE = """
import torch
import torch.nn.functional as F
from torch import nn

seed = 0
torch.manual_seed(0)

class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc, self.mu, self.logvar = nn.Linear(6, 8), nn.Linear(8, 2), nn.Linear(8, 2)
        self.dec = nn.Linear(2, 6)

    def forward(self, x):
        h = torch.relu(self.enc(x))
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(logvar) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.dec(z)), mu, logvar

def loss_fn(out, x):
    recon, mu, logvar = out
    return F.binary_cross_entropy(recon, x, reduction="sum") - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())

model = VAE()
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
before_update = lambda: nn.utils.clip_grad_norm_(model.parameters(), 1.0)
g = torch.Generator().manual_seed(1)
x = torch.rand(32, 6, generator=g)
data = (x, x)
batch_size = 8
shuffle = False
"""


def bare(module, steps: int):
    """The scenario's own objects stepped by a plain loop (the same RNG seed as gdstep's)."""
    model, opt, sched = module.model, module.optimizer, module.scheduler
    x = module.data[0]
    for i in range(steps):
        batch = x[(i * 8) % 32:(i * 8) % 32 + 8]
        opt.zero_grad()
        module.loss_fn(model(batch), batch).backward()
        module.before_update()
        opt.step()
        sched.step()
    return copy.deepcopy((model.state_dict(), opt.state_dict(), sched.state_dict()))


def state(s):
    b = s.backend
    return copy.deepcopy((b.model.state_dict(), b.torch_optimizer.state_dict(), b.scheduler.state_dict()))


def same(a, b):
    torch.testing.assert_close(a[:2], b[:2], rtol=0, atol=0)
    assert a[2] == b[2]


def test_a_tuple_output_scheduler_and_clipping_scenario_matches_torch_and_rewinds_exactly(tmp_path):
    path = tmp_path / "vae.py"
    path.write_text(textwrap.dedent(VAE), encoding="utf-8")
    s = gdstep.open(path)
    s.step(6)
    first = state(s)
    assert s.backend.scheduler_name == "StepLR"
    assert [n for n, _ in s.backend.named_outputs] == ["output[0]", "output[1]", "output[2]"]
    assert s.backend.lr_history[4] == (0.0025,)
    s.back(iterations=4)
    assert s.lr == 0.005 and s.backend.scheduler.last_epoch == 2
    s.step(4)
    same(state(s), first)
    assert s.replay_inexact is None

    fresh = gdstep.open(path)     # the same file, stepped by a bare loop
    torch.set_rng_state(fresh._timeline.at_or_before(0).backend.rng[0])    # where gdstep's run starts
    same(bare(fresh.scenario.module, 6), first)


def test_check_accepts_a_model_that_returns_a_tuple(tmp_path, capsys):
    path = tmp_path / "vae.py"
    path.write_text(textwrap.dedent(VAE), encoding="utf-8")
    assert main(["check", str(path)]) == 0
    s = gdstep.open(path)
    rec = s.forward()
    loss = s.loss()
    out = s.backend.output
    expected = F.binary_cross_entropy(out[0], rec.inputs, reduction="sum") - 0.5 * torch.sum(
        1 + out[2] - out[1].pow(2) - out[2].exp())
    assert loss.value == expected.item()

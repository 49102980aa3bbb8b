"""What the app shows of a loop as people write it: the lr in force for the shown iteration
and the scheduler that sets it, each param group's lr and hyperparameters, each tensor of a
model that returns several, and a flag when a replay is not exact. Each value is computed
here independently (the scheduler's formula, the model run by hand)."""

from __future__ import annotations

import asyncio
import copy
import re
import threading

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gdstep
from conftest import SIZE, log_kinds, log_text, press, select, settle
from gdstep.tui.app import make_app
from gdstep.tui.arithmetic_view import ArithmeticView
from gdstep.tui.batch_view import BatchView
from gdstep.tui.event_log import EventLog
from gdstep.tui.model_tree import ModelTree
from gdstep.tui.phase_bar import PhaseBar


def drive(session, script, size=SIZE):
    async def go():
        app = make_app(session, timestamps=False)
        async with app.run_test(size=size) as pilot:
            await settle(pilot)
            await script(pilot, app)
    asyncio.run(go())


def bar(app) -> str:
    return app.query_one(PhaseBar).render().plain


def arithmetic(app) -> str:
    view = app.query_one(ArithmeticView)
    a = view.arithmetic
    return "\n".join((*a.lines, *a.state))


def mlp(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 4))
    x, y = torch.randn(6, 3), torch.randint(0, 4, (6,))
    return model, x, y


def run_in(where: str, fn) -> None:
    """`fn()` on this thread ("loop thread") or on another, as the app's worker runs it."""
    if where == "worker thread":
        worker = threading.Thread(target=fn)
        worker.start()
        worker.join()
    else:
        fn()


def test_the_lr_in_force_and_the_scheduler_are_shown_for_the_shown_iteration():
    model, x, y = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)

    def lr(i):              # StepLR's formula for iteration i (0-based): stepped i times before it
        return 0.1 * 0.5 ** (i // 2)

    seen = {}

    def look(session, message):
        if session.step_count != 5:
            return

        async def script(pilot, app):
            seen["mid"] = bar(app)                        # iteration 6, after its loss
            await press(pilot, "n", "n")                  # backward, update
            await select(pilot, "2.weight")
            seen["update"] = (bar(app), arithmetic(app))
            for _ in range(4 * 3):                        # back three iterations: iteration 3's update
                await press(pilot, "left")
            seen["back"] = (bar(app), arithmetic(app), app.query_one(PhaseBar).frame.step)
        drive(session, script)

    dbg = gdstep.attach(model, opt, F.cross_entropy, breakpoints=["loss > 0"], on_break=look, scheduler=sched)
    for _ in range(7):
        dbg.step(x, y)
        sched.step()
    assert lr(5) == 0.025 and lr(2) == 0.05
    assert re.search(r"lr 0\.025 \(?StepLR", seen["mid"])
    text, formula = seen["update"]
    assert re.search(r"lr 0\.025 \(?StepLR", text)
    assert "0.025" in formula and "lr set by StepLR" in formula and "lr=0.025" in formula
    text, formula, step = seen["back"]
    assert step == 3 and re.search(rf"lr {lr(2):g} \(?StepLR", text) and f"lr={lr(2):g}" in formula
    assert opt.param_groups[0]["lr"] == lr(7)            # the loop's schedule is where it was


def test_each_param_group_shows_its_own_lr_and_hyperparameters():
    model, x, y = mlp(1)
    opt = torch.optim.SGD([{"params": model[0].parameters()},
                           {"params": model[2].parameters(), "lr": 0.02, "momentum": 0.5}], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.9 ** i)
    seen = {}

    def look(session, message):
        if session.step_count != 3:
            return

        async def script(pilot, app):
            await press(pilot, "n", "n")
            await select(pilot, "2.weight")
            seen["w2"] = (bar(app), arithmetic(app), app.query_one(ArithmeticView).lines)
            await select(pilot, "0.bias")
            seen["b0"] = arithmetic(app)
        drive(session, script)

    dbg = gdstep.attach(model, opt, F.cross_entropy, breakpoints=["loss > 0"], on_break=look, scheduler=sched)
    for _ in range(4):
        dbg.step(x, y)
        sched.step()
    lr0, lr1 = 0.1 * 0.9 ** 3, 0.02 * 0.9 ** 3          # LambdaLR: base lr × λ(3) in iteration 4
    text, formula, lines = seen["w2"]
    assert re.search(rf"lr (g0 )?{lr0:.4g}(, g1 |/){lr1:.4g} \(?LambdaLR", text)      # full or compact
    assert f"sgd, group 1: lr={lr1:.4g}" in formula and "momentum=0.5" in formula
    assert f"▸ group 1: lr={lr1:.4g}, momentum=0.5 ·" in formula and f"  group 0: lr={lr0:.4g}, momentum=0.9 ·" in formula
    assert any(f"{lr1:.4g}" in line for line in lines)            # the formula uses the group's own lr
    assert f"sgd, group 0: lr={lr0:.4g}" in seen["b0"] and f"▸ group 0: lr={lr0:.4g}" in seen["b0"]


class VAE(nn.Module):
    def __init__(self, as_dict=False):
        super().__init__()
        self.enc, self.mu, self.logvar, self.dec = nn.Linear(5, 4), nn.Linear(4, 2), nn.Linear(4, 2), nn.Linear(2, 5)
        self.as_dict = as_dict

    def forward(self, x):
        h = torch.relu(self.enc(x))
        mu, logvar = self.mu(h), self.logvar(h)
        recon = torch.sigmoid(self.dec(mu))          # the mean: no noise, so a test can recompute it
        return {"recon": recon, "mu": mu, "logvar": logvar} if self.as_dict else (recon, mu, logvar)


def vae_loss(out, x):
    recon, mu, logvar = (out["recon"], out["mu"], out["logvar"]) if isinstance(out, dict) else out
    return F.binary_cross_entropy(recon, x) - 0.5 * torch.mean(1 + logvar - mu ** 2 - logvar.exp())


@pytest.mark.parametrize("as_dict", [False, True], ids=["tuple", "dict"])
def test_a_model_returning_several_tensors_shows_each(as_dict):
    torch.manual_seed(0)
    model = VAE(as_dict)
    x = torch.rand(6, 5)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        expected = twin(x)
    seen = {}

    def look(session, message):
        async def script(pilot, app):
            tree = app.query_one(ModelTree)
            seen["tree"] = {str(leaf.label): str(n.label) for n in tree.root.children for leaf in n.children}
            seen["panel"] = app.query_one(BatchView).panel
        drive(session, script)

    gdstep.attach(model, torch.optim.Adam(model.parameters(), 1e-3), vae_loss, breakpoints=["loss > 0"],
                  on_break=look).step(x, x)
    mu = expected["mu"] if as_dict else expected[1]
    logvar = expected["logvar"] if as_dict else expected[2]
    names = ["output['recon']", "output['mu']", "output['logvar']"] if as_dict else \
        ["output[0]", "output[1]", "output[2]"]
    for name, shape in zip(names, ("6×5", "6×2", "6×2")):     # under the model's output row
        assert seen["tree"][f"{name} {shape}"].startswith("(output)")
    panel = seen["panel"]
    rows = {row.label: row.values for row in panel.rows if row.group == "output"}
    mu_label, lv_label = ("mu", "logvar") if as_dict else ("o1", "o2")
    shown = len(panel.samples)
    np.testing.assert_allclose(rows[f"{mu_label}[1]"], mu[:shown, 1].numpy(), rtol=1e-6)
    np.testing.assert_allclose(rows[f"{lv_label}[0]"], logvar[:shown, 0].numpy(), rtol=1e-6)
    assert f"{mu_label} = {names[1]}" in panel.notes


def test_an_inexact_replay_is_flagged_on_the_phase_bar_with_its_reason_in_the_log():
    model, x, y = mlp(2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(0)

    def noisy(out, target):     # numpy noise: an RNG gdstep does not own
        return F.cross_entropy(out, target) + float(rng.normal()) * 1e-3

    seen = {}

    def look(session, message):
        if session.step_count != 2:
            return

        async def script(pilot, app):
            seen["before"] = bar(app)
            for _ in range(8):
                await press(pilot, "left")        # back two iterations: recomputed with other noise
            for _ in range(8):
                await press(pilot, "n")
            seen["after"] = (bar(app), log_kinds(app), log_text(app), session.replay_inexact)
            seen["inexact"] = [m for kind, m in app.query_one(EventLog).messages if kind == "inexact"]
        drive(session, script, size=(80, 24))

    dbg = gdstep.attach(model, opt, noisy, breakpoints=["loss > 0"], on_break=look)
    for _ in range(4):
        dbg.step(x, y)
    assert "inexact" not in seen["before"]
    text, kinds, log, reason = seen["after"]
    assert reason is not None and "not what was first computed" in reason
    assert "⚠ inexact" in text                     # compact at 80 columns, still shown
    assert "inexact" in kinds and "numpy" in log
    first, *later = seen["inexact"]                # the reason once, then "as above"
    assert "numpy" in first and later and all(m.endswith("(why: as above)") and "numpy" not in m for m in later)


def test_watch_without_targets_keeps_the_loop_where_it_is():
    """watch(loss) with no y: the iteration cannot be recomputed, so the app refuses to move
    from where the loop stands (one line) instead of leaving it somewhere it cannot return from."""
    model, x, y = mlp(3)
    bare = copy.deepcopy(model)
    opt, bare_opt = torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(bare.parameters(), lr=0.1)
    logs = []

    def look(session, message):
        async def script(pilot, app):
            await press(pilot, "n", "n", "n", "left", "left")
            logs.append(log_text(app))
        drive(session, script)

    dbg = gdstep.attach(model, opt, F.cross_entropy, breakpoints=["loss > 0"], on_break=look)
    for _ in range(3):
        for m, o in ((model, opt), (bare, bare_opt)):
            o.zero_grad()
            loss = F.cross_entropy(m(x), y)
            loss.backward()
            if m is model:
                dbg.watch(loss)
            o.step()
    assert len(logs) == 3 and all("so the debugger stays where your loop is (iteration" in log for log in logs[1:])
    for p, q in zip(model.parameters(), bare.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert dbg.session.step_count == 3


@pytest.mark.parametrize("scaled", [False, True], ids=["", "GradScaler"])
@pytest.mark.parametrize("where", ["worker thread", "loop thread"])
def test_watch_mode_recomputes_the_usual_amp_loop_in_its_own_precisions(where, scaled):
    """The usual mixed-precision loop: forward and loss inside `torch.autocast`, backward
    (of the scaled loss, with a GradScaler) and `dbg.watch` outside it. A recompute (a
    rewind, lean records read) runs the forward and the loss as the loop did, in bfloat16,
    and the backward outside autocast: the loop's numbers to the bit, in the app's worker
    thread as on the loop's, and nothing inexact."""
    model, x, y = mlp(4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8) if scaled else None
    dbg = gdstep.attach(model, opt, F.cross_entropy, scaler=scaler)
    losses, params = [], []
    for _ in range(5):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(model(x), y)
        if scaled:
            scaler.scale(loss).backward()
            dbg.watch(loss, y)
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            dbg.watch(loss, y)
            opt.step()
        losses.append(loss.item())
        params.append({n: p.detach().clone() for n, p in model.named_parameters()})
    s = dbg.session
    seen = {}

    def rewind():
        s.back(iterations=3)
        s.seek(s.position + 2)                   # iteration 3's loss, recomputed
        seen["loss"] = s.record("loss").value
        s.seek(s.position + 2)                   # and its update
        seen["params"] = {n: p.detach().clone() for n, p in model.named_parameters()}
        s.seek(4 * 5)
    run_in(where, rewind)
    assert seen["loss"] == losses[2]
    for n, p in seen["params"].items():
        torch.testing.assert_close(p, params[2][n], rtol=0, atol=0)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), params[-1][n], rtol=0, atol=0)
    assert s.replay_inexact is None
    with torch.no_grad():                        # the precision shows: a float32 recompute would differ
        full = F.cross_entropy(model(x), y).item()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert F.cross_entropy(model(x), y).item() != full


def test_a_loop_without_autocast_is_recomputed_without_it_inside_a_callers_autocast():
    """The loop ran in float32; a rewind recomputed where the caller's thread has autocast
    on (a notebook cell inside `with torch.autocast(...)`) turns it off again, so it gives
    the loop's numbers, not bfloat16's. (Where autocast is off already, nothing is entered.)"""
    model, x, y = mlp(4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    dbg = gdstep.attach(model, opt, F.cross_entropy)
    losses = [dbg.step(x, y) for _ in range(4)]
    s = dbg.session
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        s.back(iterations=2)
        s.seek(s.position + 2)                  # the loss of iteration 3, recomputed
        recomputed = s.record("loss").value
        s.seek(4 * 4)
        with torch.no_grad():
            in_bfloat16 = F.cross_entropy(model(x), y).item()
    assert recomputed == losses[2]
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), params[n], rtol=0, atol=0)
    with torch.no_grad():
        assert F.cross_entropy(model(x), y).item() != in_bfloat16      # the context did change the numbers
    assert s.replay_inexact is None


@pytest.mark.parametrize("where", ["worker thread", "loop thread"])
def test_autocast_is_entered_again_for_a_recompute(where):
    """Autocast is per thread: the app recomputes in a worker thread, where the loop's
    `with torch.autocast(...)` does not hold. A rewind there (or on the loop's thread, inside
    its autocast, where the weights' casts are cached) recomputes the same numbers."""
    model, x, y = mlp(4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    seen = {}

    def look(session, message):
        if session.step_count != 3:
            return
        here = session.position
        first = [session.record(p).value if p == "loss" else None for p in ("loss",)][0]

        def rewind():
            session.back(iterations=2)
            session.seek(here + 2)                       # recompute to the end of this iteration
            after = {n: p.detach().clone() for n, p in model.named_parameters()}
            session.back(iterations=1)
            session.seek(here)
            seen["loss"] = (session.record("loss").value, first)
            session.seek(here + 2)
            seen["params"] = [(after[n], p.detach().clone()) for n, p in model.named_parameters()]
        run_in(where, rewind)

    dbg = gdstep.attach(model, opt, F.cross_entropy, breakpoints=["loss > 0"], on_break=look)
    losses = []
    for _ in range(5):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses.append(dbg.step(x, y))
    recomputed, first = seen["loss"]
    assert recomputed == first == losses[3]
    for old, new in seen["params"]:
        torch.testing.assert_close(old, new, rtol=0, atol=0)
    assert dbg.session.replay_inexact is None
    # the loop's losses are autocast's: a bare bfloat16-autocast loop gives the same
    bare, bx, by = mlp(4)
    bare_opt = torch.optim.SGD(bare.parameters(), lr=0.1, momentum=0.9)
    expected = []
    for _ in range(4):
        bare_opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = F.cross_entropy(bare(bx), by)
        loss.backward()
        bare_opt.step()
        expected.append(loss.item())
    assert losses[:4] == expected
    with torch.no_grad():
        assert F.cross_entropy(bare(bx), by).item() != expected[-1]

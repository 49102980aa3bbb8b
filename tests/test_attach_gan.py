"""A GAN's two models and two optimizers in one debugger session, in watch mode as DCGAN's
loop is written: each optimizer's step is an iteration recording the parameters it moved,
the loop's numbers are untouched, and a rewind that could not recompute what the loop did
(several forwards and losses for one step) is refused before anything moves."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import gdstep
from gdstep.errors import GdstepError


def build():
    torch.manual_seed(0)
    netG = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 8), nn.Tanh())
    netD = nn.Sequential(nn.Linear(8, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1), nn.Sigmoid())
    optD = torch.optim.Adam(netD.parameters(), lr=2e-3, betas=(0.5, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=1e-3, betas=(0.5, 0.999))
    return netG, netD, optG, optD


def train(netG, netD, optG, optD, dbg=None, steps=4, freeze_d: bool = False, d_every: int = 1):
    criterion = nn.BCELoss()
    g = torch.Generator().manual_seed(1)
    for i in range(steps):
        real = torch.randn(8, 8, generator=g)
        noise = torch.randn(8, 4, generator=g)
        netD.zero_grad()
        label = torch.full((8, 1), 1.0)
        errD_real = criterion(netD(real), label)
        errD_real.backward()
        fake = netG(noise)
        label.fill_(0.0)
        errD_fake = criterion(netD(fake.detach()), label)
        errD_fake.backward()
        if dbg is not None:
            dbg.watch(errD_real + errD_fake, label.clone())
        if i % d_every == 0:                      # (some loops update D every k-th iteration)
            optD.step()
        netG.zero_grad()
        netD.requires_grad_(not freeze_d)         # (many GAN loops: no gradients of D while G trains)
        label = torch.full((8, 1), 1.0)
        errG = criterion(netD(fake), label)
        errG.backward()
        if dbg is not None:
            dbg.watch(errG, label)
        optG.step()
        netD.requires_grad_(True)


def test_one_session_over_both_models_and_optimizers():
    bare = build()
    train(*bare)
    netG, netD, optG, optD = build()
    seen = {}

    def look(session, message):
        before = session.position
        with pytest.raises(GdstepError, match="cannot recompute iteration"):
            session.back(iterations=1)
        with pytest.raises(GdstepError, match="cannot recompute iteration"):
            session.back(phases=1)
        kept = session.backend._batches
        seen["why"] = ("forward 3 times" in kept[2].why_not, "carries gradients" in kept[3].why_not)
        seen["unmoved"] = session.position == before
        seen["groups"] = [g["lr"] for g in session.backend.group_hyperparameters()]

    dbg = gdstep.attach({"G": netG, "D": netD}, [optG, optD], nn.BCELoss(), ["step == 3 and phase == 'backward'"],
                        on_break=look)
    train(netG, netD, optG, optD, dbg)
    for a, b in zip((netG, netD, optG, optD), bare):
        torch.testing.assert_close(a.state_dict(), b.state_dict(), rtol=0, atol=0)
    s = dbg.session
    assert s.step_count == 8 and seen == {"unmoved": True, "groups": [1e-3, 2e-3], "why": (True, True)}
    update = s.record("update")                       # the generator's step: its parameters only
    assert sorted(update.params) == ["G.0.bias", "G.0.weight", "G.2.bias", "G.2.weight"]
    for name, u in update.params.items():
        assert torch.equal(u.new, dict(netG.named_parameters())[name[2:]].detach())
    assert s.replay_inexact is not None and "forward 3 times" in s.replay_inexact
    said = [e.message for e in s.events if "ran forward" in e.message]    # every discriminator's step is such:
    assert len(said) == 1 and "said once" in said[0]                      # one line, not one an iteration
    with pytest.raises(GdstepError, match="dbg.step takes one model"):
        dbg.step(torch.randn(2, 8), torch.ones(2, 1))


def test_a_loop_that_turns_the_discriminators_gradients_off_while_the_generator_trains_stays_one_session(capsys):
    """Which parameters train is checked at each watch() (progressive unfreezing attaches
    afresh), but with several optimizers the loop's toggling of D's requires_grad around
    G's step is each optimizer's own iteration, not a change: no attaching afresh."""
    bare = build()
    train(*bare, freeze_d=True)
    netG, netD, optG, optD = build()
    dbg = gdstep.attach({"G": netG, "D": netD}, [optG, optD], nn.BCELoss())
    train(netG, netD, optG, optD, dbg, freeze_d=True)
    for a, b in zip((netG, netD, optG, optD), bare):
        torch.testing.assert_close(a.state_dict(), b.state_dict(), rtol=0, atol=0)
    assert dbg.session.step_count == 8 and "attached afresh" not in capsys.readouterr().err
    dbg.close()


@pytest.mark.parametrize("debugger", ["looks", "tries to rewind"])
def test_a_break_at_the_discriminators_step_leaves_the_generators_graph_usable(debugger):
    """DCGAN's loop makes `fake` before the discriminator's step and back-propagates through
    it after. A break in that step (its optimizer's post-hook) opens the debugger, which
    reads the records (recomputing them) and puts the loop's values back: the same numbers,
    but written in place, which moved the version counters of the generator's weights that
    `fake`'s graph saved, so `errG.backward()` raised "modified by an inplace operation"
    and the loop died. They get their counters back: the loop trains on as a bare one does,
    bit for bit."""
    netG, netD, optG, optD = build()
    seen = []

    def look(session, message):
        seen.append((session.step_count, session.records["backward"] is not None))
        if debugger == "tries to rewind":
            with pytest.raises(GdstepError):      # DCGAN's iterations cannot be recomputed
                session.back(iterations=1)

    dbg = gdstep.attach({"G": netG, "D": netD}, [optD, optG], nn.BCELoss(), ["step == 5"], on_break=look)
    train(netG, netD, optG, optD, dbg, steps=4)
    bare = build()
    train(*bare, steps=4)
    assert seen and seen[0][0] == 5        # after the discriminator's update of iteration 5
    for a, b in ((netG, bare[0]), (netD, bare[1])):
        for (n, p), q in zip(a.named_parameters(), b.parameters()):
            assert torch.equal(p, q), n


def test_the_discriminators_iteration_holds_no_gradient_the_generator_kept_from_its_own_step():
    """At D's second iteration, G's `.grad` is the one G's last backward made (G stepped
    since, and D's losses do not reach G through fake.detach()): no part of D's iteration.
    Its backward record and grad_norm hold D's gradients alone (they held G's too: grad_norm
    read 0.5986 where D's own is 0.5672), checked against the loop's own."""
    netG, netD, optG, optD = build()
    seen = []

    def look(session, message):
        rec = session.record("backward")
        seen.append((sorted(rec.grads), rec.grad_norm))

    dbg = gdstep.attach({"G": netG, "D": netD}, [optG, optD], nn.BCELoss(), ["step == 2 and phase == 'backward'"],
                        on_break=look)
    loops_d = []
    real_watch = dbg.watch

    def watch(loss, y):             # the loop's D gradients, as its step will use them
        if all(p.grad is not None for p in netD.parameters()):
            loops_d.append(torch.sqrt(sum((p.grad.double() ** 2).sum() for p in netD.parameters())).item())
        return real_watch(loss, y)

    dbg.watch = watch
    train(netG, netD, optG, optD, dbg, steps=2)
    (names, norm), = seen
    assert names == ["D.0.bias", "D.0.weight", "D.2.bias", "D.2.weight"]
    assert norm == pytest.approx(loops_d[2], rel=1e-6)       # D's second iteration (the third watch)
    dbg.close()


def test_a_generators_iteration_after_a_skipped_discriminator_step_holds_the_generators_gradients_alone():
    """D updated every other iteration (or a step a GradScaler skips), D frozen while G
    trains: at G's iteration after a skipped D step, D's gradients are still those of D's
    own iteration, which ended at its watch(). G's record and grad_norm hold G's alone (they
    held D's too, ~3.5 times G's norm), each equal to the loop's own; training equals a bare
    loop's."""
    bare = build()
    train(*bare, steps=3, freeze_d=True, d_every=2)
    netG, netD, optG, optD = build()
    seen = []
    dbg = gdstep.attach({"G": netG, "D": netD}, [optG, optD], nn.BCELoss())
    real_watch = dbg.watch

    def watch(loss, y):             # the loop's own gradients of the model whose iteration it is (D's, then G's)
        who = "DG"[len(seen) % 2]
        own = [p.grad.clone() for p in (netD if who == "D" else netG).parameters()]
        out = real_watch(loss, y)
        seen.append((who, own, dbg.session.record("backward")))
        return out

    dbg.watch = watch
    train(netG, netD, optG, optD, dbg, steps=3, freeze_d=True, d_every=2)
    for who, own, rec in seen:
        assert {name[0] for name in rec.grads} == {who}
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in own)).item()
        assert rec.grad_norm == pytest.approx(norm, rel=1e-6)
    for a, b in zip((netG, netD), bare[:2]):
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    dbg.close()


def test_calls_that_need_one_models_forward_or_its_update_are_refused_in_one_line():
    """At a break in a GAN session: gradcheck (one model's forward, which a session over two
    has not: it raised torch's NotImplementedError from ModuleDict.forward) and explain of the
    other model's parameter (it said the parameter was frozen) each say why in one line."""
    netG, netD, optG, optD = build()
    said = []

    def look(session, message):
        for call in (lambda: session.gradcheck("D.0.weight", (0, 0)), lambda: session.explain("G.0.weight", (0, 0))):
            with pytest.raises(GdstepError) as refused:
                call()
            said.append(str(refused.value))

    dbg = gdstep.attach({"G": netG, "D": netD}, [optG, optD], nn.BCELoss(), ["step == 3 and phase == 'backward'"],
                        on_break=look)
    train(netG, netD, optG, optD, dbg)
    assert "several models" in said[0] and "attach one model" in said[0]
    assert "no update in the latest iteration (another optimizer's step" in said[1]
    dbg.close()

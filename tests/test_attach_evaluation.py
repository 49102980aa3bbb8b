"""Loops that evaluate their model between iterations, as the official PyTorch examples do
(mnist_rnn, gcn, siamese_network: `model.eval()` and a forward under `torch.no_grad()` after
each epoch, `model.train()` as the next begins). A rewind recomputes each iteration in the
train/eval modes the loop ran it in, whatever mode the model stands in now, and leaves the
loop's weights and modes as the loop left them; an evaluation pass is no part of an
iteration (it neither makes the next one unrecomputable nor takes its records' place), and
in watch mode it never stops the loop."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import gdstep  # noqa: E402
from attach_loop import attached_iteration  # noqa: E402


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 3))


def batches(n=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(10, 4, generator=g), torch.randint(0, 3, (10,), generator=g)) for _ in range(n)]


def train(mode, model, opt, dbg, data, validate_every=4):
    """The examples' loop: train mode for each epoch's iterations, then an evaluation pass
    (eval mode, no gradients, another batch size) that leaves the model in eval mode."""
    losses, states = [], []
    xv = torch.randn(7, 4, generator=torch.Generator().manual_seed(9))
    torch.manual_seed(5)
    for i, (x, y) in enumerate(data):
        if i % validate_every == 0:
            model.train()
        if dbg is None:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        else:
            attached_iteration(mode, dbg, model, opt, F.cross_entropy, x, y)
            losses.append(dbg.session.history.losses[-1])
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        if i % validate_every == validate_every - 1:
            model.eval()
            with torch.no_grad():
                model(xv)
    return losses, states


@pytest.mark.parametrize("mode", ["step", "watch"])
def test_a_rewind_in_eval_mode_recomputes_the_iterations_in_the_mode_the_loop_ran_them(mode):
    data = batches()
    bare = net()
    _, bare_states = train(mode, bare, torch.optim.Adam(bare.parameters(), lr=0.01), None, data)
    model = net()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    dbg = gdstep.attach(model, opt, F.cross_entropy)
    losses, states = train(mode, model, opt, dbg, data)
    for k, v in model.state_dict().items():             # the loop itself: as the bare loop
        torch.testing.assert_close(v, bare_states[-1][k], rtol=0, atol=0)
    assert not model.training                           # the loop's evaluation left it in eval mode
    s = dbg.session
    end = s.position
    s.back(iterations=3)
    s.seek(s.position + 2)                              # iteration 6's loss, recomputed in train mode
    assert s.record("loss").value == losses[5]
    s.seek(s.position + 2)
    for k, v in model.state_dict().items():             # its update: dropout and batch statistics as then
        torch.testing.assert_close(v, states[5][k], rtol=0, atol=0)
    s.seek(end)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, states[-1][k], rtol=0, atol=0)
    assert not model.training and not any(m.training for m in model.modules())    # the loop's modes, put back
    assert s.replay_inexact is None


def test_an_evaluation_pass_in_watch_mode_is_no_part_of_the_iteration():
    """Its forward, under no_grad, neither counts as a second forward of the iteration (which
    made it unrecomputable, and with lean records stopped the loop with a traceback) nor
    takes the place of the loop's forward in the records."""
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dbg = gdstep.attach(model, opt, F.cross_entropy)
    losses, states = train("watch", model, opt, dbg, batches(), validate_every=1)
    s = dbg.session
    assert s.record("forward").outputs[-1].shape[0] == 10          # the training batch's, not the evaluation's 7
    s.back(iterations=4)
    s.seek(s.position + 2)
    assert s.record("loss").value == losses[4]
    s.seek(4 * 8)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, states[-1][k], rtol=0, atol=0)
    assert s.replay_inexact is None and not [e for e in s.events if "forward 2 times" in e.message]


def test_an_iteration_that_cannot_be_recomputed_after_a_lean_one_does_not_stop_the_loop():
    """Gradient accumulation with gradients on (two forwards before a step) right after a
    lean iteration: watch() made the lean records full by recomputing up to the new
    iteration, whose own batch it does not need, yet refused for it, and then failed to
    put the loop's state back: the loop died. Now the records are made and the loop goes
    on; a rewind across the iteration is refused in one line, the session unmoved."""
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dbg = gdstep.attach(model, opt, F.cross_entropy)
    data = batches(6)
    for i, (x, y) in enumerate(data):
        opt.zero_grad()
        if i == 3:                                        # two half batches, one step
            for half in (slice(0, 5), slice(5, 10)):
                (F.cross_entropy(model(x[half]), y[half]) / 2).backward()
            loss = F.cross_entropy(model(x), y)
        else:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
        dbg.watch(loss, y)
        opt.step()
    s = dbg.session
    assert s.step_count == 6
    before = s.position
    with pytest.raises(gdstep.GdstepError, match="cannot recompute iteration 4"):
        s.back(iterations=2)          # to iteration 5's start: iteration 4 recomputed for its records
    assert s.position == before


def test_evaluate_at_a_break_runs_the_model_in_eval_mode():
    """`Session.evaluate()` promises eval mode (dropout off, BatchNorm on running statistics)
    whatever mode the loop's iteration ran in: the loss it gives is the model's in eval mode,
    computed here by hand, and twice the same."""
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = {}

    def look(s, message):
        seen["evaluated"] = [s.evaluate()[0] for _ in range(2)]
        x, y = s.backend.x, s.backend.y
        model.eval()
        with torch.no_grad():
            seen["by hand"] = F.cross_entropy(model(x), y).item()
        model.train()

    dbg = gdstep.attach(model, opt, F.cross_entropy, ["step == 3 and phase == 'loss'"], on_break=look)
    model.train()
    for x, y in batches(4):
        dbg.step(x, y)
    assert seen["evaluated"] == [seen["by hand"]] * 2


def test_a_seek_past_the_loops_latest_iteration_is_refused_as_the_loops_to_give():
    """At a break, after a rewind and a run back to where the loop stands, a seek further on
    needs a batch the loop has not given yet: refused in those words, not as a batch no
    longer kept."""
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    said = []

    def look(s, message):
        end = s.position
        s.back(iterations=3)
        s.run(max_steps=3)
        with pytest.raises(gdstep.GdstepError) as refused:
            s.seek(s.position + 6)
        said.append(str(refused.value))
        s.seek(end)

    dbg = gdstep.attach(model, opt, F.cross_entropy, ["step == 6"], on_break=look)
    model.train()
    for x, y in batches(8):
        dbg.step(x, y)
    assert said == ["attach mode: the next batch comes from your training loop; let it go on (q in the app; from a "
                    "BreakpointHit's handler, return)"]


def test_a_model_called_without_gradients_inside_another_attached_ones_forward_leaves_its_rows_recorded():
    """Two attached models, the head calling the encoder under no_grad (frozen features):
    the encoder's call is no part of the iteration, and the head's own layers, run after it
    with gradients on, are recorded as the loop made them."""
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Linear(4, 8), nn.ReLU())

    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 3)

        def forward(self, x):
            with torch.no_grad():
                z = enc(x)
            return self.fc2(torch.relu(self.fc1(z)))

    head = Head()
    dbg = gdstep.attach({"enc": enc, "head": head}, [torch.optim.SGD(enc.parameters(), lr=0.1),
                                                     torch.optim.SGD(head.parameters(), lr=0.1)], F.cross_entropy)
    x, y = batches(1)[0]
    out = head(x)
    recorded = {name: slot for (name, _), slot in zip(dbg.backend._rows, dbg.backend._slots)}
    assert recorded["head.fc2"] is not None and torch.equal(recorded["head.fc2"], out.detach())
    assert recorded["enc.0"] is None


def test_a_seek_into_the_iteration_the_loop_has_not_given_is_refused_before_anything_moves():
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []

    def look(s, message):
        here = s.position
        with pytest.raises(gdstep.GdstepError, match="the next batch comes from your training loop"):
            s.seek(4 * (s.step_count + 1) + 1)
        seen.append((here, s.position))

    dbg = gdstep.attach(model, opt, F.cross_entropy, ["step == 6"], on_break=look)
    model.train()
    for x, y in batches(8):
        dbg.step(x, y)
    assert seen and all(here == now for here, now in seen)

"""Never silently different numbers: where a rewind cannot recompute what the loop computed
(a random number generator gdstep does not own, a batch changed in place, a loss that is not
loss_fn(output, y), gradient accumulation) the session says so — an "inexact" event and
`session.replay_inexact` — and where it can, it says nothing; a rewind it cannot do is refused
before anything moves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gdstep
from gdstep.errors import GdstepError


class NumpyNoise(nn.Module):
    """Noise from numpy's generator, which gdstep neither owns nor replays."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 1)
        self.rng = np.random.default_rng(0)

    def forward(self, x):
        return self.fc(x + torch.from_numpy(self.rng.normal(size=x.shape).astype(np.float32)))


def batches(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)) for _ in range(n)]


def rewind_at(step: int, back: int = 2):
    def look(session, message):
        assert session.replay_inexact is None
        session.back(iterations=back)
        session.step(back)
    return look, [f"step == {step}"]


def test_an_rng_gdstep_does_not_own_is_announced_on_rewind():
    torch.manual_seed(0)
    model = NumpyNoise()
    look, bps = rewind_at(4)
    dbg = gdstep.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss(), bps, on_break=look)
    for x, y in batches():
        dbg.step(x, y)
    s = dbg.session
    assert s.replay_inexact is not None and "recomputed is not what was first computed" in s.replay_inexact
    assert any(e.kind == "inexact" for e in s.events)


def test_a_deterministic_loop_with_dropout_and_debugger_changes_raises_no_alarm():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))

    def look(session, message):
        session.back(iterations=3)
        session.set(lr=0.01)               # a new branch: new numbers, not a replay
        session.step(2)
        session.back(iterations=2)         # and a replay of that branch
        session.step(2)

    dbg = gdstep.attach(model, torch.optim.Adam(model.parameters(), lr=0.01), nn.MSELoss(), ["step == 5"], on_break=look)
    for x, y in batches():
        dbg.step(x, y)
    assert dbg.session.replay_inexact is None
    assert not [e for e in dbg.session.events if e.kind == "inexact"]


def test_a_batch_buffer_reused_in_place_is_announced():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    look, bps = rewind_at(4)
    dbg = gdstep.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss(), bps, on_break=look)
    x_buf, y_buf = torch.empty(8, 4), torch.empty(8, 1)
    for x, y in batches():
        x_buf.copy_(x)                     # a pinned buffer refilled each iteration
        y_buf.copy_(y)
        dbg.step(x_buf, y_buf)
    assert "changed in place" in dbg.session.replay_inexact


def test_watch_announces_a_loss_that_is_not_loss_fn_and_gradient_accumulation():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    _, bps = rewind_at(3, back=1)
    look = lambda session, message: session.back(iterations=1) or session.step(1)     # noqa: E731  (said before it)
    dbg = gdstep.attach(model, opt, nn.MSELoss(), [b + " and phase == 'backward'" for b in bps], on_break=look)
    for x, y in batches():
        opt.zero_grad()
        loss = F.mse_loss(model(x), y) + 0.1 * model.weight.pow(2).sum()     # an L2 term loss_fn lacks
        loss.backward()
        dbg.watch(loss, y)
        opt.step()
    assert dbg.session.replay_inexact.startswith("iteration 1: the loop's loss, ")       # said at once
    assert "is not loss_fn(output, y)" in dbg.session.replay_inexact
    assert any("recomputed is not what was first computed: loss" in e.message for e in dbg.session.events)

    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dbg = gdstep.attach(model, opt, nn.MSELoss(), [])
    data = batches()
    for i in range(0, 8, 2):
        opt.zero_grad()
        for x, y in data[i:i + 2]:        # two micro-batches per step
            loss = F.mse_loss(model(x), y) / 2
            loss.backward()
        dbg.watch(loss, y)
        opt.step()
    assert "ran forward 2 times" in dbg.session.replay_inexact


def test_a_rewind_past_the_kept_batches_is_refused_and_moves_nothing():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    outcome = []

    def look(session, message):
        before = (session.position, {n: p.copy() for n, p in session.params.items()})
        with pytest.raises(GdstepError, match="is no longer kept .attach mode keeps those of the last 2 iterations"):
            session.back(iterations=5)
        outcome.append(session.position == before[0]
                       and all(np.array_equal(p, before[1][n]) for n, p in session.params.items()))
        session.back(iterations=1)        # within reach: fine
        session.step(1)

    dbg = gdstep.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss(), ["step == 6"],
                        on_break=look, keep=2)
    for x, y in batches():
        dbg.step(x, y)
    assert outcome == [True] and dbg.session.step_count == 8 and dbg.session.replay_inexact is None


def test_watch_with_a_step_the_loop_skipped_records_no_update_and_replays_it():
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    look, bps = rewind_at(5, back=3)
    dbg = gdstep.attach(model, opt, nn.MSELoss(), [bps[0] + " and phase == 'backward'"], on_break=look)
    torch.manual_seed(0)
    twin = nn.Linear(4, 1)
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.1)
    for i, (x, y) in enumerate(batches()):
        for m, o in ((model, opt), (twin, twin_opt)):
            o.zero_grad()
            loss = F.mse_loss(m(x), y)
            loss.backward()
            if m is model:
                dbg.watch(loss, y)
            if i != 2:                     # the loop skips one step (as a GradScaler does)
                o.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)
    s = dbg.session
    assert s.step_count == 8 and s.replay_inexact is None
    assert any("did not call optimizer.step()" in e.message for e in s.events)


def test_a_loop_that_updates_its_parameters_itself_is_told_so_once():
    """word_language_model's loop updates through p.data, never calling step(): one info
    event says so, not one an iteration (before: 29 identical lines in its event log)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dbg = gdstep.attach(model, opt, nn.MSELoss())
    for x, y in batches():
        model.zero_grad()
        loss = F.mse_loss(model(x), y)
        loss.backward()
        dbg.watch(loss, y)
        with torch.no_grad():
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-0.1)
    told = [e for e in dbg.session.events if "did not call optimizer.step()" in e.message]
    assert len(told) == 1 and "(said once)" in told[0].message
    assert dbg.session.step_count == len(batches()) - 1


@pytest.mark.parametrize("watching", [False, True])
def test_a_loop_that_draws_from_torchs_rng_between_iterations_rewinds_exactly(watching):
    """Noise drawn by the loop (DCGAN's torch.randn, a DataLoader's shuffle) moves torch's RNG
    between iterations: the dropout of a recomputed forward still gets the loop's numbers."""
    def run(dbg_on: bool):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

        def look(session, message):
            session.back(iterations=3)
            session.step(3) if not watching else [session.next_phase() for _ in range(11)]

        condition = "step == 5" if not watching else "step == 5 and phase == 'backward'"
        dbg = gdstep.attach(model, opt, nn.MSELoss(), [condition], on_break=look) if dbg_on else None
        for _ in range(8):
            x, y = torch.randn(8, 4), torch.randn(8, 1)        # made on the fly, from torch's RNG
            if dbg is not None and not watching:
                dbg.step(x, y)
                continue
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            if dbg is not None:
                dbg.watch(loss, y)
            opt.step()
        return model, dbg, torch.get_rng_state()

    bare, _, bare_rng = run(False)
    model, dbg, rng = run(True)
    for p, q in zip(model.parameters(), bare.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(rng, bare_rng)                           # the loop's RNG goes on where it would have
    assert dbg.session.replay_inexact is None


def test_a_loop_that_goes_on_from_recomputed_values_is_told_so(capsys):
    """A loss that changes its target in place (as fast_neural_style's `normalize_batch`
    divides its batch): no iteration recomputes as the loop computed it. After a rewind at a
    break the loop goes on from gdstep's values, not its own: an inexact event and a line on
    stderr say so once, naming the iterations that came out otherwise. (A deterministic
    loop, rewound alike, hears nothing: the test above.)"""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)

    def loss_fn(out, y):
        y.div_(2.0)
        return F.mse_loss(out, y)

    look, bps = rewind_at(4)
    dbg = gdstep.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn, bps, on_break=look)
    for x, y in batches():
        dbg.step(x, y)
    told = [e.message for e in dbg.session.events if "recomputed otherwise than your loop" in e.message]
    assert told == ["iterations 1–4 recomputed otherwise than your loop computed it (the inexact events say why): "
                    "your loop goes on from the recomputed values, not its own"]
    assert "your loop goes on from the recomputed values, not its own" in capsys.readouterr().err


@pytest.mark.parametrize("when", ["step == 4", "step == 4 and phase == 'loss'"], ids=["at the update", "at the loss"])
def test_a_watched_loop_whose_generator_a_rewind_drew_from_is_told_it_may_not_go_on_as_before(when):
    """Watch mode puts the loop's own values back after a break, but a rewind that recomputes
    a forward drawing from numpy's generator draws from the loop's generator too: the loop
    then goes on otherwise than a bare loop (checked), and it is told so, once: its own values
    put back, its generator advanced where one made the difference."""
    torch.manual_seed(0)
    model = NumpyNoise()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    look, _ = rewind_at(4)
    dbg = gdstep.attach(model, opt, nn.MSELoss(), [when], on_break=look)
    bare = NumpyNoise()
    bare.load_state_dict(model.state_dict())
    bare_opt = torch.optim.SGD(bare.parameters(), lr=0.1)
    for x, y in batches():
        for m, o in ((model, opt), (bare, bare_opt)):
            o.zero_grad()
            loss = nn.MSELoss()(m(x), y)
            loss.backward()
            if m is model:
                dbg.watch(loss, y)
            o.step()
    s = dbg.session
    assert s.replay_inexact is not None
    told = [e.message for e in s.events if "recomputed otherwise than your loop" in e.message]
    assert len(told) == 1 and told[0].endswith(
        "your loop's own values are put back, but if a random number generator gdstep does not own made the "
        "difference, the recomputing drew from it and your loop goes on with it advanced")
    assert not all(torch.equal(p, q) for p, q in zip(model.parameters(), bare.parameters()))


def test_a_break_written_to_files_says_its_records_were_recomputed_otherwise(tmp_path, monkeypatch, capsys):
    """Without a terminal a break writes its records; reading them recomputes the iteration.
    Where that came out otherwise than the loop computed it (a loss that halves its target
    in place), the summary, the file's metadata and the stderr line say so: the losses in
    them are gdstep's, not the loop's."""
    import json

    import gdstep.debugger as attach_module
    monkeypatch.setattr(attach_module, "interactive", lambda: False)
    torch.manual_seed(0)
    model = nn.Linear(4, 1)

    def loss_fn(out, y):
        y.div_(2.0)
        return F.mse_loss(out, y)

    dbg = gdstep.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn, ["step == 6"],
                        dump_dir=tmp_path)
    for x, y in batches():
        dbg.step(x, y)
    err = capsys.readouterr().err
    assert "⚠ inexact: the records are not exactly the loop's (the summary says why)" in err
    [txt] = tmp_path.glob("gdstep-break-*.txt")
    assert "⚠ inexact: iteration" in txt.read_text()
    [npz] = tmp_path.glob("gdstep-break-*.npz")
    assert json.loads(str(np.load(npz)["meta"]))["inexact"].startswith("iteration")


@pytest.mark.parametrize("view", ["landscape", "line"])
def test_the_landscape_and_the_line_say_in_their_own_words_why_attach_mode_has_none(view):
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    dbg = gdstep.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss())
    for x, y in batches(3):
        dbg.step(x, y)
    with pytest.raises(GdstepError, match=f"^{view}: not drawn for an attached loop: it is drawn on copies of "
                                          "the session"):
        getattr(dbg.session, view)()


def test_stepping_forward_through_an_iteration_that_cannot_be_recomputed_says_why_and_leaves_the_loop_its_own():
    """Gradient accumulation in iteration 4 (two forwards before its step): a rewind to
    iteration 3 is allowed, but stepping forward from there recomputes iteration 4 from its
    last micro-batch alone. The inexact events name that cause (not a random number
    generator), for iteration 4 and for those after it, and the loop goes on from its own
    values: its weights at the end are a bare loop's, bit for bit."""
    def run(debug: bool):
        torch.manual_seed(0)
        model = nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        seen = {}

        def look(session, message):
            session.back(iterations=4)
            seen["back"] = session.step_count
            session.step(4)

        dbg = gdstep.attach(model, opt, nn.MSELoss(), ["step == 6 and phase == 'backward'"], on_break=look) if debug else None
        data, i = batches(12), 0
        for step in range(8):
            opt.zero_grad()
            k = 2 if step == 3 else 1
            for _ in range(k):
                x, y = data[i]
                i += 1
                loss = F.mse_loss(model(x), y) / k
                loss.backward()
            if dbg is not None:
                dbg.watch(loss, y)
            opt.step()
        return model, dbg, seen

    model, dbg, seen = run(True)
    bare, _, _ = run(False)
    assert seen["back"] == 2            # two updates done: iteration 3 next
    messages = [e.message for e in dbg.session.events if e.kind == "inexact" and "recomputed is not" in e.message]
    assert any(m.startswith("iteration 4 recomputed") and "it cannot be recomputed: the loop ran the model forward 2 times"
               in m for m in messages)
    assert any(m.startswith("iteration 5 recomputed") and "comes after iteration 4, which cannot be recomputed" in m
               for m in messages)
    assert not any("random number generator" in m for m in messages)
    assert torch.equal(model.weight, bare.weight) and torch.equal(model.bias, bare.bias)


@pytest.mark.parametrize("mode", ["step", "watch"])
def test_each_of_the_last_keep_iterations_can_be_rewound_to(mode):
    """20 quick iterations with keep=16: the checkpoints stand at 0 and 16, and only the
    batches of iterations 5–20 were kept, so a rewind to iteration 16 or 11 (recomputed from
    the checkpoint at 0) was refused, and the refusal named iteration 1. The batches now
    reach back to the checkpoint before the last 16 iterations: each of them is reached,
    with the loop's parameters; one further back is refused naming the iteration asked for."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    dbg = gdstep.attach(model, opt, loss_fn, [], on_break="raise")
    g = torch.Generator().manual_seed(1)
    after = [{n: p.detach().clone() for n, p in model.named_parameters()}]
    for _ in range(40):
        x, y = torch.randn(16, 4, generator=g), torch.randint(0, 2, (16,), generator=g)
        if mode == "step":
            dbg.step(x, y)
        else:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            dbg.watch(loss, y)
            opt.step()
        after.append({n: p.detach().clone() for n, p in model.named_parameters()})
    s = dbg.session
    for k in range(40 - 16, 40):                  # the start of each of the last 16 iterations
        s.seek(4 * k)
        assert all(np.array_equal(s.params[n], v.numpy()) for n, v in after[k].items()), k
    with pytest.raises(GdstepError, match="cannot recompute iteration 3 from the checkpoint before it"):
        s.seek(4 * 3)
    dbg.close()

"""Watch mode, a loop whose loss is not the loss_fn given to attach (an L2 term added to it,
another criterion): the iterations keep what the loop computed, and the first one says so at
once, with both numbers, on stderr and as an `inexact` event; a rewind's lines name that
cause (they listed six generic ones, and nothing was said before a rewind)."""

from __future__ import annotations

import torch
from torch import nn

import gdstep


def test_a_loss_other_than_loss_fn_is_said_at_once_and_named_by_a_rewind(capsys):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), 0.1)
    dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss(), breakpoints=["step == 3"],
                        on_break=lambda s, m: s.back(iterations=1))
    g = torch.Generator().manual_seed(1)
    losses, plain = [], []
    for _ in range(4):
        x, y = torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
        opt.zero_grad()
        out = model(x)
        loss = nn.functional.cross_entropy(out, y) + 0.01 * model.weight.pow(2).sum()
        plain.append(nn.functional.cross_entropy(out, y).item())
        loss.backward()
        losses.append(loss.item())
        dbg.watch(loss, y)
        opt.step()
    s = dbg.session
    said = [e.message for e in s.events if e.kind == "inexact" and "the loop's loss, " in e.message]
    assert len(said) == 1 and said[0].startswith("iteration 1:")
    assert repr(losses[0]) in said[0] and repr(plain[0]) in said[0]
    assert said[0].split(" (said once")[0] in capsys.readouterr().err
    differs = [e.message for e in s.events if "recomputed is not what was first computed" in e.message]
    assert differs and all("the loop's loss is not loss_fn(output, y)" in m for m in differs)
    assert s.history.losses[0] == losses[0]           # the loop's own (those the rewind recomputed: loss_fn's)
    dbg.close()


def test_a_loss_that_is_loss_fn_says_nothing(capsys):
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), 0.1)
    dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss())
    g = torch.Generator().manual_seed(1)
    for _ in range(4):
        x, y = torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)       # the same criterion, called as a function
        loss.backward()
        dbg.watch(loss, y)
        assert dbg._lean_now
        opt.step()
    assert not [e for e in dbg.session.events if e.kind == "inexact"] and "gdstep:" not in capsys.readouterr().err
    dbg.close()


def test_an_amp_loops_loss_is_compared_in_its_own_precision(capsys):
    """The usual mixed-precision loop (bfloat16 autocast on the CPU around the forward and
    the loss): loss_fn(output, y) is computed again in the loop's autocast, so it is the
    loop's loss, bit for bit: nothing said, and the iterations are lean."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), 0.1)
    dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss())
    g = torch.Generator().manual_seed(1)
    lean = []
    for _ in range(4):
        x, y = torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        dbg.watch(loss, y)
        lean.append(dbg._lean_now)
        opt.step()
    assert lean == [True] * 4
    assert not [e for e in dbg.session.events if e.kind == "inexact"] and "gdstep:" not in capsys.readouterr().err
    dbg.close()


def test_step_mode_with_a_loss_of_more_arguments_raises_its_typeerror_with_how_gdstep_calls_it():
    """pytorch/examples' VAE: loss_function(recon_x, x, mu, logvar) given to attach as it is.
    dbg.step raises the loss's own TypeError (the loop's mistake, its type kept), with a note
    saying how gdstep calls loss_fn and what to attach instead (watch mode says the same)."""
    import pytest

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc, self.dec = nn.Linear(6, 4), nn.Linear(2, 6)

        def forward(self, x):
            mu, logvar = self.enc(x).chunk(2, 1)
            return torch.sigmoid(self.dec(mu)), mu, logvar

    def loss_function(recon_x, x, mu, logvar):
        return nn.functional.binary_cross_entropy(recon_x, x, reduction="sum") - 0.5 * torch.sum(
            1 + logvar - mu.pow(2) - logvar.exp())

    torch.manual_seed(0)
    model = VAE()
    dbg = gdstep.attach(model, torch.optim.Adam(model.parameters()), loss_function)
    x = torch.rand(8, 6)
    with pytest.raises(TypeError, match="missing 2 required positional arguments") as raised:
        dbg.step(x, x)
    hint, = raised.value.__notes__
    assert "called as loss_fn(output, y)" in hint and "lambda out, y: loss_function(out[0], y, *out[1:])" in hint
    dbg.close()
    model = VAE()
    recon, mu, logvar = model(x)
    expected = loss_function(recon, x, mu, logvar).item()
    dbg = gdstep.attach(model, torch.optim.Adam(model.parameters()),
                        lambda out, y: loss_function(out[0], y, *out[1:]))     # the hint, followed
    assert dbg.step(x, x) == expected
    dbg.close()


def test_a_loss_fn_that_draws_random_numbers_leaves_the_loops_generator_and_is_not_called_another_loss():
    """loss_fn with dropout, called again by watch() to compare: torch's generator is given
    back after it (the loop drew on from a moved generator and trained otherwise than a bare
    loop), and its other draw is not called another loss."""
    import torch.nn.functional as F

    def loss_fn(out, y):
        return F.mse_loss(F.dropout(out, 0.3), y)

    def run(debug: bool):
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(1)
        dbg = gdstep.attach(model, opt, loss_fn) if debug else None
        for _ in range(5):
            x, y = torch.randn(8, 4, generator=g), torch.randn(8, 3, generator=g)
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            if dbg is not None:
                dbg.watch(loss, y)
            opt.step()
        return model, torch.rand(1).item(), dbg

    model, draw, dbg = run(True)
    bare, bare_draw, _ = run(False)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), bare.parameters())) and draw == bare_draw
    assert not [e for e in dbg.session.events if "is not loss_fn(output, y)" in e.message]
    dbg.close()


def test_a_loss_computed_after_the_forwards_autocast_ends_is_recomputed_so(capsys):
    """An AMP loop that computes its loss outside `with torch.autocast(...)` (the forward in
    bfloat16, then the criterion on its bfloat16 output): the loss module's hook saw the
    loss made from the output and y, so the iteration was lean, but its recomputation ran
    the loss in the forward's autocast, a float32 cross-entropy: a rewind showed 1.4097 where
    the loop's loss was 1.3906, silently. A plain function's loss was said to be "another
    criterion". Each loss is now recomputed in its own autocast state: the rewinds give the
    loop's losses and parameters bit for bit, and nothing is said."""
    for criterion in (nn.CrossEntropyLoss(), lambda out, y: nn.functional.cross_entropy(out, y)):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        dbg = gdstep.attach(model, opt, criterion)
        g = torch.Generator().manual_seed(1)
        losses, params = [], []
        for _ in range(6):
            x, y = torch.randn(16, 8, generator=g), torch.randint(0, 4, (16,), generator=g)
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(x)
            loss = criterion(out, y)                   # after the autocast: bfloat16, as its input
            loss.backward()
            dbg.watch(loss, y)
            opt.step()
            losses.append(loss.item())
            params.append({n: p.detach().clone() for n, p in model.named_parameters()})
        s = dbg.session
        assert s.replay_inexact is None and not [e for e in s.events if e.kind == "inexact"]
        for step in (1, 3, 5):
            s.seek(4 * step + 2)                       # the loss of iteration step + 1, recomputed
            assert s.record("loss").value == losses[step]
            s.seek(4 * step + 4)
            assert all(torch.equal(torch.from_numpy(s.params[n]), p) for n, p in params[step].items())
        assert "gdstep:" not in capsys.readouterr().err
        dbg.close()


def test_a_loss_after_the_autocast_in_full_records_is_recomputed_so_too():
    """The same with full records (lean_watch off, as with a GradScaler or several
    optimizers): the loss module's autocast state was noted for lean iterations only."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    criterion = nn.CrossEntropyLoss()
    dbg = gdstep.attach(model, opt, criterion)
    dbg.lean_watch = False
    g = torch.Generator().manual_seed(1)
    losses, params = [], []
    for _ in range(6):
        x, y = torch.randn(16, 8, generator=g), torch.randint(0, 4, (16,), generator=g)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        loss = criterion(out, y)
        loss.backward()
        dbg.watch(loss, y)
        opt.step()
        losses.append(loss.item())
        params.append({n: p.detach().clone() for n, p in model.named_parameters()})
    s = dbg.session
    for step in (1, 4):
        s.seek(4 * step + 2)
        assert s.record("loss").value == losses[step]
        s.seek(4 * step + 4)
        assert all(torch.equal(torch.from_numpy(s.params[n]), p) for n, p in params[step].items())
    assert s.replay_inexact is None
    dbg.close()


def test_a_criterion_given_as_it_is_for_a_model_returning_output_and_hidden_is_said_at_once():
    """pytorch/examples' word_language_model: the model returns (output, hidden) and the loop
    calls criterion(output, y); attached with the criterion as it is, a recomputation calls
    it on the whole tuple. Watch mode took the loss module's call for loss_fn(output, y) (its
    first tensor is the output) and said nothing; the first rewind raised the loss's own
    TypeError out of session.seek. Now it is said at the first watch(), and a rewind into
    such an iteration is refused in one line."""
    import pytest

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.fc = nn.LSTM(4, 8), nn.Linear(8, 3)

        def forward(self, x, h):
            o, h = self.rnn(x, h)
            return torch.log_softmax(self.fc(o).view(-1, 3), 1), h

    torch.manual_seed(0)
    model = LM()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    criterion = nn.NLLLoss()
    dbg = gdstep.attach(model, opt, criterion, on_break="raise")
    h = None
    for _ in range(6):
        x, y = torch.randn(5, 2, 4), torch.randint(0, 3, (10,))
        opt.zero_grad()
        out, h = model(x, h)
        h = tuple(t.detach() for t in h)
        loss = criterion(out, y)
        loss.backward()
        dbg.watch(loss, y)
        opt.step()
    said = [e.message for e in dbg.session.events if "fails as loss_fn(output, y)" in e.message]
    assert len(said) == 1 and said[0].startswith("iteration 1:") and "lambda out, y:" in said[0]
    with pytest.raises(gdstep.GdstepError, match="the loss_fn given to attach cannot be called as loss_fn"):
        dbg.session.seek(4 * 2)
    dbg.close()

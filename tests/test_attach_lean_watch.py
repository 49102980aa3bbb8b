"""Watch mode with records on demand: an iteration the loop ran as a recomputation would
(one forward, loss_fn(output, y), gradients as backward made them) keeps lean records — no
copies around the loop's step, no δ — and the first read recomputes them from a checkpoint.
What is read then equals, bit for bit, what full records (`dbg.lean_watch = False`) hold,
and the loop's own training equals a bare loop's."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import gdstep


def make(optimizer, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))
    opt = optimizer(model.parameters())
    g = torch.Generator().manual_seed(seed + 1)
    batches = [(torch.randn(8, 5, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(12)]
    return model, opt, batches


OPTIMIZERS = {
    "sgd momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01),
}


def snapshot(session) -> dict:
    """Every value the records of the latest iteration hold, cloned."""
    fwd, loss, bwd, upd = (session.record(p) for p in ("forward", "loss", "backward", "update"))
    return {
        "outputs": [None if o is None else o.clone() for o in fwd.outputs],
        "loss": loss.value,
        "grads": {n: g.clone() for n, g in bwd.grads.items()},
        "deltas": [None if d is None else d.clone() for d in bwd.deltas],
        "update": {n: (u.old.clone(), u.grad.clone(), u.new.clone(),
                       {k: v.clone() if torch.is_tensor(v) else v for k, v in u.state_before.items()},
                       {k: v.clone() if torch.is_tensor(v) else v for k, v in u.state_after.items()})
                   for n, u in upd.params.items()},
        "step": session.step_count,
    }


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def watched_loop(optimizer, lean: bool, clip: bool = False, extra: float = 0.0, breaks=("step == 5",)):
    model, opt, batches = make(optimizer)
    seen: list[dict] = []
    dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss(), breakpoints=list(breaks),
                        on_break=lambda s, m: seen.append(snapshot(s)) if s.last_phase == "update" else None)
    dbg.lean_watch = lean
    torch.manual_seed(7)                      # dropout draws from torch's RNG
    lean_records = []
    for x, y in batches:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        if extra:
            loss = loss + extra * model[0].weight.square().sum()      # not loss_fn(output, y)
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(model.parameters(), 0.1)         # before watch(): not what backward made
        dbg.watch(loss, y)
        lean_records.append(dbg._lean_now)            # this iteration keeps lean records
        opt.step()
    end = snapshot(dbg.session)
    history = dbg.session.history
    dbg.close()
    return model, seen, end, lean_records, history


def bare_loop(optimizer, clip: bool = False, extra: float = 0.0):
    model, opt, batches = make(optimizer)
    torch.manual_seed(7)
    for x, y in batches:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        if extra:
            loss = loss + extra * model[0].weight.square().sum()
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
    return model


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_lean_watch_records_materialised_equal_full_records_and_training_equals_a_bare_loop(name):
    optimizer = OPTIMIZERS[name]
    lean_model, lean_seen, lean_end, lean_flags, lean_history = watched_loop(optimizer, lean=True)
    full_model, full_seen, full_end, full_flags, full_history = watched_loop(optimizer, lean=False)
    bare = bare_loop(optimizer)
    # records on demand did happen, from the first iteration on (its RNG state is taken at the
    # loop's forward, before the first watch())
    assert all(lean_flags) and not any(full_flags)
    assert len(lean_seen) == len(full_seen) == 1 and lean_seen[0]["step"] == 5
    assert same(lean_seen[0], full_seen[0])           # the records at the break
    assert same(lean_end, full_end)                   # the records after the loop, read at its end
    assert lean_end["update"] and all(d is not None for d in lean_end["deltas"][:1])
    for a, b in ((lean_model, bare), (full_model, bare)):
        for (n, p), q in zip(a.named_parameters(), b.parameters()):
            assert torch.equal(p, q), n               # gdstep changed nothing of the loop's training
    assert list(lean_history.losses) == list(full_history.losses)
    assert list(lean_history.grad_norms) == list(full_history.grad_norms)


def test_the_first_iteration_is_lean_too_and_its_records_read_back_with_every_delta():
    """The loop's first forward runs before its first watch(): its RNG state is taken then,
    so the first iteration is recomputed (dropout and all) as any later one; and its δ are
    caught as that forward's backward makes them, so full records of it hold them too."""
    optimizer = OPTIMIZERS["adam"]
    _, lean_seen, _, lean_flags, _ = watched_loop(optimizer, lean=True, breaks=("step == 1",))
    _, full_seen, _, full_flags, _ = watched_loop(optimizer, lean=False, breaks=("step == 1",))
    assert lean_flags[0] and not full_flags[0]
    lean, full = lean_seen[0], full_seen[0]
    assert lean["step"] == full["step"] == 1
    assert all(d is not None for d in full["deltas"]) and all(d is not None for d in lean["deltas"])
    # the outputs (the dropout mask replayed), loss, δ, gradients and update, bit for bit
    assert same(lean, full)
    # δ of the logits, independently: ∂ mean CE / ∂z = (softmax(z) − onehot(y)) / N
    _, _, batches = make(optimizer)
    z, y = lean["outputs"][-1], batches[0][1]
    expected = (torch.softmax(z, dim=1) - nn.functional.one_hot(y, 3).to(z.dtype)) / len(y)
    assert torch.allclose(lean["deltas"][-1], expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["clipped before watch", "loss is not loss_fn"])
def test_an_iteration_a_recomputation_would_not_give_keeps_full_records(kind):
    kw = {"clip": True} if kind == "clipped before watch" else {"extra": 0.01}
    optimizer = OPTIMIZERS["adam"]
    model, seen, end, flags, _ = watched_loop(optimizer, lean=True, **kw)
    _, full_seen, full_end, _, _ = watched_loop(optimizer, lean=False, **kw)
    assert not any(flags)                     # full records every iteration, as before
    assert same(end, full_end) and same(seen, full_seen)
    for p, q in zip(model.parameters(), bare_loop(optimizer, **kw).parameters()):
        assert torch.equal(p, q)


def test_a_non_finite_update_in_a_lean_iteration_still_breaks_with_the_culprit():
    model, opt, batches = make(OPTIMIZERS["sgd momentum"])
    hits = []
    dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss(),
                        on_break=lambda s, m: hits.append((m, s.step_count, s.record("update").params["0.weight"].new)))
    flags = []
    for i, (x, y) in enumerate(batches[:6]):
        if i == 4:
            opt.param_groups[0]["lr"] = float("inf")     # the loop's own lr change: this step overflows
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        dbg.watch(loss, y)
        flags.append(dbg._lean_now)                     # this iteration's records are lean
        opt.step()
    assert flags[4] and hits                            # (and again on each later iteration: the NaN lasts)
    message, step, new = hits[0]
    assert step == 5 and "non-finite" in message and "update" in message
    assert not torch.isfinite(new).all()                # the recomputed update record shows it
    assert not torch.isfinite(model[0].weight).all()    # and the loop's step is the loop's


@pytest.mark.parametrize("lean", [True, False])
def test_the_start_holds_batchnorms_statistics_as_the_loops_first_forward_found_them(lean):
    """The first watch() comes after the loop's first forward, which moved BatchNorm's
    running statistics in place: the first checkpoint holds them as they were before it, so
    the start and every iteration recomputed from it are the loop's, to the bit."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 5, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(5)]
    states = [copy.deepcopy(model.state_dict())]
    dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss())
    dbg.lean_watch = lean
    torch.manual_seed(7)
    for x, y in batches:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        dbg.watch(loss, y)
        opt.step()
        states.append(copy.deepcopy(model.state_dict()))
    assert states[1]["1.running_mean"].ne(states[0]["1.running_mean"]).all()     # the forward moved them
    s = dbg.session
    end = s.position
    for k in range(len(batches) + 1):
        s.seek(4 * k)
        assert same(model.state_dict(), states[k]), k
    assert s.position == end and s.replay_inexact is None
    dbg.close()


def test_the_start_holds_the_buffers_before_the_first_of_several_forwards():
    """Gradient accumulation in the first iteration: two forwards before the first watch(),
    each moving BatchNorm's statistics. The start is the state before the first of them."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 5, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(4)]
    start = copy.deepcopy(model.state_dict())
    dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss())
    opt.zero_grad()
    for x, y in batches[:2]:                                   # one step over two micro-batches
        loss = nn.functional.cross_entropy(model(x), y) / 2
        loss.backward()
    dbg.watch(loss, y)
    opt.step()
    for x, y in batches[2:]:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        dbg.watch(loss, y)
        opt.step()
    s = dbg.session
    s.seek(0)
    assert same(model.state_dict(), start)
    dbg.close()


@pytest.mark.parametrize("zeroing", ["set_to_none", "zeros in place", "after the forward"])
def test_the_gradients_backward_made_are_told_apart_from_the_loops_edits_however_it_zeroes_them(zeroing):
    """Which gradients the loop's backward made is noted as backward makes them: new
    tensors (zero_grad() setting them to None), or the same ones added to in place
    (zero_grad(set_to_none=False): their versions move), with zero_grad called before the
    forward or between it and the backward. Each of those iterations is lean; one whose
    gradients the loop scaled in place after backward() is not; one whose first backward
    raised midway (the loop zeroes and runs it again) is. Training equals a bare loop's,
    bit for bit, and the history its losses."""
    def loop(debug: bool):
        model, opt, batches = make(OPTIMIZERS["adam"])
        dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss(), []) if debug else None
        torch.manual_seed(7)
        flags, losses = [], []
        for k, (x, y) in enumerate(batches):
            if zeroing != "after the forward":
                opt.zero_grad(set_to_none=zeroing == "set_to_none")
            out = model(x)
            if zeroing == "after the forward":
                opt.zero_grad()
            loss = nn.functional.cross_entropy(out, y)
            if k == 2:       # a backward that raises midway (a hook of the loop's), then the loop goes on
                h = model[0].weight.register_hook(lambda g: (_ for _ in ()).throw(RuntimeError("midway")))
                with pytest.raises(RuntimeError, match="midway"):
                    loss.backward(retain_graph=True)
                h.remove()
                opt.zero_grad(set_to_none=zeroing != "zeros in place")
            loss.backward()
            if k == 4:
                with torch.no_grad():
                    model[0].weight.grad.mul_(0.5)          # an edit in place: not what backward made
            if dbg is not None:
                dbg.watch(loss, y)
                flags.append(dbg._lean_now)
            losses.append(loss.item())
            opt.step()
        return model, flags, losses, dbg

    model, flags, losses, dbg = loop(True)
    bare, _, bare_losses, _ = loop(False)
    assert flags == [k != 4 for k in range(len(flags))]
    assert list(dbg.session.history.losses) == bare_losses == losses
    for (n, p), q in zip(model.named_parameters(), bare.parameters()):
        assert torch.equal(p, q), n


class CalledOutOfOrder(nn.Module):
    """Its last registered module runs first, its first last."""

    def __init__(self):
        super().__init__()
        self.head = nn.Linear(16, 3)
        self.body = nn.Linear(5, 16)

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def test_a_model_whose_modules_run_in_another_order_than_they_were_made_keeps_lean_records():
    torch.manual_seed(0)
    model = CalledOutOfOrder()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _, _, batches = make(OPTIMIZERS["adam"])
    dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss(), ["step == 4"], on_break=lambda s, m: None)
    flags = []
    for x, y in batches:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        dbg.watch(loss, y)
        flags.append(dbg._lean_now)
        opt.step()
    assert all(flags)


class WithSpare(nn.Module):
    """A model with a module its forward never calls (a Transformer's unused heads, a
    spare projection): the first watch() drops that row before the session starts."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))
        self.spare = nn.Linear(16, 16)

    def forward(self, x):
        return self.body(x)


@pytest.mark.parametrize("lean", [True, False])
def test_a_model_with_a_row_it_never_calls_keeps_its_first_iterations_gradients_and_deltas(lean):
    """Dropping the uncalled row hooks the model again; the gradients backward made and
    the δ caught before the first watch() survive that: the first iteration is lean where
    the loop allows, and its records hold every δ either way, equal to the softmax's."""
    torch.manual_seed(0)
    model = WithSpare()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss(), breakpoints=[], on_break="raise")
    dbg.lean_watch = lean
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(8, 5, generator=g), torch.randint(0, 3, (8,), generator=g)
    opt.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    dbg.watch(loss, y)
    assert dbg._lean_now is lean
    names = [info.name for info in dbg.backend.layers]
    assert "spare" not in names and "body.1" in names
    bwd, fwd = dbg.session.record("backward"), dbg.session.record("forward")
    assert bwd.step == 0 and all(d is not None for d in bwd.deltas)
    z = fwd.outputs[-1]
    expected = (torch.softmax(z, dim=1) - nn.functional.one_hot(y, 3).to(z.dtype)) / len(y)
    assert torch.allclose(bwd.deltas[-1], expected, rtol=1e-5, atol=1e-7)
    # δ of the Tanh's output back through the last linear layer: δ₂ · W₂
    assert torch.allclose(bwd.deltas[names.index("body.1")], expected @ model.body[2].weight.detach(),
                          rtol=1e-5, atol=1e-7)
    opt.step()
    dbg.close()


def test_an_iteration_that_turns_out_not_recomputable_after_lean_ones_says_what_its_records_lack():
    """After lean iterations the loop's forward is tested as it runs and let go, with no δ
    caught (the next read would recompute them); when the loop then clips before watch(),
    that iteration cannot be recomputed. Its records hold the loss and the gradients; the
    outputs and δ they lack are said in the event log, shown as not recorded in the layer view,
    and the chain rule says why it cannot be shown, instead of failing on a missing array."""
    from gdstep.tui.frame import Selection
    from gdstep.tui.frame_builder import FrameBuilder

    model, opt, batches = make(OPTIMIZERS["sgd momentum"])
    seen = []

    def look(s, message):
        bwd, fwd = s.record("backward"), s.record("forward")
        panel = FrameBuilder(s).build(Selection(layer="3")).tensor
        try:
            s.chain_rule("3.weight", (0, 0))
            chain = None
        except gdstep.GdstepError as e:
            chain = str(e)
        seen.append((bwd.step, [d is None for d in bwd.deltas], [o is None for o in fwd.outputs],
                     {n: g.clone() for n, g in bwd.grads.items()}, [g.note for g in panel.grids], chain))

    dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss(), breakpoints=["step == 3"], on_break=look)
    torch.manual_seed(7)
    made = {}
    for i, (x, y) in enumerate(batches[:4]):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if i == 2:
            nn.utils.clip_grad_norm_(model.parameters(), 0.01)
            made = {n: p.grad.clone() for n, p in model.named_parameters()}
        dbg.watch(loss, y)
        opt.step()
    (step, no_delta, no_output, grads, notes, chain), = seen
    assert step == 2 and all(no_delta) and no_output[:-1] == [True] * (len(no_output) - 1) and not no_output[-1]
    assert grads.keys() == made.keys() and all(torch.equal(grads[n], made[n]) for n in made)   # as watch() got them
    assert notes == ["not recorded", "not recorded", "not recorded"]
    assert chain is not None and "iteration 3: δ of layer 3 was not recorded" in chain
    said = [e.message for e in dbg.session.events if e.message.startswith("iteration 3: its layer outputs and their δ")]
    assert len(said) == 1 and "records show the loss and the gradients without them" in said[0]
    dbg.close()


@pytest.mark.parametrize("kind", ["clip_grad_value_"])
def test_gradients_other_than_one_backwards_keep_full_records_and_a_rewind_names_why_they_differ(kind):
    """Gradients the loop clipped before watch(): the iteration keeps the loop's own (full
    records), and a rewind's inexact line names the loop's change of them (it blamed random
    numbers, a non-deterministic op, .data). (A second loss's backward: the test below.)"""
    model, opt, batches = make(OPTIMIZERS["adam"])
    seen = []

    def look(s, message):
        s.back(iterations=1)
        seen.append(s.record("backward").grads)

    dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss(), breakpoints=["step == 4"], on_break=look)
    made, lean = [], []
    torch.manual_seed(7)
    for x, y in batches[:5]:
        opt.zero_grad()
        out = model(x)
        loss = nn.functional.cross_entropy(out, y)
        if kind == "second backward":
            loss.backward(retain_graph=True)
            (0.01 * out.pow(2).mean()).backward()
        else:
            loss.backward()
            nn.utils.clip_grad_value_(model.parameters(), 0.01)
        made.append({n: p.grad.clone() for n, p in model.named_parameters()})
        dbg.watch(loss, y)
        lean.append(dbg._lean_now)
        opt.step()
    assert not any(lean)
    records = dbg.session._records          # (the session stands after the loop's last update)
    assert all(torch.equal(records["backward"].grads[n], made[-1][n]) for n in made[-1])
    said = [e.message for e in dbg.session.events if e.kind == "inexact" and "not what was first computed" in e.message]
    assert said and all("the loop changed its gradients before watch() (clipping, another backward" in m for m in said)
    dbg.close()


def test_a_second_backward_of_one_forward_keeps_full_records_and_its_rewind_is_refused():
    """Two losses' backward after one forward (retain_graph=True): the gradients are their
    sum, which no recomputation of one backward gives. Each such iteration keeps the loop's
    own gradients (full records, the sum, as the step uses it), is said once, and a rewind
    into it is refused with the reason; training equals a bare loop's, bit for bit."""
    def loop(debug: bool):
        model, opt, batches = make(OPTIMIZERS["adam"])
        tried = []

        def look(s, message):
            try:
                s.back(iterations=1)
            except gdstep.GdstepError as e:
                tried.append(str(e))

        dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss(), breakpoints=["step == 4"], on_break=look) if debug else None
        made, lean = [], []
        torch.manual_seed(7)
        for x, y in batches[:6]:
            opt.zero_grad()
            out = model(x)
            loss = nn.functional.cross_entropy(out, y)
            loss.backward(retain_graph=True)
            (0.01 * out.pow(2).mean()).backward()       # a second loss, of the same forward
            made.append({n: p.grad.clone() for n, p in model.named_parameters()})
            if dbg is not None:
                dbg.watch(loss, y)
                lean.append(dbg._lean_now)
            opt.step()
        return model, made, lean, tried, dbg

    model, made, lean, tried, dbg = loop(True)
    bare, bare_made, _, _, _ = loop(False)
    assert lean == [False] * 6
    records = dbg.session._records          # (the session stands after the loop's last update)
    assert all(torch.equal(records["backward"].grads[n], made[-1][n]) for n in made[-1])
    said = [e.message for e in dbg.session.events if "ran backward more than once" in e.message]
    assert len(said) == 1 and "a rewind cannot recompute it" in said[0]
    assert len(tried) == 1 and "two backward passes of one forward" in tried[0]
    for (n, p), q in zip(model.named_parameters(), bare.parameters()):
        assert torch.equal(p, q), n
    dbg.close()


def test_a_reentrant_checkpoint_of_a_layer_also_used_outside_it_is_one_backward():
    """torch.utils.checkpoint(use_reentrant=True) runs a backward of its own inside the
    loop's: a layer used inside and outside it gets its gradient added to in place within
    one backward(). That is not a second loss's backward: the iterations stay lean, and a
    rewind recomputes them."""
    from torch.utils.checkpoint import checkpoint

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.head = nn.Linear(4, 4), nn.Linear(4, 3)

        def forward(self, x):
            h = self.a(x)
            h = checkpoint(lambda t: torch.tanh(self.a(t)), h, use_reentrant=True)
            return self.head(h)

    torch.manual_seed(0)
    model = Shared()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    got = []

    def look(s, message):
        s.back(iterations=1)
        got.append(s.step_count)

    dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss(), breakpoints=["step == 4"], on_break=look)
    lean = []
    for _ in range(6):
        x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        dbg.watch(loss, y)
        lean.append(dbg._lean_now)
        opt.step()
    assert lean == [True] * 6 and got == [3]
    assert not [e.message for e in dbg.session.events if "backward more than once" in e.message]
    dbg.close()


@pytest.mark.parametrize("hooked", ["before attach", "after attach"])
def test_a_gradient_the_loops_own_post_accumulate_hook_edits_is_not_taken_for_backwards(hooked):
    """The loop scales a gradient in a post-accumulate hook of its own (a clipping done in
    backward). A recomputation's backward does not run it, so no iteration is lean, and a
    rewind's recomputed update steps with the loop's gradients: after going back over the
    last iterations and forward again, the parameters equal a bare loop's, bit for bit.
    (Before, with gdstep's own hook on each parameter, a hook of the loop's registered
    before attach ran before gdstep's, which took the scaled gradient for backward's: the
    iterations were lean, and the rewind's recomputed parameters differed.)"""
    def halve(p):
        p.grad.mul_(0.5)

    def loop(debug: bool):
        model, opt, batches = make(OPTIMIZERS["adam"])
        if hooked == "before attach" or not debug:
            model[0].weight.register_post_accumulate_grad_hook(halve)
        dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss(), []) if debug else None
        if hooked == "after attach" and debug:
            model[0].weight.register_post_accumulate_grad_hook(halve)
        torch.manual_seed(7)
        flags = []
        for x, y in batches:
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            if dbg is not None:
                dbg.watch(loss, y)
                flags.append(dbg._lean_now)
            opt.step()
        return model, flags, dbg

    model, flags, dbg = loop(True)
    bare, _, _ = loop(False)
    assert not any(flags)
    for (n, p), q in zip(model.named_parameters(), bare.parameters()):
        assert torch.equal(p, q), n
    s = dbg.session
    end = s.position
    s.back(iterations=4)
    s.seek(end)                  # recomputed from a checkpoint: the loop's parameters again
    for (n, p), q in zip(model.named_parameters(), bare.parameters()):
        assert torch.equal(p, q), n
    dbg.close()

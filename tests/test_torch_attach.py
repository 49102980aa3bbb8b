"""Attach mode: two lines in a training loop that already exists. A loop that goes NaN stops
on the right iteration with its records; without a terminal the records go to a file and
the loop goes on; what is done in the debugger carries on (step) or is undone (watch)."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import gdstep
import gdstep.debugger as attach_module
from attach_loop import attached_iteration
from gdstep.errors import ConditionError, GdstepError


def make(seed: int = 0, optimizer=torch.optim.SGD, **kw):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = optimizer(model.parameters(), **({"lr": 0.1} | kw))
    x, y = torch.randn(64, 3), torch.randn(64, 1)
    return model, opt, nn.MSELoss(), [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]


def test_a_loop_that_goes_nan_stops_on_that_iteration_with_its_records():
    model, opt, loss_fn, batches = make()
    hits = []

    def look(session, message):
        rec = session.forward()        # the debugger shows the state before the bad forward: run it
        hits.append((message, session.step_count, rec.step, rec.outputs[0].isnan().any().item()))

    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["nan", "loss > 10 * prev_loss"], on_break=look)
    for epoch in range(2):
        for i, (x, y) in enumerate(batches):
            if epoch == 1 and i == 2:
                x = x.clone()
                x[3, 1] = float("nan")                 # a bad sample arrives on iteration 7
            dbg.step(x, y)
    message, step, rec_step, nan = hits[0]
    assert "non-finite value nan in layer 0 linear output[3,0] during forward" in message
    assert step == rec_step == 6 and nan
    assert len(hits) >= 1


def test_the_loss_spike_breakpoint_fires_on_the_spike_with_the_loss_record():
    model, opt, loss_fn, batches = make()
    seen = []
    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["loss > 10 * prev_loss"],
                        on_break=lambda s, m: seen.append((m, s.record("loss").value, s.cursor.phase, s.step_count)))
    for x, y in batches * 2:
        dbg.step(x, y)
    losses = [dbg.step(x, y + 100) for x, y in batches[:1]]   # targets far off: the loss jumps
    assert len(seen) == 1
    message, value, due, step = seen[0]
    assert "breakpoint 1 hit: loss > 10 * prev_loss" in message
    assert value == pytest.approx(losses[0]) and due == "backward" and step == 8


def test_quitting_lets_the_iteration_finish_as_the_loop_would_have():
    model, opt, loss_fn, batches = make()
    reference = copy.deepcopy(model)
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["step >= 0"], on_break=lambda s, m: None)
    for x, y in batches:
        dbg.step(x, y)
        ref_opt.zero_grad()
        loss_fn(reference(x), y).backward()
        ref_opt.step()
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert dbg.session.step_count == 4 and dbg.session.cursor.phase == "forward"


def test_changes_in_the_debugger_carry_on_and_rewinds_return_to_the_loop():
    model, opt, loss_fn, batches = make()
    twin, twin_opt, _, _ = make()

    def retry(session, message):
        session.back(iterations=2)         # look at an earlier iteration, recomputed from its batch
        session.set(lr=0.01)               # and go on from there with a smaller step

    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["step == 3 and phase == 'update'"], on_break=retry)
    plain = gdstep.attach(twin, twin_opt, loss_fn, breakpoints=[])
    for x, y in batches:
        dbg.step(x, y)
    for i, (x, y) in enumerate(batches):
        if i == 1:                         # the retried iterations: from the second on
            twin_opt.param_groups[0]["lr"] = 0.01
        plain.step(x, y)
    assert opt.param_groups[0]["lr"] == 0.01
    assert dbg.session.step_count == 4
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


@pytest.mark.parametrize("ci", [False, True])
def test_without_a_terminal_the_records_go_to_a_file(tmp_path, monkeypatch, capsys, ci):
    monkeypatch.setattr(attach_module, "interactive", lambda: False)
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    model, opt, loss_fn, batches = make()
    dbg = gdstep.attach(model, opt, loss_fn, dump_dir=tmp_path, max_dumps=2)
    x, y = batches[0]
    dbg.step(x, y)
    bad = x.clone()
    bad[0, 0] = float("inf")
    dbg.step(bad, y)
    err = capsys.readouterr().err
    path = tmp_path / "gdstep-break-2.npz"
    assert path.exists() and (tmp_path / "gdstep-break-2.txt").exists()
    note, line = err.splitlines()         # why no app, once; then the break's own line
    assert note.startswith("gdstep: CI is set, so the debugger does not open: each break writes" if ci else
                           "gdstep: no terminal to open the debugger in (stdin, stdout and stderr must each be one)")
    assert str(path) in line and "non-finite" in line
    z = np.load(path)
    meta = json.loads(str(z["meta"]))
    assert meta["step"] == 2 and "non-finite" in meta["message"]
    assert np.isinf(z["forward/input"]).any() and not np.isfinite(z["forward/output/0 linear"]).all()
    assert "update/0.weight/new" in z and "backward/grad/2.bias" in z
    text = (tmp_path / "gdstep-break-2.txt").read_text()
    assert "gdstep break" in text and "0.weight" in text
    assert "no more files for non-finite values" in err     # the parameters are NaN now: one file, not one a step
    for _ in range(4):
        dbg.step(x, y)
    assert len(list(tmp_path.glob("*.npz"))) == 1 and capsys.readouterr().err == ""
    model, opt, loss_fn, batches = make()
    again = gdstep.attach(model, opt, loss_fn, ["loss > 0"], dump_dir=tmp_path / "spikes", max_dumps=2)
    for _ in range(4):                     # a breakpoint every step: two files at most, then one line
        again.step(*batches[0])
    assert len(list((tmp_path / "spikes").glob("*.npz"))) == 2
    assert "no more files" in capsys.readouterr().err


def test_a_terminal_opens_the_tui_on_the_session(monkeypatch):
    import gdstep.tui.app as app
    opened = []
    monkeypatch.setattr(attach_module, "interactive", lambda: True)
    monkeypatch.setattr(app, "run_tui", lambda session: opened.append(session.cursor) or 0)
    model, opt, loss_fn, batches = make()
    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["step == 2"])
    for x, y in batches:
        dbg.step(x, y)
    assert opened == [gdstep.records.Cursor(3, 1, "forward")]


async def test_the_tui_renders_an_attached_session_at_its_break():
    from gdstep.tui.app import make_app
    model, opt, loss_fn, batches = make(optimizer=torch.optim.Adam, lr=0.01)
    sessions = []
    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["grad_norm > 0"], on_break=lambda s, m: sessions.append(s))
    dbg.step(*batches[0])
    app = make_app(sessions[0], timestamps=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        await pilot.press("u")
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
    assert sessions[0].record("update") is not None


def test_set_trace_opens_on_the_latest_iteration():
    model, opt, loss_fn, batches = make()
    dbg = gdstep.attach(model, opt, loss_fn, on_break=lambda s, m: None)
    with pytest.raises(GdstepError, match="no iteration"):
        gdstep.set_trace()
    for x, y in batches[:3]:
        dbg.step(x, y)
    seen = []
    gdstep.set_trace(on_break=lambda s, m: seen.append((m, s.step_count, s.record("update").step)))
    assert seen == [("set_trace", 3, 2)]
    dbg.close()
    with pytest.raises(GdstepError, match="no training loop is attached"):
        gdstep.set_trace()


def test_watch_records_the_loops_own_iteration():
    model, opt, loss_fn, batches = make(optimizer=torch.optim.Adam, lr=0.01)
    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=[])
    for x, y in batches * 2:
        opt.zero_grad()
        out = model(x)
        loss = loss_fn(out, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)    # the loop's own business
        assert dbg.watch(loss, y) == pytest.approx(loss.item())
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        opt.step()
    s = dbg.session
    assert s.step_count == 8 and s.cursor.phase == "forward"
    fwd, bwd, upd = s.record("forward"), s.record("backward"), s.record("update")
    assert torch.equal(fwd.outputs[-1], out.detach()) and torch.equal(fwd.inputs, x)
    for name, p in model.named_parameters():
        assert torch.equal(bwd.grads[name], grads[name])               # the clipped gradients the step used
        assert torch.equal(upd.params[name].new, p.detach())
    assert bwd.deltas[-1] is not None and bwd.deltas[-1].shape == out.shape
    assert upd.params["0.weight"].state_after["step"] == 8
    assert "adam" in str(s.explain("0.weight", (0, 0)))


def test_watch_breaks_and_puts_back_what_the_debugger_changed():
    model, opt, loss_fn, batches = make(optimizer=torch.optim.Adam, lr=0.01)
    twin, twin_opt, _, _ = make(optimizer=torch.optim.Adam, lr=0.01)
    seen = []

    def meddle(session, message):
        seen.append((message, session.cursor.phase))
        session.update()                   # the debugger steps on its own...
        session.back(phases=2)             # ...and rewinds

    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["phase == 'backward' and step == 2"], on_break=meddle)
    for m, o, watching in ((model, opt, True), (twin, twin_opt, False)):
        for x, y in batches:
            o.zero_grad()
            loss = loss_fn(m(x), y)
            loss.backward()
            if watching:
                dbg.watch(loss, y)
            o.step()
    assert seen == [("breakpoint 1 hit: phase == 'backward' and step == 2 (phase = backward, step = 2)", "update")]
    for p, q in zip(model.parameters(), twin.parameters()):      # as if the debugger had only looked
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert dbg.session.step_count == 4


def test_attach_refuses_what_it_cannot_use():
    model, opt, loss_fn, _ = make()
    with pytest.raises(GdstepError, match="torch.nn.Module"):
        gdstep.attach("model", opt, loss_fn)
    with pytest.raises(GdstepError, match="torch.optim"):
        gdstep.attach(model, "sgd", loss_fn)
    with pytest.raises(ConditionError, match="no parameter"):
        gdstep.attach(model, opt, loss_fn, breakpoints=["grad_norm(9.weight) > 1"])
    with pytest.raises(GdstepError, match="on_break"):
        gdstep.attach(model, opt, loss_fn, on_break="later")


class Sharded(torch.Tensor):
    """A tensor subclass, as FSDP2's and tensor parallelism's DTensor parameters are."""


def test_attach_refuses_a_model_whose_parameters_are_tensor_subclasses_in_one_line():
    """pytorch/examples' FSDP2 (fully_shard on gloo): attach took its DTensor parameters, and
    the first watch() failed deep inside gdstep (".numpy() is not supported for tensor
    subclasses"); step mode wrote a false non-finite break first."""
    model, _, loss_fn, _ = make()
    model[0].weight = nn.Parameter(model[0].weight.detach().as_subclass(Sharded))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(GdstepError) as e:
        gdstep.attach(model, opt, loss_fn)
    assert str(e.value).startswith("attach: the model's parameter '0.weight' is a Sharded, a tensor subclass (e.g. the DTensor of FSDP2")
    assert "\n" not in str(e.value) and gdstep_hooks(model, opt) == []


def gdstep_hooks(model, opt) -> list:
    """gdstep's hooks on the model's modules, its parameters and the optimizer."""
    from gdstep.backends.detachable import Detachable
    dicts = [d for m in model.modules() for d in (m._forward_pre_hooks, m._forward_hooks)]
    dicts += [opt._optimizer_step_pre_hooks, opt._optimizer_step_post_hooks]
    dicts += [p._post_accumulate_grad_hooks or {} for p in model.parameters()]
    return [h for d in dicts for h in d.values() if type(h) is Detachable]


def test_a_refused_attach_leaves_no_hook_behind():
    model, opt, loss_fn, _ = make()
    with pytest.raises(ConditionError):
        gdstep.attach(model, opt, loss_fn, breakpoints=["grad_norm(9.weight) > 1"])
    assert gdstep_hooks(model, opt) == []


def test_attaching_again_closes_the_debugger_attached_before(capsys):
    """The cell that attaches run twice: the first debugger (in use, or already dropped) is
    closed, said once on stderr, and the loop is recorded by the second alone — which
    records what a single debugger does."""
    model, opt, loss_fn, batches = make(optimizer=torch.optim.Adam, lr=0.05)
    alone = copy.deepcopy(model)
    alone_opt = torch.optim.Adam(alone.parameters(), lr=0.05)
    first = gdstep.attach(model, opt, loss_fn)
    only = gdstep.attach(alone, alone_opt, loss_fn)
    for x, y in batches[:2]:
        attached_iteration("watch", first, model, opt, loss_fn, x, y)
    assert capsys.readouterr().err == ""
    second = gdstep.attach(model, opt, loss_fn)
    assert "attached already" in capsys.readouterr().err
    owners = {id(h.owner) for h in gdstep_hooks(model, opt)}
    assert id(first.backend) not in owners and id(second.backend) in owners    # the first one's hooks are gone
    assert first._step_hooks == []
    steps_first = first.session.step_count
    for x, y in batches:
        attached_iteration("watch", second, model, opt, loss_fn, x, y)
    for x, y in batches[:2] + batches:
        attached_iteration("watch", only, alone, alone_opt, loss_fn, x, y)
    assert first.session.step_count == steps_first              # no longer records
    assert second.session.step_count == len(batches)
    assert list(second.session.history.losses) == list(only.session.history.losses)[-len(batches):]
    third = gdstep.attach(model, opt, loss_fn)                  # once more, the second never closed
    del second
    assert {id(h.owner) for h in gdstep_hooks(model, opt) if h.owner is not None} == {id(third.backend)}
    assert all(not p._post_accumulate_grad_hooks for p in model.parameters())   # (gradients noted as a backward ends)
    third.close()
    assert gdstep_hooks(model, opt) == []


class Wrapper(nn.Module):
    """A model that holds another and calls it (as DistributedDataParallel holds `ddp.module`)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)


@pytest.mark.parametrize("first_on", ["wrapper", "inner"])
def test_attaching_a_model_that_holds_or_is_held_by_an_attached_one_closes_that_one(capsys, first_on):
    """`ddp` attached, then `ddp.module` (or the other way round): the debugger before is
    found through its hooks on the rows they share and closed, and the line says how the
    two models are related; the second records the loop as a debugger alone does."""
    model, opt, loss_fn, batches = make(optimizer=torch.optim.Adam, lr=0.05)
    wrapper = Wrapper(model)
    alone = copy.deepcopy(model)
    alone_opt = torch.optim.Adam(alone.parameters(), lr=0.05)
    only = gdstep.attach(alone, alone_opt, loss_fn)
    first_model, second_model = (wrapper, model) if first_on == "wrapper" else (model, wrapper)
    first = gdstep.attach(first_model, opt, loss_fn)
    for x, y in batches[:2]:
        attached_iteration("watch", first, first_model, opt, loss_fn, x, y)
    capsys.readouterr()
    second = gdstep.attach(second_model, opt, loss_fn)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "that one is closed now" in err
    assert ("Sequential was attached already, as part of the Wrapper that holds it" in err if first_on == "wrapper"
            else "a part of Wrapper (its Sequential) was attached already" in err)
    assert {id(h.owner) for h in gdstep_hooks(wrapper, opt) if h.owner is not None} == {id(second.backend)}
    for x, y in batches:
        attached_iteration("watch", second, second_model, opt, loss_fn, x, y)
    for x, y in batches[:2] + batches:
        attached_iteration("watch", only, alone, alone_opt, loss_fn, x, y)
    assert list(second.session.history.losses) == list(only.session.history.losses)[-len(batches):]
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), alone.parameters()))
    second.close()
    assert gdstep_hooks(wrapper, opt) == []


def test_attaching_again_after_a_caught_break_counts_no_forward_of_the_loops():
    """Step mode, on_break="raise", the break caught, then the code that attaches runs again:
    closing the first debugger finishes the iteration the break left (its model runs), which
    the new debugger does not take for a forward of the loop's (it did: the next watched
    iteration then had "two forwards" and could not be recomputed)."""
    model, opt, loss_fn, batches = make()
    first = gdstep.attach(model, opt, loss_fn, breakpoints=["grad_norm > 0"], on_break="raise")
    with pytest.raises(attach_module.BreakpointHit):
        first.step(*batches[0])
    second = gdstep.attach(model, opt, loss_fn)
    assert second.backend.last_call is None and second.backend._forwards == 0
    for x, y in batches[1:]:
        attached_iteration("watch", second, model, opt, loss_fn, x, y)
    assert not [e for e in second.session.events if e.kind == "inexact"]
    assert second.session.replay_inexact is None


def test_raise_mode_and_attach_stays_callable():
    model, opt, loss_fn, batches = make()
    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["step == 2"], on_break="raise")
    assert callable(gdstep.attach)     # importing gdstep.debugger does not shadow the function
    dbg.step(*batches[0])
    with pytest.raises(attach_module.BreakpointHit) as info:
        dbg.step(*batches[1])
    assert info.value.session is dbg.session and "step == 2" in info.value.message


def test_the_debugger_cannot_run_ahead_of_the_loop():
    model, opt, loss_fn, batches = make()
    seen = []

    def ahead(session, message):
        x, _ = session.backend.batch(session.next_batch_indices())     # views may look at the latest batch
        seen.append(torch.equal(x, batches[1][0]))
        with pytest.raises(GdstepError, match="next batch comes from your training loop"):
            session.forward()

    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["step == 2"], on_break=ahead)
    for x, y in batches:
        dbg.step(x, y)
    assert seen == [True] and dbg.session.step_count == 4


def test_watch_before_backward_is_refused():
    model, opt, loss_fn, batches = make()
    dbg = gdstep.attach(model, opt, loss_fn)
    x, y = batches[0]
    loss = loss_fn(model(x), y)
    with pytest.raises(GdstepError, match="between loss.backward"):
        dbg.watch(loss, y)


def test_a_loop_that_calls_model_forward_itself_trains_and_is_told_in_one_line():
    """`layer.forward(x)` (pytorch/examples' mnist_forward_forward) runs no hook of the model's,
    but its submodule's run: the loop's backward must not fail in gdstep's hooks (it raised an
    IndexError from a δ hook), and watch() says why it sees no forward."""

    class Layer(nn.Linear):
        def forward(self, x):
            return self.relu(super().forward(x))

    torch.manual_seed(0)
    layer = Layer(5, 4)
    layer.relu = nn.ReLU()
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    dbg = gdstep.attach(layer, opt, lambda out, y: out.pow(2).mean())
    x = torch.randn(8, 5)
    loss = layer.forward(x).pow(2).mean()
    loss.backward()                       # gdstep's hooks on the ReLU's output never raise in it
    expected = 2 * (torch.relu(x @ layer.weight.T + layer.bias) * (x @ layer.weight.T + layer.bias > 0)).T @ x / 32
    assert torch.allclose(layer.weight.grad, expected.detach(), atol=1e-6)
    with pytest.raises(GdstepError, match=r"has not run forward since attach \(call it as model\(x\)"):
        dbg.watch(loss, None)
    dbg.close()


@pytest.mark.parametrize("mode", ["step", "watch"])
def test_a_break_file_says_whose_gradients_it_shows(tmp_path, monkeypatch, mode):
    """A break after the loss stands before this iteration's backward: the gradients written
    are the iteration before's, and the summary says so (before, it said "gradients:" alone)."""
    monkeypatch.setattr(attach_module, "interactive", lambda: False)
    model, opt, loss_fn, batches = make()
    dbg = gdstep.attach(model, opt, loss_fn, ['step == 2 and phase == "loss"', 'step == 3 and phase == "backward"'],
                        dump_dir=tmp_path)
    for x, y in batches[:4]:
        attached_iteration(mode, dbg, model, opt, loss_fn, x, y)
    bare, bare_opt, _, _ = make()
    norms = []
    for x, y in batches[:4]:
        bare_opt.zero_grad()
        loss_fn(bare(x), y).backward()
        norms.append(torch.cat([p.grad.flatten() for p in bare.parameters()]).norm().item())
        bare_opt.step()
    texts = sorted(tmp_path.glob("*.txt"), key=lambda p: p.stat().st_mtime_ns)
    assert len(texts) == 2, [p.name for p in texts]
    first, second = texts
    meta = json.loads(str(np.load(str(first).replace(".txt", ".npz"))["meta"]))
    if mode == "watch":                    # written at the break, before this iteration's backward
        assert "backward next" in first.read_text() and meta["grad_step"] == 1
        assert "gradients (iteration 2, the one before: this iteration's backward has not run):" in first.read_text()
    else:                                  # written once dbg.step finished the iteration, as the loop goes on
        assert "forward next" in first.read_text() and meta["grad_step"] == 2
        assert "gradients (iteration 3):" in first.read_text()
    assert "gradients (iteration 4):" in second.read_text()
    written = math.sqrt(sum(v * v for v in meta["grad_norms"].values()))
    assert math.isclose(written, norms[meta["grad_step"]], rel_tol=1e-6)   # that iteration's, as a bare loop's


def _bare_weights(model, opt_cls, batches, loss, steps: int, **kw) -> list:
    """The parameters a bare loop has after `steps` iterations (its own copies of the model)."""
    bare = copy.deepcopy(model)
    opt = opt_cls(bare.parameters(), **kw)
    for x, y in batches[:steps]:
        opt.zero_grad()
        loss(bare(x), y).backward()
        opt.step()
    return [p.detach().clone() for p in bare.parameters()]


@pytest.mark.parametrize("mistake", ["more arguments", "y of other rows"])
def test_a_loss_fn_that_cannot_take_output_and_y_is_said_and_a_rewind_refused_up_front(capsys, mistake):
    """The VAE example's own `loss_function(recon, x, mu, logvar)` given to attach, or gcn's
    criterion with `watch(loss, y[mask])` where the loop takes the loss of `output[mask]`:
    watch mode never needs loss_fn while the loop runs, so it is tried once, its error said
    once, and a handler's rewind is refused before anything moves (it failed halfway, the
    recomputation calling it, and left the loop on the rewound weights: found running
    pytorch/examples' vae and gcn in watch mode)."""
    model, _, _, batches = make()
    start = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    mask = torch.arange(2, 8)

    def loss_function(out, y, weight):        # takes more than (output, y)
        return weight * ((out - y) ** 2).mean()

    def criterion(out, y):                    # the rows of y must match the output's
        if out.shape != y.shape:
            raise ValueError(f"Expected input batch_size ({out.shape[0]}) to match target batch_size ({y.shape[0]})")
        return ((out - y) ** 2).mean()

    refused = []

    def handler(session, message):
        try:
            session.back(iterations=1)
        except GdstepError as e:
            refused.append(str(e))

    more = mistake == "more arguments"
    loop_loss = (lambda out, y: loss_function(out, y, 1.0)) if more else (lambda out, y: criterion(out[mask], y[mask]))
    dbg = gdstep.attach(model, opt, loss_function if more else criterion, breakpoints=["step == 3"], on_break=handler)
    for x, y in batches:
        opt.zero_grad()
        loss = loop_loss(model(x), y)
        loss.backward()
        dbg.watch(loss, y if more else y[mask])
        opt.step()
    assert len(refused) == 1 and "cannot recompute" in refused[0] and "loss_fn(output, y)" in refused[0]
    said = [e.message for e in dbg.session.events if "fails as loss_fn(output, y)" in e.message]
    assert len(said) == 1 and ("weight" in said[0] if more else "batch_size" in said[0])
    assert capsys.readouterr().err.count("fails as loss_fn(output, y)") == 1
    bare_loss = (lambda o, y: loss_function(o, y, 1.0)) if more else (lambda o, y: criterion(o[mask], y[mask]))
    expected = _bare_weights(start, torch.optim.Adam, batches, bare_loss, len(batches), lr=0.05)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), expected))


def test_a_loss_fn_that_differentiates_is_checked_with_gradients_and_its_iterations_recompute_exactly():
    """A loss with a gradient penalty on the output (torch.autograd.grad inside) fails under
    no_grad: watch mode tries it again with gradients, finds the loop's loss, and keeps its
    iterations lean; a rewind recomputes one to the bit."""
    def loss_fn(out, y):
        g, = torch.autograd.grad((out ** 2).sum(), out, create_graph=True)
        return nn.functional.mse_loss(out, y) + 0.01 * (g ** 2).mean()

    model, _, _, batches = make()
    start = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    seen = []

    def look(s, message):
        s.back(iterations=2)
        seen.append(s.record("loss").value)

    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["step == 3"], on_break=look)
    losses, lean = [], []
    for x, y in batches:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        dbg.watch(loss, y)
        lean.append(dbg._lean_now)
        losses.append(loss.item())
        opt.step()
    assert all(lean) and seen == [losses[0]]       # (back from after update 3 to after update 1)
    assert not [e for e in dbg.session.events if e.kind == "inexact"]
    expected = _bare_weights(start, torch.optim.Adam, batches, loss_fn, len(batches), lr=0.05)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), expected))
    dbg.close()


def test_when_the_way_back_to_the_loop_raises_the_loops_tensors_are_still_put_back():
    """A handler rewinds, then the recomputation back to where the loop stands raises (here the
    loss_fn, broken meanwhile): the error reaches the loop, and its parameters are its own —
    before, the put-back was skipped and the loop went on from the rewound weights."""
    model, opt, _, batches = make(optimizer=torch.optim.Adam, lr=0.05)
    start = copy.deepcopy(model)
    broken = []

    def loss_fn(out, y):
        if broken:
            raise RuntimeError("the loss broke")
        return ((out - y) ** 2).mean()

    def handler(session, message):
        session.back(iterations=1)
        broken.append(True)

    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["step == 2"], on_break=handler)
    stepped = 0
    with pytest.raises(RuntimeError, match="the loss broke"):
        for x, y in batches:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            dbg.watch(loss, y)
            stepped += 1          # the break comes after the second update, out of optimizer.step()
            opt.step()
    assert stepped == 2
    broken.clear()
    expected = _bare_weights(start, torch.optim.Adam, batches, loss_fn, stepped, lr=0.05)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), expected))


def test_attach_before_a_lazy_modules_first_forward_is_refused_in_one_line():
    """A LazyLinear's weight is made by its first forward: attach before it failed with
    torch's "Can't access the shape of an uninitialized parameter" from deep inside."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.LazyLinear(4), nn.Tanh(), nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(GdstepError, match=r"^attach: the model's parameter '0.weight' is not made yet \(a lazy"):
        gdstep.attach(model, opt, nn.MSELoss())
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    model(x)                                  # made: attach now takes it, and steps as torch does
    dbg = gdstep.attach(model, opt, nn.MSELoss())
    expected = [p.detach() - 0.1 * g for p, g in zip(model.parameters(), torch.autograd.grad(
        nn.functional.mse_loss(model(x), y), list(model.parameters())))]
    dbg.step(x, y)
    assert all(torch.allclose(p, q, rtol=1e-6, atol=1e-7) for p, q in zip(model.parameters(), expected))
    dbg.close()


def test_attach_refuses_a_model_that_makes_sparse_gradients_in_one_line():
    """nn.Embedding(sparse=True): attach took it, and the first watch() or dbg.step raised
    torch's "Could not run 'aten::linalg_vector_norm' ... 'SparseCPU'" into the loop."""
    model = nn.Sequential(nn.Embedding(10, 4, sparse=True), nn.Flatten(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(GdstepError, match=r"^attach: '0' makes sparse gradients \(sparse=True\)"):
        gdstep.attach(model, opt, nn.MSELoss())
    assert gdstep_hooks(model, opt) == []


def test_attach_to_a_model_whose_layers_are_in_a_plain_list_is_refused_in_one_line():
    """pytorch/examples' mnist_forward_forward keeps its layers in a plain list: the model
    registers no parameter, and attach took it with an optimizer of the layers' parameters
    without a word (every record empty). So with an optimizer of another model's."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = [nn.Linear(4, 4), nn.Linear(4, 2)]

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return x

    net = Net()
    opt = torch.optim.SGD([p for layer in net.layers for p in layer.parameters()], lr=0.1)
    with pytest.raises(GdstepError, match=r"^attach: the model has no parameters \(layers kept in a plain list"):
        gdstep.attach(net, opt, nn.CrossEntropyLoss())
    other = nn.Linear(2, 2)
    with pytest.raises(GdstepError, match=r"^attach: the model holds none of the parameters the optimizer trains"):
        gdstep.attach(nn.Linear(2, 2), torch.optim.SGD(other.parameters(), lr=0.1), nn.MSELoss())
    assert not net._forward_hooks and not net._forward_pre_hooks        # refused before any hook

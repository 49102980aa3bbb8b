"""Models whose forward does more than compute its output, and loops that touch `.grad`
around a caught break, under attach mode: each loop ends with a bare loop's weights, bit for
bit, and never raises because of gdstep. (Found by running such loops under attach mode:
activation checkpointing, an Embedding with max_norm, a torch.compile'd module, in-place
zero_grad after a handler read the records.)"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import gdstep
from attach_loop import attached_iteration


class Checkpointed(nn.Module):
    """A block run through torch.utils.checkpoint: its forward runs again in the backward."""

    def __init__(self, reentrant: bool):
        super().__init__()
        self.reentrant = reentrant
        self.inp, self.out = nn.Linear(4, 8), nn.Linear(8, 1)
        self.block = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Dropout(0.3))

    def forward(self, x):
        return self.out(checkpoint(self.block, self.inp(x), use_reentrant=self.reentrant))


class LaterCheckpointed(Checkpointed):
    """Checkpointed from its third iteration on (as gradient_checkpointing_enable() mid-run),
    with a gain no optimizer of gdstep's holds (the loop steps it with its own)."""

    def __init__(self):
        super().__init__(reentrant=True)
        self.on, self.calls = False, 0
        self.gain = nn.Parameter(torch.ones(1))

    def forward(self, x):
        h = self.inp(x)
        h = checkpoint(self.block, h, use_reentrant=True) if self.on else self.block(h)
        return self.out(h) * self.gain


class Renormed(nn.Module):
    """An Embedding with max_norm: every forward writes the rows it looks up, in place."""

    def __init__(self):
        super().__init__()
        self.emb, self.out = nn.Embedding(40, 16, max_norm=1.0), nn.Linear(16, 6)

    def forward(self, x):
        return self.out(torch.tanh(self.emb(x))).reshape(-1, 6)


def batches(n: int = 6, tokens: bool = False):
    g = torch.Generator().manual_seed(1)
    if tokens:
        return [(torch.randint(0, 40, (8, 12), generator=g), torch.randint(0, 6, (96,), generator=g)) for _ in range(n)]
    return [(torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)) for _ in range(n)]


def same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def train(model, loss_fn, data, mode: str, breakpoints=(), handler=None, evaluate: bool = False, call=None,
          between=None):
    """The loop: bare, or under attach in `mode` ("step" or "watch"); a caught break calls
    `handler(hit)`; with `evaluate`, an eval-mode forward after every iteration; `between`
    runs between backward (and watch) and the step. Returns the debugger (None when bare)."""
    torch.manual_seed(7)              # dropout draws the same in every loop
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    call = call or model
    dbg = None if mode == "bare" else gdstep.attach(model, opt, loss_fn, breakpoints=list(breakpoints),
                                                     on_break="raise")
    def caught(fn, *args):
        try:
            fn(*args)
        except gdstep.BreakpointHit as hit:
            if handler is not None:
                handler(hit)

    for x, y in data:
        if mode == "step":
            caught(dbg.step, x, y)
        else:
            opt.zero_grad()
            loss = loss_fn(call(x), y)
            loss.backward()
            if dbg is not None:
                caught(dbg.watch, loss, y)      # a break in watch(): the loop goes on to its step
            if between is not None:
                between()
            caught(opt.step)                    # one in the update: raised once the step is done
        if evaluate:
            model.eval()
            with torch.no_grad():
                call(x)
            model.train()
    if dbg is not None:
        dbg.close()
    return dbg


def read_everything(hit):
    for phase in ("forward", "loss", "backward", "update"):
        hit.session.record(phase)


@pytest.mark.parametrize("reentrant", [False, True])
@pytest.mark.parametrize("mode", ["step", "watch"])
def test_activation_checkpointing_trains_as_a_bare_loop_through_breaks_reads_and_evaluations(reentrant, mode):
    """A reentrant checkpoint refuses torch.autograd.grad (gdstep takes loss.backward() for
    it); a step-mode break left before its backward finishes it in the modes the iteration
    ran in, not the eval mode the loop's evaluation set (the block's forward runs again)."""
    torch.manual_seed(0)
    model = Checkpointed(reentrant)
    bare = copy.deepcopy(model)
    data = batches()
    train(bare, nn.MSELoss(), data, "bare", evaluate=True)
    dbg = train(model, nn.MSELoss(), data, mode, breakpoints=['step == 2 and phase == "loss"', "step == 4"],
                handler=read_everything, evaluate=True)
    assert same(model, bare)
    assert dbg.session.replay_inexact is None


def test_a_forward_that_renormalises_its_embedding_in_place_is_not_run_once_more_by_gdstep():
    """gdstep's first call tries the model once, to learn which rows produce an output: an
    Embedding's max_norm wrote its rows then, before: the weights differed from the first step."""
    torch.manual_seed(0)
    model = Renormed()
    bare = copy.deepcopy(model)
    data = batches(tokens=True)
    train(bare, nn.CrossEntropyLoss(), data, "bare")
    dbg = train(model, nn.CrossEntropyLoss(), data, "step")
    assert same(model, bare)
    assert dbg.session.replay_inexact is None


def test_a_compiled_module_attached_in_watch_mode_runs_the_loops_forward():
    """gdstep's hooks run outside the compiled graph (before: dynamo traced them into the loop's
    forward and raised "already tracked for mutation"). aot_eager: dynamo's tracing, no C++
    compiler needed."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
    bare = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(4)]
    torch._dynamo.reset()
    train(bare, nn.functional.cross_entropy, data, "bare", call=torch.compile(bare, backend="aot_eager"))
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager")
    dbg = train(compiled, nn.functional.cross_entropy, data, "watch")
    assert same(model, bare)
    assert len(dbg.session.history.losses) == len(data)


def test_a_model_compiled_and_run_before_attach_is_compiled_again_with_gdsteps_hooks(capsys):
    """A warm-up call of the compiled model (forward and backward) before attach: its compiled
    code has no hooks of gdstep's, which torch does not guard on, so every watch() said the
    model had not run forward, and raised into the loop."""
    def run(attached: bool):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
        g = torch.Generator().manual_seed(1)
        data = [(torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(4)]
        torch._dynamo.reset()
        compiled = torch.compile(model, backend="aot_eager")
        nn.functional.cross_entropy(compiled(data[0][0]), data[0][1]).backward()     # the warm-up
        model.zero_grad()
        dbg = train(compiled, nn.functional.cross_entropy, data, "watch") if attached else \
            train(model, nn.functional.cross_entropy, data, "bare", call=compiled)
        return model, dbg

    bare, _ = run(False)
    model, dbg = run(True)
    assert same(model, bare) and len(dbg.session.history.losses) == 4
    assert capsys.readouterr().err.count("the model is compiled (torch.compile)") == 1


@pytest.mark.parametrize("read", [False, True])
def test_step_mode_a_loop_that_zeroes_its_gradients_in_place_after_a_caught_break_updates_as_a_bare_loop(read):
    """The break stands after the backward; the loop catches it (its handler may read the
    records) and calls zero_grad(set_to_none=False) before its next dbg.step. The update the
    break left keeps its own gradients: before, after a read, it ran on the zeroed ones."""
    def run(attached: bool):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        dbg = gdstep.attach(model, opt, nn.functional.cross_entropy, on_break="raise",
                            breakpoints=['step == 1 and phase == "backward"']) if attached else None
        g = torch.Generator().manual_seed(1)
        for _ in range(5):
            x, y = torch.randn(16, 8, generator=g), torch.randint(0, 3, (16,), generator=g)
            opt.zero_grad(set_to_none=False)
            if dbg is None:
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
                continue
            try:
                dbg.step(x, y)
            except gdstep.BreakpointHit as hit:
                if read:
                    assert hit.session.grads
                    read_everything(hit)
        if dbg is not None:
            dbg.close()
            assert dbg.session.replay_inexact is None
        return model

    assert same(run(True), run(False))


def test_watch_mode_says_once_that_the_loop_clips_its_gradients_after_watch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    dbg = train(model, nn.MSELoss(), batches(), "watch", between=lambda: nn.utils.clip_grad_norm_(model.parameters(), 0.01))
    said = [e.message for e in dbg.session.events if "changes the gradients" in e.message]
    assert len(said) == 1 and said[0].startswith("iteration 1:"), said


@pytest.mark.parametrize("mode", ["step", "watch"])
def test_a_model_that_turns_to_a_reentrant_checkpoint_mid_run_goes_on_as_a_bare_loop(mode, capsys):
    """The backward autograd.grad refuses is taken again, from the iteration's start, by
    loss.backward(); a recomputation's backward gives back the .grad of the parameter no
    optimizer of gdstep's holds (watch mode: the loop steps it with its own optimizer, and a
    read of the records added to it before). Step mode says once that it leaves that .grad."""
    def run(attached: bool):
        torch.manual_seed(0)
        model = LaterCheckpointed()
        opt = torch.optim.SGD([p for n, p in model.named_parameters() if n != "gain"], lr=0.05)
        aux = torch.optim.SGD([model.gain], lr=0.05)
        dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=['step == 4 and phase == "loss"'],
                            on_break="raise") if attached else None

        def caught(fn, *args):
            try:
                fn(*args)
            except gdstep.BreakpointHit as hit:
                read_everything(hit)

        torch.manual_seed(7)
        for i, (x, y) in enumerate(batches()):
            model.on = i >= 2
            opt.zero_grad()
            aux.zero_grad()
            if mode == "step" and dbg is not None:
                caught(dbg.step, x, y)
                continue
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            if dbg is not None:
                caught(dbg.watch, loss, y)
            opt.step()
            if mode == "watch":
                aux.step()
        if dbg is not None:
            dbg.close()
            assert dbg.session.replay_inexact is None
        return model

    attached, bare = run(True), run(False)
    said = capsys.readouterr().err
    if mode == "watch":
        assert same(attached, bare) and "asks for one" not in said
    else:                # the gain is the loop's to step in watch mode; here, no optimizer steps it
        assert all(torch.equal(p, q) for (n, p), q in zip(attached.named_parameters(), bare.parameters()) if n != "gain")
        assert said.count("gain asks for one, but the optimizer does not hold it") == 1


def test_a_buffer_made_under_inference_mode_does_not_stop_the_first_step():
    class Table(Renormed):
        def __init__(self):
            super().__init__()
            with torch.inference_mode():
                self.register_buffer("table", torch.arange(40.0))

    torch.manual_seed(0)
    model = Table()
    bare = copy.deepcopy(model)
    data = batches(tokens=True)
    train(bare, nn.CrossEntropyLoss(), data, "bare")
    train(model, nn.CrossEntropyLoss(), data, "step")
    assert same(model, bare)



class Centred(nn.Module):
    """An MLP that subtracts the data's mean, computed under inference_mode and kept as a
    buffer: an inference tensor, which has no version counter and may be written in
    inference mode only."""

    def __init__(self, mean):
        super().__init__()
        self.register_buffer("mean", mean)
        self.inp, self.out = nn.Linear(4, 8), nn.Linear(8, 3)

    def forward(self, x):
        return self.out(torch.relu(self.inp(x - self.mean)))


@pytest.mark.parametrize("mode", ["step", "watch"])
def test_a_break_that_reads_and_rewinds_a_model_with_an_inference_mode_buffer_goes_on_as_a_bare_loop(mode):
    """A break's handler reads a record (recomputed from a checkpoint) and rewinds: the
    inference-mode buffer is written back where torch allows it, and the loop ends with a
    bare loop's weights and buffer, bit for bit."""
    g = torch.Generator().manual_seed(1)
    data = torch.randn(96, 4, generator=g)
    targets = torch.randint(0, 3, (96,), generator=g)
    with torch.inference_mode():
        mean = data.mean(0)
    torch.manual_seed(0)
    model = Centred(mean)
    bare = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    bare_opt = torch.optim.Adam(bare.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()
    seen = {}

    def look(s, message):
        seen["loss"] = s.record("loss").value
        s.back(iterations=2)
        seen["at"] = s.step_count

    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["step == 4"], on_break=look)
    for i in range(6):
        x, y = data[16 * i:16 * (i + 1)], targets[16 * i:16 * (i + 1)]
        attached_iteration(mode, dbg, model, opt, loss_fn, x, y)
        bare_opt.zero_grad()
        loss_fn(bare(x), y).backward()
        bare_opt.step()
    dbg.close()
    assert seen["at"] == 2 and math.isfinite(seen["loss"])
    assert model.mean.is_inference()
    assert same(model, bare)

def same_or_both_nan(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.allclose(p, q, rtol=0, atol=0, equal_nan=True)
               for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def mlp_loop(mode: str, edit, n: int = 8, adam: bool = False, breakpoints=(), first_held: bool = True,
             first_frozen: bool = False):
    """An MLP trained `n` iterations, bare or attached (breaks caught); `edit(model, i, opt)`
    runs before iteration i and may return the batch's new dtype. Returns (model, the
    iterations that broke, the debugger)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 2))
    model[0].requires_grad_(not first_frozen)
    held = model.parameters() if first_held else model[2].parameters()
    opt = torch.optim.Adam(held, lr=0.01) if adam else torch.optim.SGD(held, lr=0.01)
    dbg = None if mode == "bare" else gdstep.attach(model, opt, nn.MSELoss(), on_break="raise",
                                                     breakpoints=list(breakpoints))
    g = torch.Generator().manual_seed(1)
    hits = []
    for i in range(n):
        x, y = torch.randn(16, 4, generator=g), torch.randn(16, 2, generator=g)
        dtype = edit(model, i, opt)
        if dtype is not None:
            x, y = x.to(dtype), y.to(dtype)
        try:
            if mode == "step":
                dbg.step(x, y)
                continue
            opt.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            if dbg is not None:
                dbg.watch(loss, y)
        except gdstep.BreakpointHit:
            hits.append(i)
        if mode != "step":
            opt.step()
    if dbg is not None:
        dbg.close()
    return model, hits, dbg


@pytest.mark.parametrize("mode", ["step", "watch"])
def test_a_model_moved_to_float64_mid_run_is_attached_afresh(mode, capsys):
    """model.double() after three iterations: the iterations before cannot be recomputed on
    it (before, the first recomputation raised torch's "mat1 and mat2 must have the same
    dtype" out of the loop's step or watch)."""
    def edit(model, i, opt):
        if i == 3:
            model.double()
        return torch.float64 if i >= 3 else None

    bare, _, _ = mlp_loop("bare", edit)
    model, hits, dbg = mlp_loop(mode, edit)
    assert same(model, bare) and hits == []
    assert capsys.readouterr().err.count("float32 on cpu → float64 on cpu") == 1
    assert dbg.session.step_count == (5 if mode == "step" else 4)     # watch: from the iteration after


@pytest.mark.parametrize("change", ["freeze", "unfreeze", "add_param_group"])
@pytest.mark.parametrize("mode", ["step", "watch"])
def test_a_loop_that_changes_which_parameters_train_is_attached_afresh_and_trains_as_bare(mode, change, capsys):
    """Progressive unfreezing and freezing mid-run: the backend's gradients, records and
    checkpoints are made for the parameters that trained at attach. Before, freezing raised
    torch's "One of the differentiated Tensors does not require grad" out of dbg.step, and a
    layer unfrozen (or added to the optimizer) never moved in step mode, silently."""
    def edit(model, i, opt):
        first = list(model[0].parameters())
        if i == 3 and change == "freeze":
            model[0].requires_grad_(False)
        if i == 3 and change == "unfreeze":
            model[0].requires_grad_(True)
        if i == 3 and change == "add_param_group":
            model[0].requires_grad_(True)
            opt.add_param_group({"params": first, "lr": 0.05})
        return None

    held = change != "add_param_group"          # (else the first layer joins the optimizer at iteration 4)
    frozen = change != "freeze"                  # (else it trains from the start, and stops at iteration 4)
    bare, _, _ = mlp_loop("bare", edit, adam=True, first_held=held, first_frozen=frozen)
    model, hits, dbg = mlp_loop(mode, edit, adam=True, first_held=held, first_frozen=frozen)
    assert same(model, bare) and hits == []
    assert dbg.session.step_count == (5 if mode == "step" else 4)     # watch: from the iteration after
    err = capsys.readouterr().err
    which = "stopped" if change == "freeze" else "started"
    assert err.count(f"iteration 4: the loop changed which parameters train (0.weight, 0.bias {which} training") == 1
    assert "so gdstep attached afresh" in err


def test_step_mode_leaves_a_layer_frozen_before_attach_no_stale_gradient_to_step_with():
    """Trained, then frozen without zero_grad(), then attached: the optimizer (momentum)
    still holds the layer and its stale .grad; a bare loop's zero_grad() clears it, and
    dbg.step, which stands for zero_grad() too, moved the frozen layer every step."""
    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x, y = torch.randn(16, 4), torch.randn(16, 1)
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        model[0].requires_grad_(False)
        return model, opt, x, y

    bare, opt, x, y = make()
    for _ in range(3):
        opt.zero_grad()
        nn.functional.mse_loss(bare(x), y).backward()
        opt.step()
    model, opt, x, y = make()
    dbg = gdstep.attach(model, opt, nn.MSELoss())
    for _ in range(3):
        dbg.step(x, y)
    assert same(model, bare)
    dbg.close()


@pytest.mark.parametrize("mode", ["step", "watch"])
def test_a_non_finite_weight_written_through_data_breaks_and_is_kept_as_the_loop_left_it(mode):
    """`.data` moves no version counter, so the checkpoint does not hold the loop's -inf:
    before, step mode's search for the culprit recomputed the iteration without it, found
    nothing, and went on from the recomputed values, the loop's -inf undone, unsaid."""
    def edit(model, i, opt):
        if i == 6:
            model[0].bias.data[0] = -math.inf          # row 0 is -inf, ReLU makes it 0: the loss stays finite

    bare, _, _ = mlp_loop("bare", edit)
    model, hits, dbg = mlp_loop(mode, edit)
    assert same_or_both_nan(model, bare) and model[0].bias[0].item() == -math.inf
    assert hits[:1] == [6]
    said = [e.message for e in dbg.session.events if e.kind == "nonfinite"]
    assert said and "layer 0 linear output" in said[0], said


@pytest.mark.parametrize("key, value, culprit", [("exp_avg_sq", math.inf, "0.weight state exp_avg_sq[0,0]"),
                                                  ("exp_avg", math.nan, "nan in 0.weight[0,0]")])
def test_an_optimizer_state_made_non_finite_through_data_is_kept_and_named_after_the_update(key, value, culprit, capsys):
    """Adam's v set to inf through .data: the bare loop goes on finite (that element's step
    is m/inf = 0); its m set to nan: the weight goes nan, and everything after it. The
    update's test fails and the recomputation is finite: before, the culprit search put the
    recomputed values in their place, the loop's values undone and the parameters given
    one update too many; and a later recomputation from an older checkpoint lost them."""
    def edit(model, i, opt):
        if i == 5:
            opt.state[model[0].weight][key].data[0, 0] = value

    bare, _, _ = mlp_loop("bare", edit, adam=True)
    model, hits, dbg = mlp_loop("step", edit, adam=True)
    assert same_or_both_nan(model, bare) and hits[:1] == [5]
    said = [e.message for e in dbg.session.events if e.kind == "nonfinite"]
    assert culprit in said[0] and "your loop's own values kept after update" in said[0], said
    assert "changed through .data" in capsys.readouterr().err


def test_a_model_moved_while_a_caught_break_waits_for_its_update_does_not_stop_the_loop(capsys):
    """The break stands at the loss; the loop catches it and calls model.double() before its
    next dbg.step. That update cannot be made on the moved model (its checkpoint holds
    float32): said in one line, not torch's dtype error out of the loop."""
    def edit(model, i, opt):
        if i == 3:
            model.double()
        return torch.float64 if i >= 3 else None

    model, hits, dbg = mlp_loop("step", edit, breakpoints=['step == 2 and phase == "loss"'])
    err = capsys.readouterr().err
    assert hits == [2, 5]            # (the session attached afresh at iteration 4 counts its steps from there)
    assert "its update, left at its break, was not made" in err and "attached afresh" in err
    assert model[0].weight.dtype == torch.float64 and dbg.session.step_count == 5


@pytest.mark.parametrize("edit", ["load_state_dict", "reset_running_stats"])
@pytest.mark.parametrize("on_break", ["raise", "function"])
def test_step_mode_keeps_the_loops_own_change_of_batchnorms_statistics_through_a_later_break(edit, on_break):
    """The loop rolls the model back to an earlier state_dict (or resets BatchNorm's running
    statistics) between two dbg.step calls; a break later recomputes the iteration from a
    checkpoint: the buffers stay as the loop made them and ran them on (before: they went
    back to gdstep's, num_batches_tracked 6 → 12, running_mean off by 0.1, unsaid)."""
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(16, 32, 8, generator=g), torch.randint(0, 3, (16, 32), generator=g)

    def run(attached: bool):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        handler = "raise" if on_break == "raise" else (lambda session, message: session.record("forward"))
        dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss(), breakpoints=['phase == "loss" and step == 11'],
                            on_break=handler) if attached else None
        tracked = []
        for i in range(16):
            try:
                attached_iteration("bare" if dbg is None else "step", dbg, model, opt, nn.functional.cross_entropy,
                                   xs[i], ys[i])
            except gdstep.BreakpointHit:
                pass
            if i == 4:
                kept = copy.deepcopy(model.state_dict())
            if i == 9:
                model.load_state_dict(kept) if edit == "load_state_dict" else model[1].reset_running_stats()
            tracked.append(int(model[1].num_batches_tracked))
        if dbg is not None:
            dbg.close()
        return model, tracked, dbg

    bare_model, bare_tracked, _ = run(False)
    model, tracked, dbg = run(True)
    assert tracked == bare_tracked
    assert same(model, bare_model)
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), bare_model.buffers()))
    told = [e.message for e in dbg.session.events if "in place after the update" in e.message]
    assert told and "1.running_mean" in told[0]


def _rewind_and_back(session, message):
    at = session.position
    session.back(iterations=2)
    session.seek(at)


@pytest.mark.parametrize("edit", ["assignment", "load_state_dict(assign=True)"])
@pytest.mark.parametrize("mode", ["step", "watch"])
def test_buffers_the_loop_replaces_are_followed_so_breaks_that_rewind_leave_them_as_a_bare_loops(mode, edit):
    """The loop replaces BatchNorm's statistics by new tensors (an assignment, or a
    state_dict of buffers loaded with assign=True) between two iterations; later breaks
    rewind and come back. The model's own (new) buffers end as a bare loop's, and the
    change is said once as the loop's (before: gdstep kept writing the old tensors, and its
    recomputations moved the new ones, unsaid: running_mean off by 0.1)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    bare = copy.deepcopy(model)
    loss_fn = nn.CrossEntropyLoss()
    opt, bare_opt = torch.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD(bare.parameters(), lr=0.1)
    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["step >= 5"], on_break=_rewind_and_back)
    g = torch.Generator().manual_seed(1)
    for i in range(9):
        x, y = torch.randn(16, 4, generator=g), torch.randint(0, 3, (16,), generator=g)
        attached_iteration(mode, dbg, model, opt, loss_fn, x, y)
        attached_iteration("bare", None, bare, bare_opt, loss_fn, x, y)
        if i == 2:
            for m in (model, bare):
                fresh = {"1.running_mean": torch.zeros(8), "1.running_var": torch.full((8,), 2.0)}
                if edit == "assignment":
                    m[1].running_mean, m[1].running_var = fresh["1.running_mean"], fresh["1.running_var"]
                else:
                    m.load_state_dict(fresh, strict=False, assign=True)
    assert sum(e.kind == "breakpoint" for e in dbg.session.events) >= 4
    for (name, a), b in zip(model.state_dict().items(), bare.state_dict().values()):
        assert torch.equal(a, b), name
    told = [e.message for e in dbg.session.events if "in place after the update" in e.message]
    assert len(told) == 1 and "1.running_mean" in told[0] and "1.running_var" in told[0]
    assert dbg.session.replay_inexact is None
    dbg.close()


def test_an_evaluated_transformer_encoder_is_said_to_lose_its_fast_path_once(capsys):
    """torch runs nn.TransformerEncoderLayer's fused fast path in eval mode only where no
    forward hook is on it; gdstep's are, so the loop's evaluation differs from an unattached
    one in the last bits. Said once, where the loop evaluates such a layer."""
    class Classifier(nn.Module):            # a model of its own: gdstep hooks the layers inside the encoder
        def __init__(self):
            super().__init__()
            layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True)
            self.enc = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.enc(x).mean(1))

    torch.manual_seed(0)
    model = Classifier()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss())
    x, y = torch.randn(6, 4, 8), torch.randint(0, 3, (6,))
    for _ in range(2):
        dbg.step(x, y)
    assert "fast path" not in capsys.readouterr().err          # training: never the fast path, nothing to say
    model.eval()
    with torch.no_grad():
        model(x)
        model(x)
    err = capsys.readouterr().err
    assert err.count("torch's fast path for it is off while gdstep's hooks are on the model") == 1
    assert sum("fast path" in e.message for e in dbg.session.events) == 1
    dbg.close()


def test_a_transformer_encoder_without_batch_first_is_not_said_to_lose_a_fast_path(capsys):
    """batch_first=False (word_language_model's TransformerModel): torch takes no fast path
    for the layer, hooked or not, so the evaluation equals an unattached one bit for bit,
    and nothing is said (it was)."""
    class Classifier(nn.Module):            # a model of its own: gdstep hooks the layers inside the encoder
        def __init__(self):
            super().__init__()
            layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0)
            self.enc = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.enc(x).mean(0))

    torch.manual_seed(0)
    model = Classifier()
    bare = copy.deepcopy(model).eval()
    dbg = gdstep.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss())
    x, y = torch.randn(4, 6, 8), torch.randint(0, 3, (6,))
    dbg.step(x, y)
    bare.load_state_dict(model.state_dict())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), bare(x))
    assert "fast path" not in capsys.readouterr().err
    dbg.close()


def test_step_mode_keeps_batchnorms_statistics_a_train_mode_forward_between_steps_moved():
    """The loop measures its training accuracy with a forward in train mode under no_grad
    between two dbg.step calls: BatchNorm's kernel moves its running mean and variance
    without their version counters (num_batches_tracked's moves): all the buffers are kept
    as the loop's change, so a later break's recomputation keeps them."""
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(10, 32, 8, generator=g), torch.randint(0, 3, (10, 32), generator=g)

    def run(attached: bool):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss(), breakpoints=['phase == "loss" and step == 8'],
                            on_break=lambda session, message: session.back(iterations=3)) if attached else None
        for i in range(10):
            attached_iteration("bare" if dbg is None else "step", dbg, model, opt, nn.functional.cross_entropy,
                               xs[i], ys[i])
            if i == 6:
                with torch.no_grad():
                    model(xs[i])                     # train mode: the statistics move
        if dbg is not None:
            dbg.close()
        return model

    model, plain = run(True), run(False)
    assert same(model, plain)
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), plain.buffers()))


class OwnTrain(nn.Linear):
    """A layer whose `train` is a training routine of its own (pytorch/examples'
    mnist_forward_forward: `Layer.train(x_pos, x_neg)`), so `module.eval()` fails on it."""

    def train(self, x_pos, x_neg):
        raise AssertionError("the loop never calls it here")


class WithOwnTrain(nn.Module):
    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.layer = OwnTrain(8, 4)

    def forward(self, x):
        return self.layer(self.drop(x))


@pytest.mark.parametrize("mode", ["step", "watch"])
def test_a_module_that_overrides_train_stays_in_training_mode_and_trains_as_a_bare_loop(mode):
    """gdstep's own forward in eval mode (which rows run, the evaluation) called model.eval(),
    which reached the layer's own train(), raised half way (swallowed) and left the model and
    its Dropout in eval mode: training went on without dropout, silently."""
    def run(attached: bool):
        torch.manual_seed(0)
        model = WithOwnTrain()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(1)
        data = [(torch.randn(16, 8, generator=g), torch.randn(16, 4, generator=g)) for _ in range(4)]
        dbg = gdstep.attach(model, opt, nn.MSELoss()) if attached else None
        torch.manual_seed(2)
        for x, y in data:
            if attached and mode == "step":
                dbg.step(x, y)
            else:
                opt.zero_grad()
                loss = nn.functional.mse_loss(model(x), y)
                loss.backward()
                if attached:
                    dbg.watch(loss, y)
                opt.step()
            assert model.training and model.drop.training
        if attached:
            loss, _ = dbg.session.evaluate()          # gdstep's own forward in eval mode, and back
            assert math.isfinite(loss) and model.training and model.drop.training and model.layer.training
            dbg.close()
        return [p.detach().clone() for p in model.parameters()]

    assert all(torch.equal(p, q) for p, q in zip(run(True), run(False)))


class Siamese(nn.Module):
    """pytorch/examples' siamese_network in small: one trunk run on each image."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(6, 5), nn.ReLU())
        self.fc = nn.Linear(10, 1)

    def forward(self, a, b):
        return torch.sigmoid(self.fc(torch.cat((self.trunk(a), self.trunk(b)), 1)))


@pytest.mark.parametrize("mode", ["step", "watch", "watch, full records"])
def test_a_layer_called_twice_in_one_forward_is_said_once_and_its_records_are_its_last_call(mode):
    """Its output and its δ are both the last call's: in full records (watch mode's δ caught
    by hooks as backward runs, which reaches the last call first) as in recomputed ones."""
    torch.manual_seed(0)
    model = Siamese()
    start = copy.deepcopy(model)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g), torch.tensor([1., 0., 1., 0.]))
            for _ in range(3)]
    loss_fn = lambda out, y: nn.functional.binary_cross_entropy(out.squeeze(1), y)   # noqa: E731
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []

    def look(s, message):
        fwd, bwd = s.record("forward"), s.record("backward")
        k = fwd.layer_names.index("trunk.0 linear")
        seen.append((fwd.outputs[k].clone(), bwd.deltas[k].clone()))

    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["step == 0 and phase == 'backward'"], on_break=look)
    dbg.lean_watch = mode != "watch, full records"
    for a, b, y in data:
        if mode == "step":
            dbg.step(a, y, b)
        else:
            opt.zero_grad()
            loss = loss_fn(model(a, b), y)
            loss.backward()
            dbg.watch(loss, y)
            opt.step()
    said = [e.message for e in dbg.session.events if "more than once in one forward" in e.message]
    assert len(said) == 1 and said[0].startswith("iteration 1: the model called trunk.0, trunk.1, trunk more than once")
    # the records at the break: the trunk's first linear layer on the second image, and its δ, by autograd
    (output, delta), = seen
    a, b, y = data[0]
    za, zb = start.trunk[0](a), start.trunk[0](b)
    zb.retain_grad()
    loss_fn(torch.sigmoid(start.fc(torch.cat((torch.relu(za), torch.relu(zb)), 1))), y).backward()
    assert torch.equal(output, zb.detach()) and torch.allclose(delta, zb.grad, rtol=1e-6, atol=1e-8)
    bare = copy.deepcopy(start)
    bare_opt = torch.optim.SGD(bare.parameters(), lr=0.1)
    for a, b, y in data:
        bare_opt.zero_grad()
        loss_fn(bare(a, b), y).backward()
        bare_opt.step()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), bare.parameters()))
    dbg.close()


@pytest.mark.parametrize("scaled", [False, True])
def test_watch_mode_with_clipping_before_watch_rewinds_to_the_loops_parameters(scaled):
    """clip_grad_norm_ between backward() and watch() (minGPT-ddp's loop, with a GradScaler
    whose scaled gradients it clips): the update recomputed by a rewind stepped with
    backward's own, unclipped gradients, so the parameters after a rewind were off (5e-3 on
    this net, 0.03 with the scaler, whose event named random numbers and .data, not the
    clipping). Now it steps with the gradients watch() was given: the loop's parameters,
    bit for bit; the recomputed backward record differs, and the event names the clipping."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.CrossEntropyLoss()
    scaler = torch.amp.GradScaler("cpu") if scaled else None
    dbg = gdstep.attach(model, opt, loss_fn, on_break="raise", scaler=scaler)
    g = torch.Generator().manual_seed(1)
    after = []
    for _ in range(10):
        x, y = torch.randn(16, 4, generator=g), torch.randint(0, 2, (16,), generator=g)
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        (scaler.scale(loss) if scaled else loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05 if not scaled else 1.0)
        dbg.watch(loss, y)
        if scaled:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        after.append({n: p.detach().clone() for n, p in model.named_parameters()})
    s = dbg.session
    for k in (9, 7, 3):
        s.seek(4 * k)
        assert all(np.array_equal(s.params[n], v.numpy()) for n, v in after[k - 1].items()), k
    assert "clipping" in s.replay_inexact and ".data" not in s.replay_inexact
    dbg.close()


def test_a_deep_trunk_called_twice_is_named_by_its_first_rows_and_a_count():
    """A Siamese net whose trunk is a ResNet named every one of its rows in the event."""
    class Siamese(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.Sequential(*[nn.Linear(4, 4) if i % 2 == 0 else nn.ReLU() for i in range(8)])
            self.fc = nn.Linear(8, 1)

        def forward(self, a, b):
            return self.fc(torch.cat((self.trunk(a), self.trunk(b)), 1))

    torch.manual_seed(0)
    model = Siamese()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dbg = gdstep.attach(model, opt, nn.MSELoss())
    a, b, y = torch.randn(4, 4), torch.randn(4, 4), torch.randn(4, 1)
    opt.zero_grad()
    loss = nn.functional.mse_loss(model(a, b), y)
    loss.backward()
    dbg.watch(loss, y)
    opt.step()
    said, = [e.message for e in dbg.session.events if "more than once in one forward" in e.message]
    assert "the model called trunk.0, trunk.1, trunk.2, trunk.3 and 5 other layers more than once" in said
    dbg.close()

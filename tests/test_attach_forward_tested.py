"""Watch mode tests the loop's forward as it runs (records on demand): the outputs of a
convolution are proved finite from bounds or normed as they are made, and let go, so that
backward() frees them as it would without gdstep. A non-finite output still breaks on the
same iteration with the same culprit as when every output is kept and read
(`dbg.lean_watch = False`); the loss module's own result is recognised without computing
the loss again."""

from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

import gdstep
from torch.multiprocessing.reductions import StorageWeakRef

from gdstep.backends.torch_attach import AttachBackend


def make(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 14 * 14, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed + 1)
    batches = [(torch.rand(32, 1, 28, 28, generator=g) + 0.5, torch.randint(0, 10, (32,), generator=g))
               for _ in range(10)]
    return model, opt, batches


def watched(lean: bool, blow_up_at: int | None = None, monkeypatch=None):
    """The loop over the batches in watch mode; at `blow_up_at` it sets the convolution's
    weights so that every output is -inf (positive inputs), which the ReLU turns into 0:
    the loss and the gradients stay finite, and only the forward's test can see it."""
    model, opt, batches = make()
    loss_fn = nn.CrossEntropyLoss()
    hits: list = []
    normed: list = []
    if monkeypatch is not None:
        real = AttachBackend.finite_now
        monkeypatch.setattr(AttachBackend, "finite_now", lambda self, out: normed.append(dbg.session.step_count) or real(self, out))
    dbg = gdstep.attach(model, opt, loss_fn, on_break=lambda s, m: hits.append((s.step_count, s.last_phase, m)))
    dbg.lean_watch = lean
    for i, (x, y) in enumerate(batches):
        if i == blow_up_at:
            with torch.no_grad():
                model[0].weight.fill_(-3e38)
                model[0].bias.zero_()
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        dbg.watch(loss, y)
        opt.step()
    dbg.close()
    return model, hits, normed


def test_a_hidden_non_finite_output_breaks_on_the_same_iteration_with_the_same_culprit(monkeypatch):
    _, lean_hits, normed = watched(True, blow_up_at=6, monkeypatch=monkeypatch)
    _, full_hits, _ = watched(False, blow_up_at=6)
    assert lean_hits and lean_hits == full_hits
    step, phase, message = lean_hits[0]
    assert step == 6 and phase == "forward" and "layer 0" in message and "-inf" in message
    # before the blow-up the bounds proved every checked output finite: none was normed
    assert normed and min(normed) == 6


def test_the_loops_training_is_its_own_and_the_lean_records_equal_full_ones():
    lean_model, _, _ = watched(True)
    full_model, _, _ = watched(False)
    bare, opt, batches = make()
    for x, y in batches:
        opt.zero_grad()
        nn.CrossEntropyLoss()(bare(x), y).backward()
        opt.step()
    for a, b, c in zip(lean_model.parameters(), full_model.parameters(), bare.parameters()):
        assert torch.equal(a, c) and torch.equal(b, c)


def test_the_loops_layer_outputs_are_freed_as_without_gdstep():
    model, opt, batches = make()
    loss_fn = nn.CrossEntropyLoss()
    dbg = gdstep.attach(model, opt, loss_fn)
    seen = []
    handle = model[0].register_forward_hook(lambda m, a, o: seen.append(StorageWeakRef(o.untyped_storage())))
    try:
        for i, (x, y) in enumerate(batches):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            dbg.watch(loss, y)
            opt.step()
            del loss
            gc.collect()
            if i >= 2:          # lean iterations: the convolution's output, which torch does not save, is gone
                assert seen[-1].expired(), f"iteration {i + 1}: gdstep holds the convolution's output"
    finally:
        handle.remove()
        dbg.close()


def test_the_loss_modules_own_result_is_not_computed_again():
    model, opt, batches = make()
    calls = []

    class Counted(nn.CrossEntropyLoss):
        def forward(self, out, y):
            calls.append(torch.is_grad_enabled())
            return super().forward(out, y)

    loss_fn = Counted()
    dbg = gdstep.attach(model, opt, loss_fn)
    lean = []
    for x, y in batches:
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        dbg.watch(loss, y)
        lean.append(dbg._lean_now)
        opt.step()
    dbg.close()
    assert all(lean[1:])                     # records on demand: the loop's loss is loss_fn(output, y)
    assert calls == [True] * len(batches)    # only the loop's own calls (no recomputation under no_grad)


@pytest.mark.parametrize("scale", [2.0, 1.0])
def test_a_loss_that_is_not_the_modules_result_is_recomputed_and_compared(scale):
    model, opt, batches = make()
    loss_fn = nn.CrossEntropyLoss()
    dbg = gdstep.attach(model, opt, loss_fn)
    lean = []
    for x, y in batches[:5]:
        opt.zero_grad()
        loss = loss_fn(model(x), y) * scale        # another tensor: equal to loss_fn(output, y) only at 1.0
        loss.backward()
        dbg.watch(loss, y)
        lean.append(dbg._lean_now)
        opt.step()
    dbg.close()
    assert all(lean[1:]) == (scale == 1.0)


def records_at_break(lean: bool, hook_at: int | None = None):
    """The records read where a breakpoint stops the loop (step 5), and after the loop; with
    `hook_at`, the loop hooks the convolution itself from that iteration on."""
    model, opt, batches = make()
    loss_fn = nn.CrossEntropyLoss()
    fired, now = [], [None]
    seen = []

    def read(s):
        fwd, bwd, upd = s.record("forward"), s.record("backward"), s.record("update")
        return ([None if o is None else o.clone() for o in fwd.outputs], s.record("loss").value,
                {n: g.clone() for n, g in bwd.grads.items()},
                {n: (u.old.clone(), u.new.clone()) for n, u in upd.params.items()})

    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["step == 5"],
                        on_break=lambda s, m: seen.append(read(s)) if s.last_phase == "update" else None)
    dbg.lean_watch = lean
    for i, (x, y) in enumerate(batches):
        now[0] = i
        if i == hook_at:
            model[0].register_forward_hook(lambda m, a, o: fired.append(now[0]))
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        dbg.watch(loss, y)
        opt.step()
    end = read(dbg.session)
    dbg.close()
    return seen, end, fired, model


def equal(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.parametrize("hook_at", [None, 3])
def test_records_read_where_the_rows_ran_unobserved_equal_full_records(hook_at):
    lean_seen, lean_end, fired, lean_model = records_at_break(True, hook_at)
    full_seen, full_end, _, full_model = records_at_break(False, hook_at)
    assert len(lean_seen) == 1 and equal(lean_seen, full_seen) and equal(lean_end, full_end)
    assert all(o is not None for o in lean_end[0])            # every layer's output, recomputed
    if hook_at is not None:
        assert set(range(hook_at, 10)) <= set(fired)          # the loop's own hook ran on each of its forwards
    for p, q in zip(lean_model.parameters(), full_model.parameters()):
        assert torch.equal(p, q)


def test_a_small_outputs_non_finite_value_hidden_by_a_relu_names_the_same_culprit_in_lean_records():
    """Small outputs (an MLP's, here 8×16), proved finite by the chain of bounds before the
    loop's forward runs (watch mode bounds small rows too: reading them would take a hook
    on each). At iteration 5 the first layer's weights make every one of its outputs -inf (positive
    inputs), which the ReLU turns into 0: the loss and the gradients stay finite. Lean and
    full records break on the same iteration and phase with the same message, the culprit
    named, the loop's weights its own."""
    def loop(lean: bool):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(1)
        batches = [(torch.rand(8, 4, generator=g) + 0.5, torch.randint(0, 3, (8,), generator=g)) for _ in range(8)]
        hits, lean_flags = [], []
        dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss(), on_break=lambda s, m: hits.append((s.step_count, s.last_phase, m)))
        dbg.lean_watch = lean
        for i, (x, y) in enumerate(batches):
            if i == 5:
                with torch.no_grad():
                    model[0].weight.fill_(-3e38)
                    model[0].bias.zero_()
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            assert torch.isfinite(loss)
            dbg.watch(loss, y)
            lean_flags.append(dbg._lean_now)
            opt.step()
        dbg.close()
        return model, hits, lean_flags

    lean_model, lean_hits, flags = loop(True)
    full_model, full_hits, _ = loop(False)
    assert all(flags[:5])                             # lean up to the blow-up: no output was held
    assert lean_hits and lean_hits == full_hits
    step, phase, message = lean_hits[0]
    assert (step, phase) == (5, "forward") and "layer 0" in message and "-inf" in message
    for p, q in zip(lean_model.parameters(), full_model.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("lean", [True, False])
def test_a_deep_narrow_mlp_is_proved_before_it_runs_and_a_blow_up_still_names_its_culprit(monkeypatch, lean):
    """20 Linear rows 32×32 with ReLUs (a net of many small tensors): the 2-norms' chain
    proves every output finite before the forward, so no row is hooked or normed; at
    iteration 5 the seventh Linear's outputs become -inf, which the ReLU hides from the
    loss: lean and full records break there alike, the culprit named."""
    def loop(lean: bool):
        torch.manual_seed(0)
        layers = [nn.Linear(8, 32), nn.ReLU()]
        for _ in range(19):
            layers += [nn.Linear(32, 32), nn.ReLU()]
        model = nn.Sequential(*layers, nn.Linear(32, 3))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(1)
        batches = [(torch.rand(16, 8, generator=g) + 0.5, torch.randint(0, 3, (16,), generator=g)) for _ in range(8)]
        hits, skipped, normed = [], [], []
        real = AttachBackend.finite_now
        monkeypatch.setattr(AttachBackend, "finite_now",
                            lambda self, out: normed.append(dbg.session.step_count) or real(self, out))
        dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss(),
                            on_break=lambda s, m: hits.append((s.step_count, s.last_phase, m)))
        dbg.lean_watch = lean
        for i, (x, y) in enumerate(batches):
            if i == 5:
                with torch.no_grad():
                    model[12].weight.fill_(-3e38)       # its input is positive (a ReLU's, and the bias)
                    model[12].bias.fill_(1.0)
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            skipped.append(dbg.backend.rows_skipped)
            dbg.watch(loss, y)
            opt.step()
        dbg.close()
        return model, hits, skipped, normed

    model, hits, skipped, normed = loop(lean)
    if lean:
        assert all(skipped[1:5]) and not skipped[5]       # unobserved rows until the weights moved outside
        assert not normed or min(normed) >= 5
    step, phase, message = hits[0]
    assert (step, phase) == (5, "forward") and "layer 12" in message and "-inf" in message

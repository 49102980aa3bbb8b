"""The non-finite pause names the value that went bad first: layers searched in the order the
model called them, a loss function that makes NaN from finite values named as such, a
break file whose header and "first non-finite value" line agree; and half-precision
models write break files that hold their values exactly."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gdstep
import gdstep.debugger as attach_module
from attach_loop import attached_iteration


class DropoutDefinedFirst(nn.Module):
    """Registration order (drop, fc1, fc2) is not call order (fc1, drop, fc2)."""

    def __init__(self):
        super().__init__()
        self.drop = nn.Dropout(0.0)
        self.fc1 = nn.Linear(2, 3)
        self.fc2 = nn.Linear(3, 1)

    def forward(self, x):
        return self.fc2(self.drop(self.fc1(x)))


def hits(model, loss_fn, x, y, **kw):
    seen = []
    dbg = gdstep.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), loss_fn,
                        on_break=lambda s, m: seen.append((m, s.find_nonfinite())), **kw)
    dbg.step(x, y)
    return seen


def test_the_layer_that_overflowed_first_is_named_not_a_later_one_registered_earlier():
    torch.manual_seed(0)
    model = DropoutDefinedFirst()
    with torch.no_grad():
        model.fc1.weight.fill_(3e38)                     # fc1 overflows float32: inf, then drop passes it on
    x, y = torch.ones(4, 2), torch.zeros(4, 1)
    assert torch.isinf(model.fc1(x)).all()               # the first module to make a non-finite value
    message = hits(model, nn.MSELoss(), x, y)[0][0]
    assert "in layer fc1 linear output[0,0] during forward" in message, message


def test_a_plain_function_loss_that_logs_a_negative_is_named_as_the_loss_making_nan():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    x, y = torch.randn(8, 3), torch.randn(8, 2)
    out = model(x)
    assert torch.isfinite(out).all() and (out < 0).any() and torch.isnan(torch.log(out).mean())
    message = hits(model, lambda out, y: torch.log(out).mean(), x, y)[0][0]
    assert "overflowed" not in message
    assert "(loss_fn made it from finite outputs and targets) during loss" in message


def test_a_non_finite_output_reaching_a_plain_loss_is_named_there():
    model = nn.Sequential(nn.Linear(3, 2))
    with torch.no_grad():
        model[0].bias.fill_(float("inf"))
    x, y = torch.randn(4, 3), torch.randn(4, 2)
    found = gdstep.nonfinite.in_loss(gdstep.records.LossRecord(0, "f", model(x), y, None, float("nan")))
    assert found.where == "the model output reaching the loss" and found.index == (0, 0)


def test_a_break_file_header_and_its_first_non_finite_line_agree(tmp_path, monkeypatch):
    monkeypatch.setattr(attach_module, "interactive", lambda: False)
    torch.manual_seed(0)
    model = DropoutDefinedFirst()
    dbg = gdstep.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.MSELoss(), dump_dir=tmp_path)
    x, y = torch.randn(4, 2), torch.randn(4, 1)
    dbg.step(x, y)
    bad = x.clone()
    bad[2, 1] = float("nan")
    dbg.step(bad, y)           # the loop goes on: the update makes every parameter NaN too
    text = (tmp_path / "gdstep-break-2.txt").read_text().splitlines()
    header = text[0].removeprefix("gdstep break: ")
    first = next(line for line in text if "first non-finite value" in line).split(": ", 1)[1]
    assert header == first == "non-finite value nan in layer fc1 linear output[2,0] during forward"
    meta = json.loads(str(np.load(tmp_path / "gdstep-break-2.npz")["meta"]))
    assert meta["nonfinite"] == first and not np.isfinite(meta["loss"])
    # where the loop stands, as the summary's text says it (meta said "epoch 3 · iteration 1": a scenario's words)
    assert meta["cursor"] == "loop iteration 3 · forward next" and text[1].startswith("  at loop iteration 3 · forward next")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_break_files_hold_the_values_exactly(tmp_path, monkeypatch, capsys, dtype):
    monkeypatch.setattr(attach_module, "interactive", lambda: False)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(dtype)
    weight = model[0].weight.detach().clone()
    x, y = torch.randn(5, 3, dtype=dtype), torch.randint(0, 2, (5,))
    dbg = gdstep.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(),
                        breakpoints=["loss > 0"], dump_dir=tmp_path)
    loss = dbg.step(x, y)                                  # writes a file, the loop goes on
    assert "records written" in capsys.readouterr().err and np.isfinite(loss)
    z = np.load(tmp_path / "gdstep-break-1.npz")
    meta = json.loads(str(z["meta"]))
    stored = z["update/0.weight/old"]
    name = str(dtype).removeprefix("torch.")
    if dtype is torch.bfloat16:
        assert stored.dtype == np.float32 and meta["dtypes"]["update/0.weight/old"] == "bfloat16"
        assert "bfloat16" in (tmp_path / "gdstep-break-1.txt").read_text()
    else:
        assert stored.dtype == np.float16
    assert meta["dtype"] == name
    # exact: widening back and narrowing again gives the very bits the model held
    assert torch.equal(torch.from_numpy(np.asarray(stored)).to(dtype), weight)
    np.testing.assert_array_equal(z["forward/input"], x.float().numpy())


def test_watch_mode_breaks_once_an_iteration_on_a_lasting_nan_and_not_after_dismiss():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(6, 3), torch.randint(0, 4, (6,))
    seen = []
    dbg = gdstep.attach(model, opt, F.cross_entropy, on_break=lambda s, m: seen.append(s.step_count))
    for i in range(6):
        if i == 4:
            dbg.dismiss("nan")             # what x does in the app
        opt.zero_grad()
        batch = x.clone()
        if i == 1:
            batch[0, 0] = float("nan")     # the update of this iteration spoils every parameter
        loss = F.cross_entropy(model(batch), y)
        loss.backward()
        dbg.watch(loss, y)
        opt.step()
    assert seen == [1, 2, 3]               # iterations 2, 3, 4: each once (not again for its update)
    assert all(not p.isfinite().all() for p in model.parameters())
    assert dbg.session.step_count == 6


class Pool(nn.MaxPool2d):
    """A subclass may compute anything in its forward: its output is checked."""


def test_a_run_checks_the_convolutions_not_the_pooling_and_flatten_after_them_yet_names_the_conv():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(2 * 4 * 4, 3), nn.Unflatten(1, (3, 1, 1)), Pool(1), nn.Flatten(), nn.Linear(3, 2))
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
    dbg = gdstep.attach(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss())
    dbg.step(x, y)
    s = dbg.session
    kinds = [info.kind for info in s.backend.layers]
    assert kinds == ["Conv2d", "relu", "MaxPool2d", "Flatten", "linear", "Unflatten", "Pool", "Flatten", "linear"]
    # the conv, the linear layers, the subclass of MaxPool2d (and the last output)
    assert s._checked_layers == (0, 4, 6, 8)
    with torch.no_grad():
        model[0].weight.fill_(3e38)                      # the conv overflows: inf, passed on by pool and flatten
    message = hits(model, nn.CrossEntropyLoss(), x, y)[0][0]
    assert "in layer 0 Conv2d output" in message and "during forward" in message, message


def test_which_torch_modules_count_as_keeping_values_finite():
    from gdstep.backends.torch_layers import keeps_finite
    assert keeps_finite(nn.MaxPool2d(2)) and keeps_finite(nn.Flatten()) and keeps_finite(nn.Identity())
    assert not keeps_finite(Pool(2))                     # a subclass
    assert not keeps_finite(nn.Dropout(0.5))             # scales by 1/(1 − p): a large value can overflow
    assert not keeps_finite(nn.AvgPool2d(2))             # a sum of large values can overflow
    assert not keeps_finite(nn.Conv2d(1, 1, 1))


def cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(6)]
    return model, batches


def test_a_run_of_dbg_step_holds_no_layer_output_yet_shows_them_all_exactly():
    """Records on demand: once a run's records are lean, dbg.step tests each checked output as
    it is made and keeps none but the model's, so the loop frees them as a bare loop would;
    reading the records recomputes the outputs, equal to the bare loop's to the bit."""
    import gc
    import weakref

    model, batches = cnn()
    bare = copy.deepcopy(model)
    made = {}
    model[0].register_forward_hook(lambda m, a, out: made.__setitem__("conv", weakref.ref(out)))
    seen = {}
    bare[0].register_forward_hook(lambda m, a, out: seen.__setitem__("conv", out.detach().clone()))
    bare[2].register_forward_hook(lambda m, a, out: seen.__setitem__("pool", out.detach().clone()))
    dbg = gdstep.attach(model, torch.optim.Adam(model.parameters(), lr=1e-2), nn.CrossEntropyLoss(),
                        breakpoints=["loss > 10 * prev_loss"])
    opt = torch.optim.Adam(bare.parameters(), lr=1e-2)
    for i, (x, y) in enumerate(batches):
        dbg.step(x, y)
        opt.zero_grad()
        nn.CrossEntropyLoss()(bare(x), y).backward()
        opt.step()
        gc.collect()
        if i >= 2:     # the first iterations keep full records; later ones are lean
            assert made["conv"]() is None, f"iteration {i + 1}: the conv's output is still held"
    outputs = dbg.session.record("forward").outputs
    assert torch.equal(torch.as_tensor(outputs[0]), seen["conv"]) and torch.equal(torch.as_tensor(outputs[2]), seen["pool"])
    for p, q in zip(model.parameters(), bare.parameters()):
        assert torch.equal(p, q)


def test_a_lean_forward_that_overflows_pauses_before_it_naming_the_layer_a_bare_loop_finds():
    """The loop raises the learning rate; two iterations later the forward overflows. The
    pause names the first module (in call order) whose output a bare copy of the loop finds
    non-finite in that iteration."""
    model, batches = cnn()
    bare = copy.deepcopy(model)
    seen = []
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss(), on_break=lambda s, m: seen.append(m))
    bare_opt = torch.optim.SGD(bare.parameters(), lr=0.01)
    first_bad = []
    for name, m in bare.named_children():
        m.register_forward_hook(lambda m, a, out, name=name: first_bad.append(name)
                                if not torch.isfinite(out).all() else None)
    for i, (x, y) in enumerate(batches):
        if i == 4:
            opt.param_groups[0]["lr"] = bare_opt.param_groups[0]["lr"] = 1e36
        dbg.step(x, y)
        if seen:
            break
        assert dbg.session._lean_records or i < 2
        bare_opt.zero_grad()
        nn.CrossEntropyLoss()(bare(x), y).backward()
        bare_opt.step()
    first_bad.clear()
    bare(x)                                              # the iteration that paused, in the bare loop
    assert i == 5 and first_bad, (i, first_bad)
    assert f"in layer {first_bad[0]} " in seen[0] and "during forward" in seen[0], (seen[0], first_bad)


@pytest.mark.parametrize("width", [3, 300])
def test_a_lean_forward_tests_an_output_before_an_in_place_relu_overwrites_it(width):
    """ReLU(inplace=True) writes over the linear layer's output: -inf there becomes 0, yet
    the run still pauses on it (small outputs are tested at the end of the forward, large
    ones as they are made; with an in-place module, every one as it is made)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, width), nn.ReLU(inplace=True), nn.Linear(width, 2))
    seen = []
    dbg = gdstep.attach(model, torch.optim.SGD(model.parameters(), lr=0.01), nn.CrossEntropyLoss(),
                        on_break=lambda s, m: seen.append(m))
    x, y = torch.randn(300, 4), torch.randint(0, 2, (300,))
    for _ in range(4):
        dbg.step(x, y)
    assert not seen and dbg.session._lean_records
    with torch.no_grad():
        model[0].bias[0] = -float("inf")                 # linear output -inf in column 0, then ReLU makes it 0
    out = model(x)
    assert torch.isfinite(out).all()                     # nothing after the ReLU shows it
    dbg.step(x, y)
    assert seen and "in layer 0 linear output" in seen[0] and "during forward" in seen[0], seen


@pytest.mark.parametrize("mode", ["step", "watch"])
def test_records_show_a_layers_output_as_made_before_an_in_place_relu_wrote_over_it(mode):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(inplace=True), nn.Linear(5, 2))
    x, y = torch.randn(6, 4), torch.randint(0, 2, (6,))
    with torch.no_grad():
        z = model[0](x)
    assert (z < 0).any()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss())
    attached_iteration(mode, dbg, model, opt, nn.CrossEntropyLoss(), x, y)
    outputs = dbg.session.record("forward").outputs
    assert torch.equal(torch.as_tensor(outputs[0]), z)                  # negative values and all
    assert torch.equal(torch.as_tensor(outputs[1]), z.clamp(min=0))


def test_a_run_computes_no_per_sample_losses_yet_the_records_and_the_culprit_have_them(monkeypatch):
    """Records on demand: dbg.step's run computes the loss as the loop does and not the
    unreduced copy behind each sample's loss; reading the loss record recomputes them, equal to
    torch's own. A loss that overflows in one sample names that sample, as stepping does."""
    calls = []
    mse = F.mse_loss
    monkeypatch.setattr(torch.nn.modules.loss.F, "mse_loss",
                        lambda a, b, reduction="mean": calls.append(reduction) or mse(a, b, reduction=reduction))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=["loss > 1e30"], on_break=lambda s, m: None)
    x, y = torch.randn(5, 3), torch.randn(5, 2)
    for _ in range(6):
        dbg.step(x, y)
    assert dbg.session._lean_records
    assert calls.count("none") <= 2, calls             # the first iterations keep full records
    calls.clear()
    dbg.step(x, y)
    assert calls == ["mean"]                             # the loop's own loss, nothing more
    record = dbg.session.record("loss")                  # recomputed: the output the step used, exactly
    out = torch.as_tensor(record.output)
    assert torch.equal(out, model[0](x).detach()) is False    # the step has moved the weights since
    assert torch.equal(torch.as_tensor(record.per_sample), ((out - y) ** 2).mean(1))
    assert record.value == nn.MSELoss()(out, y).item()

    y_bad = y.clone()
    y_bad[3, 1] = 3e20                                   # (out − y)² overflows float32 in sample 3 only
    seen = []
    model2 = nn.Sequential(nn.Linear(3, 2))
    dbg2 = gdstep.attach(model2, torch.optim.SGD(model2.parameters(), lr=0.01), nn.MSELoss(),
                         on_break=lambda s, m: seen.append(m))
    for _ in range(4):
        dbg2.step(x, y)
    assert dbg2.session._lean_records
    dbg2.step(x, y_bad)
    assert "loss of sample[3]" in seen[0], seen


def test_a_lean_loss_that_is_not_finite_is_named_from_the_iteration_as_it_ran():
    """The per-sample losses a run leaves out are asked for on the live output when the loss
    is not finite: watch mode names the target, as with full records, and a loss_fn whose
    value a recomputation would not reproduce (a call counter here) still pauses."""
    torch.manual_seed(1)
    x, y = torch.randn(5, 3), torch.randn(5, 2)
    y_bad = y.clone()
    y_bad[2, 0] = float("inf")
    for lean in (True, False):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 2))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        seen = []
        dbg = gdstep.attach(model, opt, nn.MSELoss(), on_break=lambda s, m: seen.append(m))
        dbg.lean_watch = lean
        for target in (y, y, y, y, y_bad):
            attached_iteration("watch", dbg, model, opt, nn.MSELoss(), x, target)
        assert len(seen) == 1 and "in the target[2,0] during loss" in seen[0], (lean, seen)

    calls = []

    def once_inf(out, target):
        calls.append(1)
        loss = ((out - target) ** 2).mean()
        return loss * float("inf") if len(calls) == 6 else loss

    model = nn.Sequential(nn.Linear(3, 2))
    seen = []
    dbg = gdstep.attach(model, torch.optim.SGD(model.parameters(), lr=0.01), once_inf,
                        on_break=lambda s, m: seen.append(m))
    for _ in range(8):
        dbg.step(x, y)
    assert len(seen) == 1 and "non-finite value inf in loss (once_inf made it from finite" in seen[0], seen

"""Records on demand: a run keeps lean records and the first read recomputes them from a
checkpoint. What the reader gets must equal, bit for bit, what stepping phase by phase to
the same point builds, on both backends, in both precisions, for every optimizer."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

import gdstep
from gdstep import arrays
from gdstep.records import PHASES
from gdstep.scenario import parse_scenario
from optim_cases import ALL_ON
from test_core_run_ahead import interrupt_phase

torch = pytest.importorskip("torch")

SCENARIO = """
name = "records on demand"
seed = 3
[data]
kind = "blobs"
n = 45
classes = 3
features = 4
[model]
layers = [ {{ linear = 6 }}, "tanh", {{ linear = 5 }}, "relu", {{ linear = 3 }} ]
dtype = "{dtype}"
[loss]
kind = "cross_entropy"
[optimizer]
kind = "{kind}"
{args}
[training]
batch_size = 8
epochs = 100
shuffle = true
"""


def make(kind: str, args: dict, dtype: str, backend: str):
    """`backend` "torch-deferred": the torch backend on the CPU with its finiteness flags
    left on the device and read later, as on a GPU."""
    lines = "\n".join(f"{k} = {_toml(v)}" for k, v in args.items())
    sc = parse_scenario(SCENARIO.format(dtype=dtype, kind=kind, args=lines))
    s = gdstep.open(sc, backend=backend.split("-")[0], dtype=dtype)
    s._defer = backend == "torch-deferred"
    return s


def _toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


def same(a, b, where: str) -> None:
    if a is None or b is None:
        assert a is None and b is None, where
        return
    if isinstance(a, (int, float, str)) or a is None:
        assert a == b or (isinstance(a, float) and math.isnan(a) and math.isnan(b)), where
        return
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            same(a[k], b[k], f"{where}[{k}]")
        return
    if isinstance(a, (tuple, list)) and not arrays.is_torch(a):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, f"{where}[{i}]")
        return
    x, y = arrays.to_numpy(a), arrays.to_numpy(b)
    assert x.dtype == y.dtype and x.shape == y.shape, where
    assert np.array_equal(x.view(np.uint8) if x.dtype.kind == "f" else x,
                          y.view(np.uint8) if y.dtype.kind == "f" else y), f"{where} differs"


def same_records(a, b) -> None:
    for phase in PHASES:
        ra, rb = a.record(phase), b.record(phase)
        if ra is None or rb is None:
            assert ra is None and rb is None, phase
            continue
        for field in ra._fields:
            va, vb = getattr(ra, field), getattr(rb, field)
            if field == "optimizer":
                assert va == vb
            elif field == "params":
                assert va.keys() == vb.keys() and va, "update record is full"
                for name in va:
                    for f in va[name]._fields:
                        same(getattr(va[name], f), getattr(vb[name], f), f"update {name}.{f}")
            else:
                same(va, vb, f"{phase}.{field}")
    same(a.params, b.params, "params")
    same(a.optimizer_state, b.optimizer_state, "optimizer state")
    ha, hb = a.history, b.history
    assert list(ha.losses) == list(hb.losses)
    assert list(ha.grad_norms) == list(hb.grad_norms)
    assert a.cursor == b.cursor


@pytest.mark.parametrize("backend", ["numpy", "torch", "torch-deferred"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", sorted(ALL_ON))
def test_records_after_a_run_equal_those_of_stepping_phase_by_phase(kind, dtype, backend):
    run = make(kind, ALL_ON[kind], dtype, backend)
    stepped = make(kind, ALL_ON[kind], dtype, backend)
    # 37 iterations: past two checkpoints of the grid, and across epochs (6 batches an epoch)
    result = run.run(max_steps=37)
    assert result.reason == "max_steps"
    assert run._lean_records
    if backend != "numpy":          # torch: each output tested as it was made, only the model's kept
        outputs = run._records["forward"].outputs
        assert outputs[-1] is not None and all(o is None for o in outputs[:-1])
    for _ in range(37 * 4):
        stepped.next_phase()
    same_records(run, stepped)
    # and mid-iteration: stop after the backward of the next iteration
    run.run_to("backward")
    for _ in range(3):
        stepped.next_phase()
    same_records(run, stepped)
    # phase by phase on from there: the update record is full, and the same
    run.update()
    stepped.update()
    same_records(run, stepped)


@pytest.mark.parametrize("backend", ["numpy", "torch", "torch-deferred"])
def test_a_breakpoint_on_every_name_fires_where_phase_by_phase_checking_does(backend):
    conditions = ["loss < 0.9", "prev_loss > loss + 0.05", "grad_norm < 0.5", "grad_norm(2.weight) > 1.2",
                  "update_ratio > 0.05", "update_ratio(0.bias) > 0.2", "epoch >= 3", "iteration == 4",
                  "step >= 11", "phase == \"backward\" and step > 6", "lr < 1", "2.weight[0,1] > 0.3",
                  "abs(0.weight[1,2]) > 0.6", "nan"]
    for text in conditions:
        run = make("sgd", {"lr": 0.3, "momentum": 0.9}, "float64", backend)
        run.add_breakpoint(text)
        result = run.run(max_steps=60)
        # the reference: every phase run on its own and the condition checked after it
        ref = make("sgd", {"lr": 0.3, "momentum": 0.9}, "float64", backend)
        cond = ref._condition(text)
        hit = None
        for _ in range(60 * 4):
            ref.next_phase()
            if ref.last_phase in cond.phases and cond(ref):
                hit = ref.cursor
                break
        if hit is None:
            assert result.reason == "max_steps", text
        else:
            assert result.reason == "breakpoint", text
            assert result.cursor == hit, text
            same_records(run, ref)


def _blows_up(backend: str, lr: float, dtype: str = "float32"):
    return make("sgd", {"lr": lr}, dtype, backend)


@pytest.mark.parametrize("backend", ["numpy", "torch", "torch-deferred"])
@pytest.mark.parametrize("lr", [1e6, 1e30])
def test_the_non_finite_culprit_is_the_one_phase_by_phase_stepping_names(backend, lr):
    run = _blows_up(backend, lr)
    result = run.run(max_steps=500)
    assert result.reason == "nonfinite"
    ref = _blows_up(backend, lr)
    events = len(ref.events)
    while True:
        ref.next_phase()
        bad = [e for e in ref.events[events:] if e.kind == "nonfinite"]
        if bad:
            break
    ref.back()
    assert str(result.nonfinite) in bad[0].message
    assert run.cursor == ref.cursor
    same_records(run, ref)


def test_a_run_computes_no_update_record_and_keeps_the_grid_of_checkpoints():
    s = make("adam", {"lr": 0.01}, "float64", "numpy")
    s.checkpoint_seconds = 0                          # every grid step due (by default: by time)
    s.run(max_steps=40)
    assert s._records["update"].params == {}          # lean: nothing the run did not need
    assert s._timeline.steps == [0, 16, 32]
    assert s.record("update").params                  # read: recomputed in full
    assert not s._lean_records
    assert s.history.losses[-1] == s.loss_value and len(s.history.losses) == 40
    assert len(s.history.grad_norms) == 40            # the plots' history stays complete


def test_rewinding_after_a_run_is_exact():
    run = make("rmsprop", ALL_ON["rmsprop"], "float64", "numpy")
    run.run(max_steps=30)
    run.back(iterations=5)
    stepped = make("rmsprop", ALL_ON["rmsprop"], "float64", "numpy")
    for _ in range(25 * 4):
        stepped.next_phase()
    same_records(run, stepped)


def test_on_a_device_a_run_checking_each_phase_reads_back_the_loss_and_the_gradient_norms_only():
    """The finiteness flags of forward and update travel with the loss: two reads an
    iteration (the gradient norms are the plots' history and the backward's test), and one
    at the end of the run for the flag of the last update. (A run that looks ahead reads
    once a look ahead: tests/test_core_run_ahead_device.py.)"""
    s = make("adam", {"lr": 0.01}, "float32", "torch-deferred")
    s.look_ahead = False
    s.add_breakpoint("loss > 100 * prev_loss")
    s.add_breakpoint("grad_norm > 1e6")
    b = s.backend
    reads = []
    for name in ("loss", "loss_lean", "read_flags", "grad_sq_norms"):
        method = getattr(b, name)
        setattr(b, name, lambda *a, _m=method, _n=name, **k: (reads.append(_n), _m(*a, **k))[1])
    s.run(max_steps=20)
    assert reads.count("loss_lean") == 20 and reads.count("loss") == 0
    assert reads.count("grad_sq_norms") == 20 and reads.count("read_flags") == 1


def test_attach_mode_checkpoints_within_its_kept_batches_whatever_the_budget():
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=[], keep=4, history_budget=1)
    x, y = torch.randn(30, 16, 3), torch.randn(30, 16, 1)
    for i in range(30):
        dbg.step(x[i], y[i])
    s = dbg.session
    assert s._lean_records
    live = {n: p.detach().clone() for n, p in model.named_parameters()}
    upd, fwd = s.record("update"), s.record("forward")        # recomputed from a checkpoint ≤ 4 steps back
    assert upd.step == 29 and torch.equal(fwd.inputs, x[29])
    for name, p in live.items():
        assert torch.equal(upd.params[name].new, p)
        assert torch.equal(dict(model.named_parameters())[name].detach(), p)     # the loop's state is untouched
    dbg.close()


def test_an_interrupt_while_a_record_is_recomputed_leaves_the_loops_model_as_the_loop_left_it():
    """Attach mode: reading a record recomputes it from a checkpoint on the loop's own model,
    and puts the loop's tensors back after. A Ctrl-C in the middle left the model with the
    recomputation's values; the loop's tensors are now put back whatever happens."""
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    bare = copy.deepcopy(model)
    opt, bare_opt = torch.optim.Adam(model.parameters(), lr=0.01), torch.optim.Adam(bare.parameters(), lr=0.01)
    dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=[], keep=8)
    x, y = torch.randn(21, 16, 3), torch.randn(21, 16, 1)
    for i in range(21):
        bare_opt.zero_grad()
        nn.MSELoss()(bare(x[i]), y[i]).backward()
        bare_opt.step()
    for i in range(20):
        dbg.step(x[i], y[i])
    s = dbg.session
    live = {n: p.detach().clone() for n, p in model.named_parameters()}
    calls, phases = interrupt_phase(s, 3)
    with pytest.raises(KeyboardInterrupt):
        s.record("update")
    s._phase_fns = phases
    assert len(calls) == 3
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), live[name]), name
    dbg.step(x[20], y[20])                       # the loop goes on as the bare one, records there
    assert dbg.session.record("update").step == 20
    for (name, p), q in zip(model.named_parameters(), bare.parameters()):
        assert torch.equal(p.detach(), q.detach()), name
    dbg.close()


@pytest.mark.parametrize("backend", ["numpy", "torch-deferred"])
def test_records_read_during_a_run_leave_it_as_it_was(backend):
    """The app builds frames from the worker while a run goes (on_phase): each read
    recomputes the iteration, and the run goes on from the same state."""
    run = make("adam", ALL_ON["adam"], "float32", backend)
    reads = []

    def on_phase():
        if run.phase_due in ("forward", "backward"):
            reads.append(run.record("update"))
        return False
    run.run(max_steps=21, on_phase=on_phase)
    assert len(reads) == 41 and all(r is None or r.params for r in reads)     # the run ends before the last
    stepped = make("adam", ALL_ON["adam"], "float32", backend)
    for _ in range(21 * 4):
        stepped.next_phase()
    same_records(run, stepped)


@pytest.mark.parametrize("kind", sorted(ALL_ON))
def test_the_torch_checkpoints_initial_optimizer_state_is_the_optimizers_init(kind):
    """Made on the device from a two-element probe where init fills with one value; equal to
    init on the whole parameter, as float32."""
    pytest.importorskip("torch")
    s = make(kind, ALL_ON[kind], "float32", "torch")
    for name, p in s.backend.params().items():
        got = s.backend._initial_state(name, p)
        want = s.backend.optimizer.init(np.zeros(tuple(p.shape)))
        assert set(got) == set(want)
        for k, v in want.items():
            if isinstance(v, np.ndarray):
                assert got[k].shape == p.shape and got[k].dtype == p.dtype
                np.testing.assert_array_equal(got[k].numpy(), v.astype(np.float32))
            else:
                assert got[k] == v

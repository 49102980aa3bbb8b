"""A run that looks ahead on a device (gdstep.backends.torch_ahead): each iteration's loss
and norms stay on the device and come back in one transfer a look ahead, with the flag of
the last update. It ends, stops and pauses exactly as a run checking each phase does and
as stepping does. Run on the CPU with the flags left "on the device" as on a GPU (the code
path a GPU takes), and on a GPU where there is one (`pytest -m cuda`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gdstep
from gdstep import run_ahead
from gdstep.scenario import parse_scenario
from optim_cases import ALL_ON
from test_core_fused_run import TORCH_SCENARIO, _toml, bits
from test_core_explain_rounding import ONE_WEIGHT
from test_core_run_ahead import OVERFLOW, counted, interrupt_at, same_as_stepped, same_run

torch = pytest.importorskip("torch")

DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])]


@pytest.fixture(params=DEVICES)
def device(request, monkeypatch):
    # a look ahead as long as its count says, not cut short by the clock (a GPU's first
    # kernels load as they are first called, and a loaded machine is slow)
    monkeypatch.setattr(run_ahead, "AHEAD_SECONDS", 60.0)
    return request.param


def on(device: str, text: str, dtype: str = "float32", look_ahead: bool = True):
    """A session of the torch backend on `device`; on the CPU, with its flags left "on the
    device" and read later, as on a GPU."""
    s = gdstep.open(parse_scenario(text), backend="torch", dtype=dtype, device=device)
    s._defer = True
    s.look_ahead = look_ahead
    return s


def scenario(kind="adam", dtype="float32", args=None) -> str:
    args = ALL_ON[kind] if args is None else args
    lines = "\n".join(f"{k} = {_toml(v)}" for k, v in args.items())
    return TORCH_SCENARIO.format(dtype=dtype, kind=kind, args=lines, frozen="")


def spy(backend, names) -> list[str]:
    """Which of the backend's methods that read values back were called, in order."""
    calls: list[str] = []
    for name in names:
        method = getattr(backend, name)
        setattr(backend, name, lambda *a, _m=method, _n=name, **k: (calls.append(_n), _m(*a, **k))[1])
    return calls


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", ["sgd", "adam", "rmsprop"])
def test_a_device_run_reads_back_once_a_look_ahead_and_equals_stepping(device, kind, dtype):
    run, stepped = on(device, scenario(kind, dtype), dtype), on(device, scenario(kind, dtype), dtype)
    for s in (run, stepped):
        s.add_breakpoint("loss > 100 * prev_loss and loss > 10")
        s.add_breakpoint("grad_norm > 1e6")
    rows = counted(run)
    reads = spy(run.backend, ("read_ahead", "loss_lean", "read_flags", "grad_sq_norms", "updated_finite"))
    assert run.run(max_steps=40).reason == "max_steps"
    # the first iteration checked phase by phase (its loss and gradient norms read, its
    # update's flag read with the first look ahead's rows), then one read a look ahead
    assert rows[:4] == [1, 2, 4, 8] and sum(rows) == 39
    assert reads == ["loss_lean", "grad_sq_norms"] + ["read_ahead"] * len(rows)
    for _ in range(40 * 4):
        stepped.next_phase()
    same_as_stepped(run, stepped)
    for name, state in stepped.optimizer_state.items():
        for key, value in state.items():
            assert bits(np.asarray(run.optimizer_state[name][key])) == bits(np.asarray(value)), (name, key)
    assert bits(run.record("update").params["0.weight"].new) == bits(stepped.record("update").params["0.weight"].new)


@pytest.mark.parametrize("condition, phase", [
    ("loss < {loss} and step >= 8", "loss"),
    ("grad_norm < {grad} and step >= 8", "backward"),
    ("step == 13", "update"),
    ("epoch == 3 and iteration == 2", "update"),
    ("lr > 0.5", None),                          # never holds
])
def test_a_breakpoint_stops_where_a_device_run_checking_each_phase_stops(device, condition, phase):
    ref = on(device, scenario("adam", "float64"), "float64", look_ahead=False)
    ref.run(max_steps=40)
    losses = ref.history.losses
    grads = [math.sqrt(sum(v * v for v in row.values())) for row in ref.history.grad_norms]
    text = condition.format(loss=min(losses[8:30]), grad=min(grads[8:30])).replace("<", "<=")
    a = on(device, scenario("adam", "float64"), "float64")
    b = on(device, scenario("adam", "float64"), "float64", look_ahead=False)
    rows = counted(a)
    for s in (a, b):
        s.checkpoint_seconds = 0
        s.add_breakpoint(text)
    ra, rb = a.run(max_steps=40), b.run(max_steps=40)
    assert rows and (ra.reason == "breakpoint") == (phase is not None)
    if phase is not None:
        assert a.last_phase == phase and a.step_count < 39
    same_run(a, b, ra, rb)
    ra, rb = a.run(max_steps=6), b.run(max_steps=6)
    same_run(a, b, ra, rb)


def test_a_non_finite_value_on_a_device_pauses_with_the_culprit_stepping_names(device):
    run = on(device, scenario("sgd", "float32", {"lr": 1e30}))
    ref = on(device, scenario("sgd", "float32", {"lr": 1e30}), look_ahead=False)
    bad: list = []
    rows = counted(run, bad)
    result = run.run(max_steps=50)
    rb = ref.run(max_steps=50)
    assert result.reason == rb.reason == "nonfinite" and rows and "updates" in bad
    assert str(result.nonfinite) == str(rb.nonfinite) and run.cursor == ref.cursor
    assert [e.message for e in run.events] == [e.message for e in ref.events]


def test_a_loss_that_overflows_while_the_weights_stay_finite_pauses_where_stepping_does(device):
    """w ← w − 50·2w = −99·w: float32's w² overflows in the loss of iteration 10, inside a
    look ahead (iterations 8–15), while w and its gradient stay finite up to iteration 19:
    only the row's loss says it. The run goes back and pauses at that loss, as a run
    checking each phase does, and with a stop at step 10 stops there as that run does."""
    text = ONE_WEIGHT.format(w=1.0, lr=50.0, dtype="float32")
    run, ref = on(device, text), on(device, text, look_ahead=False)
    bad: list = []
    rows = counted(run, bad)
    result, rb = run.run(max_steps=40), ref.run(max_steps=40)
    assert rows[:4] == [1, 2, 4, 8] and bad[3] == "updates"
    assert result.reason == rb.reason == "nonfinite" and "loss" in str(result.nonfinite)
    same_run(run, ref, result, rb)
    a, b = on(device, text), on(device, text, look_ahead=False)
    for s in (a, b):
        s.add_breakpoint("step == 10")
    same_run(a, b, a.run(max_steps=40), b.run(max_steps=40))
    assert a.step_count == 10


def test_a_device_update_whose_state_overflows_pauses_where_stepping_does(device):
    """Adagrad's sum overflows in the sixth update while the weight, the loss and the
    gradient stay finite: only the last update's flag, read with the look ahead's rows,
    says it; the run goes back and pauses where a run checking each phase does."""
    run, ref = on(device, OVERFLOW), on(device, OVERFLOW, look_ahead=False)
    bad: list = []
    rows = counted(run, bad)
    result, rb = run.run(max_steps=50), ref.run(max_steps=50)
    assert result.reason == rb.reason == "nonfinite" and run.step_count == ref.step_count == 5
    assert "state sum" in run.events[-1].message and run.events[-1].message == ref.events[-1].message
    if device == "cpu":     # (a GPU's float32 norm of that sum overflows before the sum does: it decides sooner)
        assert rows[2] == 4 and bad[2] == "updates"


def test_a_flag_pending_from_before_a_look_ahead_is_read_with_it():
    """The first Adam step makes v infinite (g² overflows float32). That update is the
    run's first, checked phase by phase, and its flag is still on the device when the
    first look ahead begins: read with that look ahead's rows, it sends the run back, and
    the run pauses at the first update, as stepping does. (On a GPU the norm of g itself
    overflows, float32 summing its squares in float32 there: the first iteration is
    searched for its culprit at once, and no flag is left pending.)"""
    device = "cpu"
    text = OVERFLOW.replace("1.97e9", "1e19").replace('"adagrad"', '"adam"').replace("lr = 0.01", "lr = 0.001")
    run, ref = on(device, text), on(device, text, look_ahead=False)
    bad: list = []
    rows = counted(run, bad)
    reads = []
    read = run.backend.read_ahead
    run.backend.read_ahead = lambda rows, grads, flags: (reads.append(len(flags)), read(rows, grads, flags))[1]
    result, rb = run.run(max_steps=20), ref.run(max_steps=20)
    assert rows == [1] and bad == ["updates"] and reads == [1]
    assert result.reason == rb.reason == "nonfinite" and run.step_count == ref.step_count == 0
    assert "exp_avg_sq" in run.events[-1].message and run.cursor == ref.cursor


def test_an_error_in_a_device_look_ahead_leaves_the_session_and_its_pending_flags(device, monkeypatch):
    monkeypatch.setattr(run_ahead, "AHEAD", 4)
    s, ref = on(device, scenario()), on(device, scenario(), look_ahead=False)
    s.run(max_steps=3)
    ref.run(max_steps=3)
    _, iteration = interrupt_at(s.backend, "iteration_on_device", 6)
    with pytest.raises(KeyboardInterrupt):
        s.run(max_steps=40)
    assert s.phase_due == "forward" and len(s.history.losses) == s.step_count > 3
    ref.run(max_steps=s.step_count - 3)
    s.backend.iteration_on_device = iteration
    ra, rb = s.run(max_steps=9), ref.run(max_steps=9)
    same_run(s, ref, ra, rb)


def test_a_large_model_on_a_device_does_not_look_ahead(monkeypatch):
    """A look ahead's capture copies the parameters and optimizer state on the device: from
    `DEVICE_CAPTURE_LARGE` bytes of parameters, a run checks each phase as it goes."""
    s = on("cpu", scenario())
    assert s._can_run_ahead([], None)
    monkeypatch.setattr(run_ahead, "DEVICE_CAPTURE_LARGE", s._measure_nbytes)
    assert not s._can_run_ahead([], None)

"""The Session: phase order, the cursor, batching, step/epoch/run, conditions and breakpoints,
bit-exact determinism and rewind, live settings and branches, the non-finite pause, explain,
gradcheck and the records — checked against independent computations (torch, hand formulas,
plain numpy simulations) and against fresh sessions, never against earlier output alone."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import gdstep
from gdstep.bundled import bundled, scenarios_dir
from gdstep.errors import GdstepError, PhaseOrderError
from gdstep.fmt import num
from gdstep.records import PHASES
from gdstep.scenario import parse_scenario


def open_text(text: str, **kw) -> gdstep.Session:
    return gdstep.open(parse_scenario(text), **kw)


def scenario_text(name: str) -> str:
    return (scenarios_dir() / f"{name}.toml").read_text()


def spiral(**kw) -> gdstep.Session:
    return gdstep.open(scenarios_dir() / "spiral.toml", **kw)


def regression(n: int = 10, batch: str = '"full"', optimizer: str = 'kind = "sgd"\nlr = 0.1', shuffle: bool = True,
               extra: str = "") -> str:
    return f"""
seed = 5
[data]
kind = "linear"
n = {n}
features = 2
noise = 0.1
[model]
layers = [ {{ linear = 3 }}, "tanh", {{ linear = 1 }} ]
[loss]
kind = "mse"
[optimizer]
{optimizer}
[training]
batch_size = {batch}
shuffle = {"true" if shuffle else "false"}
epochs = 1000
{extra}
"""


def snapshot(s: gdstep.Session) -> dict:
    return {"cursor": s.cursor, "step": s.step_count, "params": s.params, "state": s.optimizer_state,
            "losses": tuple(s.history.losses), "position": s.position}


def assert_identical(a: dict, b: dict) -> None:
    """Bit-identical: np.array_equal, never allclose."""
    assert a["cursor"] == b["cursor"] and a["step"] == b["step"] and a["position"] == b["position"]
    assert a["params"].keys() == b["params"].keys()
    for name in a["params"]:
        assert np.array_equal(a["params"][name], b["params"][name]), name
    assert a["state"].keys() == b["state"].keys()
    for name in a["state"]:
        assert a["state"][name].keys() == b["state"][name].keys()
        for key, value in a["state"][name].items():
            other = b["state"][name][key]
            if value is None or isinstance(value, (int, float)):
                assert value == other, (name, key)
            else:
                assert np.array_equal(value, other), (name, key)
    assert a["losses"] == b["losses"]


def advance(s: gdstep.Session, position: int) -> gdstep.Session:
    while s.position < position:
        s.next_phase()
    return s


# -- phase order and the cursor ------------------------------------------------------------------

def test_phases_run_in_order_and_out_of_order_names_the_due_phase():
    s = spiral()
    calls = {"forward": s.forward, "loss": s.loss, "backward": s.backward, "update": s.update}
    for i, due in enumerate(PHASES * 2):
        for name, call in calls.items():
            if name != due:
                with pytest.raises(PhaseOrderError) as info:
                    call()
                assert info.value.due == due and info.value.called == name
                assert f"{due} is due next" in str(info.value) and name in str(info.value)
        assert s.phase_due == due
        calls[due]()
    assert s.step_count == 2


def test_cursor_moves_phase_by_phase_and_over_epochs():
    s = open_text(regression(n=10, batch="4"))
    assert s.cursor == (1, 1, "forward") and s.position == 0 and s.last_phase is None
    seen = []
    for _ in range(4 * 4):
        rec = s.next_phase()
        seen.append(tuple(s.cursor))
    assert seen[:4] == [(1, 1, "loss"), (1, 1, "backward"), (1, 1, "update"), (1, 2, "forward")]
    # 10 samples in batches of 4: iterations 1, 2, 3 (of 4, 4, 2), then epoch 2
    assert seen[11] == (2, 1, "forward")
    assert seen[15] == (2, 2, "forward")
    assert s.step_count == 4 and s.position == 16 and s.last_phase == "update"
    assert str(s.cursor) == "epoch 2 · iteration 2 · forward next"


@pytest.mark.parametrize("batch, sizes", [('"full"', [10]), ("4", [4, 4, 2]), ("1", [1] * 10), ("3", [3, 3, 3, 1])])
def test_batching_covers_every_sample_once_per_epoch(batch, sizes):
    s = open_text(regression(n=10, batch=batch))
    assert s.iterations_per_epoch == len(sizes)
    orders = []
    for epoch in (1, 2, 3):
        got_sizes, order = [], []
        while s.cursor.epoch == epoch:
            rec = s.forward()
            got_sizes.append(len(rec.indices))
            order.extend(rec.indices.tolist())
            np.testing.assert_array_equal(rec.inputs, s.scenario.dataset.x[rec.indices])
            s.loss(), s.backward(), s.update()
        assert got_sizes == sizes
        assert sorted(order) == list(range(10))             # a permutation of the data
        orders.append(order)
    if len(sizes) > 1:
        assert orders[0] != orders[1] or orders[1] != orders[2]   # reshuffled per epoch


def test_no_shuffle_keeps_the_file_order():
    s = open_text(regression(n=10, batch="4", shuffle=False))
    order = []
    for _ in range(3):
        order.extend(s.forward().indices.tolist())
        s.loss(), s.backward(), s.update()
    assert order == list(range(10))


def batch_orders(text: str, iterations: int = 8) -> list[list[int]]:
    s = open_text(text)
    orders = []
    for _ in range(iterations):
        orders.append(s.forward().indices.tolist())
        s.loss(), s.backward(), s.update()
    return orders


def test_data_order_is_fixed_by_the_seed():
    text = regression(n=10, batch="3")
    assert batch_orders(text) == batch_orders(text)
    assert batch_orders(text) != batch_orders(text.replace("seed = 5", "seed = 6"))


# -- a whole mini-batch trajectory against torch ------------------------------------------------

def test_spiral_minibatch_adam_trajectory_matches_torch():
    """35 iterations of the bundled spiral (batches of 32 over 300 samples, so a short last
    batch and a reshuffle): the same batches through torch.nn + torch.optim.Adam, float64."""
    s = spiral()
    p0 = s.params
    lin1, lin2 = torch.nn.Linear(2, 32).double(), torch.nn.Linear(32, 3).double()
    with torch.no_grad():
        for mod, k in ((lin1, "0"), (lin2, "2")):
            mod.weight.copy_(torch.tensor(p0[f"{k}.weight"]))
            mod.bias.copy_(torch.tensor(p0[f"{k}.bias"]))
    model = torch.nn.Sequential(lin1, torch.nn.ReLU(), lin2)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    x_all, y_all = torch.tensor(s.scenario.dataset.x), torch.tensor(s.scenario.dataset.y)
    sizes = []
    for _ in range(35):
        rec = s.forward()
        idx = torch.tensor(rec.indices)
        sizes.append(len(idx))
        loss = s.loss()
        bwd = s.backward()
        s.update()
        opt.zero_grad()
        out = model(x_all[idx])
        ref = torch.nn.functional.cross_entropy(out, y_all[idx])
        ref.backward()
        assert loss.value == pytest.approx(ref.item(), rel=1e-10)
        np.testing.assert_allclose(bwd.grads["0.weight"], lin1.weight.grad.numpy(), rtol=1e-9, atol=1e-12)
        opt.step()
        params = s.params
        np.testing.assert_allclose(params["0.weight"], lin1.weight.detach().numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(params["2.bias"], lin2.bias.detach().numpy(), rtol=1e-10, atol=1e-10)
    assert sizes.count(12) == 3 and sizes.count(32) == 32     # 300 = 9 × 32 + 12, three epochs and a bit
    st = s.optimizer_state["0.weight"]
    tst = opt.state[lin1.weight]
    np.testing.assert_allclose(st["exp_avg_sq"], tst["exp_avg_sq"].numpy(), rtol=1e-9, atol=1e-14)
    assert st["step"] == int(tst["step"]) == 35


# -- step, epoch, run -------------------------------------------------------------------------

def test_step_and_epoch_semantics():
    s = open_text(regression(n=10, batch="4"))
    r = s.step()
    assert (r.reason, r.steps, r.phases, s.step_count, s.cursor) == ("done", 1, 4, 1, (1, 2, "forward"))
    s.forward(), s.loss()
    r = s.step()                                 # finishing the current iteration counts as the first
    assert (r.steps, r.phases, s.step_count, s.cursor.phase) == (1, 2, 2, "forward")
    r = s.step(3)
    assert (r.steps, s.step_count) == (3, 5)
    assert s.cursor == (2, 3, "forward")
    r = s.epoch()                                # to the end of the current epoch
    assert s.cursor == (3, 1, "forward") and r.steps == 1
    s.forward()
    r = s.epoch(2)
    assert s.cursor == (5, 1, "forward") and s.step_count == 12
    assert r.reason == "done"


def test_run_stops_at_max_steps_until_and_the_epoch_limit():
    s = open_text(regression(n=10, batch="4").replace("epochs = 1000", "epochs = 4"))
    r = s.run(max_steps=5)
    assert (r.reason, r.steps, s.step_count) == ("max_steps", 5, 5)
    r = s.run(until="step >= 7")
    assert (r.reason, s.step_count, s.cursor.phase) == ("until", 7, "forward")
    assert "step = 7" in r.message
    r = s.run()
    assert r.reason == "epochs" and s.step_count == 12 and s.cursor == (5, 1, "forward")
    r = s.run()                                   # nothing left to do
    assert r.reason == "epochs" and r.steps == 0


def test_zero_counts_run_nothing_and_negative_counts_are_refused():
    s = spiral()
    for call in (lambda: s.step(0), lambda: s.epoch(0), lambda: s.run(max_steps=0)):
        r = call()
        assert (r.steps, r.phases, s.position) == (0, 0, 0)
    s.forward()
    assert s.step(0).phases == 0 and s.position == 1
    for call in (lambda: s.step(-1), lambda: s.epoch(-2), lambda: s.run(max_steps=-3)):
        with pytest.raises(GdstepError, match=">= 0"):
            call()
    assert s.position == 1


def test_run_until_loss_is_checked_right_after_the_loss_phase():
    s = gdstep.open(scenarios_dir() / "textbook.toml")
    r = s.run(until="loss < 0.2")
    assert r.reason == "until" and s.cursor.phase == "backward"
    losses = s.history.losses
    assert losses[-1] < 0.2 and all(v >= 0.2 for v in losses[:-1])


def test_stop_when_of_the_scenario():
    s = gdstep.open(scenarios_dir() / "linear.toml")
    r = s.run()
    assert r.reason == "stop_when" and "loss < 0.045" in r.message
    losses = s.history.losses
    assert losses[-1] < 0.045 and all(v >= 0.045 for v in losses[:-1])
    assert any(e.kind == "stop" for e in s.events)


def test_stop_when_bounds_run_but_not_step_or_epoch():
    s = gdstep.open(scenarios_dir() / "linear.toml")
    s.run()
    assert s.loss_value < 0.045 and s.cursor.phase == "backward"
    for _ in range(3):                             # the loss stays below: step still does whole iterations
        r = s.step()
        assert (r.reason, r.steps, s.cursor.phase) == ("done", 1, "forward")
    r = s.epoch()
    assert r.reason == "done" and s.cursor.iteration == 1
    r = s.run()                                    # run stops again at the next loss below it
    assert r.reason == "stop_when" and s.loss_value < 0.045


def simulate_full_batch_linear(x, y, lr, steps):
    """Plain numpy full-batch gradient descent on y ≈ x·w + b with the mse loss, from zeros."""
    w, b = np.zeros(x.shape[1]), 0.0
    losses = []
    for _ in range(steps):
        out = x @ w + b
        err = out - y[:, 0]
        losses.append(float(np.mean(err * err)))
        gw = 2 * (err @ x) / len(x)
        gb = 2 * err.sum() / len(x)
        w, b = w - lr * gw, b - lr * gb
    return losses


def test_scenario_breakpoint_fires_on_the_first_loss_increase():
    s = gdstep.open(scenarios_dir() / "overshoot.toml")
    ds = s.scenario.dataset
    ref = simulate_full_batch_linear(ds.x, ds.y, 1.2, 20)
    first_up = next(i for i in range(1, 20) if ref[i] > ref[i - 1])
    r = s.run()
    assert r.reason == "breakpoint"
    assert s.step_count == first_up and s.cursor.phase == "backward"
    assert s.loss_value == pytest.approx(ref[first_up], rel=1e-12)
    assert s.prev_loss == pytest.approx(ref[first_up - 1], rel=1e-12)
    assert s.breakpoints[0].hits == 1
    assert "breakpoint 1 hit: loss > prev_loss" in r.message
    assert s.events[-1].kind == "breakpoint"


def test_add_disable_and_remove_breakpoints():
    s = open_text(regression(n=10, batch="4"))
    bp = s.add_breakpoint("step == 3")
    assert s.events[-1].kind == "setting" and "step == 3" in s.events[-1].message
    r = s.run()
    assert (r.reason, s.step_count) == ("breakpoint", 3)
    grad = s.add_breakpoint("grad_norm > 0")
    r = s.run()
    assert r.reason == "breakpoint" and s.cursor.phase == "update" and "grad_norm" in r.message
    s.remove_breakpoint(grad.id)
    bp.enabled = False
    r = s.run(max_steps=5)
    assert r.reason == "max_steps"
    with pytest.raises(GdstepError, match="no breakpoint 99"):
        s.remove_breakpoint(99)
    with pytest.raises(GdstepError):
        s.add_breakpoint("loss >")
    with pytest.raises(GdstepError, match="no parameter"):
        s.add_breakpoint("7.weight[0,0] > 1")


def test_parameter_element_breakpoint():
    s = gdstep.open(scenarios_dir() / "textbook.toml")
    s.add_breakpoint("2.weight[0,0] < 0.3")
    r = s.run()
    assert r.reason == "breakpoint" and s.cursor.phase == "forward"
    assert s.params["2.weight"][0, 0] < 0.3
    assert s.record("update").params["2.weight"].old[0, 0] >= 0.3


# -- determinism and rewind --------------------------------------------------------------------

def test_same_seed_gives_bit_identical_runs():
    a, b = spiral(), spiral()
    a.step(40), b.step(40)
    assert_identical(snapshot(a), snapshot(b))


def test_rewind_and_rerun_is_bit_identical():
    s = spiral()
    s.step(25)
    s.forward(), s.loss()
    end = snapshot(s)
    fwd_indices = s.record("forward").indices.copy()
    s.back(iterations=20)
    assert s.step_count == 5 and s.cursor.phase == "backward"
    s.step(20)
    s.forward(), s.loss()
    assert_identical(snapshot(s), end)
    np.testing.assert_array_equal(s.record("forward").indices, fwd_indices)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 7, 13, 40, 101])
def test_back_phases_equals_a_fresh_session_at_that_point(k):
    s = spiral()
    start = 4 * 27 + 2
    advance(s, start)
    events = len(s.events)
    cursor = s.back(phases=k)
    assert s.position == start - k and cursor == s.cursor
    fresh = advance(spiral(), start - k)
    assert_identical(snapshot(s), snapshot(fresh))
    for phase in PHASES:
        ours, theirs = s.record(phase), fresh.record(phase)
        assert (ours is None) == (theirs is None), phase
    if s.record("forward") is not None and s.phase_due != "forward":
        np.testing.assert_array_equal(s.record("forward").indices, fresh.record("forward").indices)
    assert s.events[events].kind == "rewind"
    # and going on from there gives what going on from the fresh one gives
    s.step(3), fresh.step(3)
    assert_identical(snapshot(s), snapshot(fresh))


def test_back_iterations_and_clamping():
    s = spiral()
    advance(s, 4 * 12 + 3)
    s.back(iterations=5)
    assert s.position == 4 * 7 + 3 and s.cursor.phase == "update"
    assert_identical(snapshot(s), snapshot(advance(spiral(), 4 * 7 + 3)))
    s.back(iterations=100)
    assert s.position == 0 and s.cursor == (1, 1, "forward")
    assert_identical(snapshot(s), snapshot(spiral()))
    s.back()                                       # at the start: stays
    assert s.position == 0
    with pytest.raises(GdstepError):
        s.back(phases=1, iterations=1)
    with pytest.raises(GdstepError):
        s.back(phases=-1)


def test_long_rewind_over_thinned_history_is_exact():
    s = spiral(history_budget=200_000)            # a few snapshots only: most rewinds recompute
    s.step(300)
    end = snapshot(s)
    for back in (299, 150, 1, 77):
        s.back(iterations=back)
        assert_identical(snapshot(s), snapshot(advance(spiral(), s.position)))
        s.step(back)
        assert_identical(snapshot(s), end)


# -- live settings ------------------------------------------------------------------------------

def test_set_lr_takes_effect_at_the_next_iteration_and_is_logged():
    s = open_text(regression(n=10, batch="4"))
    s.forward(), s.loss()
    at = s.set(lr=0.5)
    assert at == 1
    assert s.events[-1].kind == "setting" and "lr → 0.5" in s.events[-1].message
    s.backward()
    u = s.update()
    assert u.lr == 0.1                             # this iteration keeps the old lr
    np.testing.assert_array_equal(u.params["0.weight"].new, u.params["0.weight"].old - 0.1 * u.params["0.weight"].grad)
    assert s.lr == 0.5
    s.forward(), s.loss(), s.backward()
    u = s.update()
    assert u.lr == 0.5
    np.testing.assert_array_equal(u.params["0.weight"].new, u.params["0.weight"].old - 0.5 * u.params["0.weight"].grad)


def test_set_at_a_boundary_applies_to_this_iteration():
    s = open_text(regression(n=10, batch="4"))
    s.step(2)
    assert s.set(lr=0.25) == 2
    s.step()
    assert s.record("update").lr == 0.25


def test_set_optimizer_starts_fresh_state():
    s = open_text(regression(n=10, batch="4", optimizer='kind = "sgd"\nlr = 0.1\nmomentum = 0.9'))
    s.step(3)
    assert s.optimizer_state["0.weight"]["momentum_buffer"] is not None
    s.set(optimizer="adam", betas=(0.8, 0.9))
    assert "adam" in s.events[-1].message
    s.step()
    u = s.record("update").params["0.weight"]
    assert u.state_before["step"] == 0 and not u.state_before["exp_avg"].any()
    g = u.grad
    m, v = 0.2 * g, 0.1 * g * g                    # the first Adam step, by hand
    np.testing.assert_allclose(u.state_after["exp_avg"], m, rtol=1e-15)
    np.testing.assert_allclose(u.state_after["exp_avg_sq"], v, rtol=1e-15)
    expected = u.old - 1e-3 * (m / 0.2) / (np.sqrt(v / 0.1) + 1e-8)  # torch's default lr for Adam
    np.testing.assert_allclose(u.new, expected, rtol=1e-12)
    assert s.record("update").optimizer.kind == "adam" and s.lr == 1e-3 == torch_default_lr("Adam")
    assert "lr=0.001" in s.events[-1].message and "fresh state" in s.events[-1].message
    with pytest.raises(GdstepError):
        s.set(optimizer="adamm")
    with pytest.raises(GdstepError):
        s.set(lr=-1.0)
    with pytest.raises(GdstepError):
        s.set()


def test_set_batch_size():
    s = open_text(regression(n=10, batch="4"))
    s.forward()
    s.set(batch_size=3)
    assert s.record("forward").indices.size == 4
    s.loss(), s.backward(), s.update()
    assert len(s.forward().indices) == 3
    s.loss(), s.backward(), s.update()
    s.set(batch_size="full")
    s.step()                                      # what is left of the epoch, then full batches
    assert len(s.record("forward").indices) == 10 - 7
    assert len(s.forward().indices) == 10
    with pytest.raises(GdstepError):
        s.set(batch_size=0)


def test_rewind_across_settings_changes_is_exact():
    s = open_text(regression(n=10, batch="4", optimizer='kind = "sgd"\nlr = 0.1\nmomentum = 0.5'))
    s.step(2)
    s.set(batch_size=3, lr=0.05)
    s.step(3)
    s.set(optimizer="adam")
    s.step(4)
    s.forward()
    end, sizes = snapshot(s), tuple(s.history.batch_sizes)
    assert sizes == (4, 4, 2, 3, 3, 3, 1, 3, 3)      # 10 samples: 4, 4, (3 asked, 2 left) | 3, 3, 3, 1 | 3, 3
    for k in (1, 5, 8, 9):
        s.back(iterations=k)
        assert tuple(s.history.batch_sizes) == sizes[:9 - k]
        s.step(k)
        s.forward()
        assert_identical(snapshot(s), end)
        assert tuple(s.history.batch_sizes) == sizes
    s.back(iterations=9)                            # before any change: the scenario's settings
    assert s.batch_size == 4 and s.lr == 0.1 and s.optimizer.kind == "sgd"


def test_set_after_a_rewind_starts_a_new_branch():
    s = spiral()
    s.step(10)
    old_branch = snapshot(s)
    s.back(iterations=5)
    s.set(lr=0.05)
    s.step(5)
    new_branch = snapshot(s)
    ref = spiral()
    ref.step(5), ref.set(lr=0.05), ref.step(5)
    assert_identical(new_branch, snapshot(ref))
    assert not np.array_equal(new_branch["params"]["0.weight"], old_branch["params"]["0.weight"])
    # rewinding inside the new branch recomputes the new branch, not the old one
    s.back(iterations=3)
    s.step(3)
    assert_identical(snapshot(s), new_branch)
    s.back(iterations=8)                          # before the change: replaying passes through it again
    s.step(8)
    assert_identical(snapshot(s), new_branch)


# -- the non-finite pause -----------------------------------------------------------------------

def test_diverging_learning_rate_pauses_at_the_first_non_finite_value():
    text = scenario_text("linear").replace("lr = 0.3", "lr = 50.0").replace("batch_size = 16", 'batch_size = "full"\nshuffle = false')
    text = text.replace('stop_when = "loss < 0.045"', "").replace("epochs = 50", "epochs = 1000")
    s = open_text(text)
    ds = s.scenario.dataset
    with np.errstate(all="ignore"):
        ref = simulate_full_batch_linear(ds.x, ds.y, 50.0, 1000)
    first_bad = next(i for i, v in enumerate(ref) if not math.isfinite(v))
    r = s.run()
    assert r.reason == "nonfinite"
    assert r.nonfinite.phase == "loss" and "loss" in r.nonfinite.where
    assert s.step_count == first_bad
    assert s.cursor.phase == "loss"                # the state from before the loss phase
    assert all(np.isfinite(p).all() for p in s.params.values())
    assert s.events[-1].kind == "nonfinite" and "state kept from before loss" in s.events[-1].message
    assert s.loss_value == pytest.approx(ref[first_bad - 1], rel=1e-9)
    # the session still works: rewind, a sensible lr, go on
    s.back(iterations=first_bad - 1)
    s.set(lr=0.1)
    r = s.run(max_steps=300)
    assert r.reason == "max_steps" and math.isfinite(s.loss_value) and s.loss_value < 0.1


def test_non_finite_update_names_the_parameter_and_element():
    text = """
[data]
kind = "inline"
x = [[1.0, 2.0]]
y = [[3.0]]
[model]
layers = [ { linear = 1 } ]
init = "zeros"
[loss]
kind = "half_sse"
[optimizer]
kind = "sgd"
lr = 1e308
"""
    s = open_text(text)
    r = s.run()
    # by hand: g = (0 − 3)·x = [−3, −6]; W = 0 − 1e308·(−3) = 3e308 overflows: 0.weight[0,0] first
    assert r.reason == "nonfinite"
    bad = r.nonfinite
    assert (bad.phase, bad.where, bad.index, bad.value) == ("update", "0.weight", (0, 0), math.inf)
    assert "0.weight[0,0]" in r.message
    assert s.cursor == (1, 1, "update") and s.step_count == 0
    assert np.array_equal(s.params["0.weight"], [[0.0, 0.0]])
    np.testing.assert_array_equal(s.grads["0.weight"], [[-3.0, -6.0]])
    s.back(phases=3)
    s.set(lr=0.1)
    r = s.run(max_steps=50)
    assert r.reason == "max_steps" and s.loss_value < 1e-6


OVERFLOW = """
[data]
kind = "inline"
x = [[1.0, 2.0]]
y = [[3.0]]
[model]
layers = [ { linear = 2 }, "relu", { linear = 1 } ]
[init]
"0.weight" = [[W, W], [1.0, 1.0]]
[loss]
kind = "mse"
[optimizer]
kind = "adam"
"""


def test_non_finite_activation_and_loss_are_found_where_they_first_appear():
    # z[0,0] = 1e308·1 + 1e308·2 overflows in the first linear layer
    s = open_text(OVERFLOW.replace("W", "1e308"))
    r = s.run()
    assert r.reason == "nonfinite"
    assert (r.nonfinite.phase, r.nonfinite.where, r.nonfinite.index) == ("forward", "layer 0 linear output", (0, 0))
    assert s.position == 0 and s.record("forward") is None
    # z is finite (3e200) but its square is not: the loss of sample 0
    s = open_text(OVERFLOW.replace("W", "1e200"))
    r = s.run()
    assert (r.nonfinite.phase, r.nonfinite.where, r.nonfinite.index) == ("loss", "loss of sample", (0,))
    assert s.position == 1 and s.cursor.phase == "loss"
    assert s.record("forward").outputs[0][0, 0] == pytest.approx(3e200, rel=1e-12)


def test_float32_on_request():
    s32, s64 = spiral(dtype="float32"), spiral()
    s32.step(3), s64.step(3)
    for name, p in s32.params.items():
        assert p.dtype == np.float32
        np.testing.assert_allclose(p, s64.params[name], rtol=1e-4, atol=1e-5)
    assert s32.optimizer_state["0.weight"]["exp_avg"].dtype == np.float32
    assert s32.gradcheck("0.weight", (0, 0)).ok
    e = s32.explain("0.weight", (0, 0))
    assert e.terms[-1].value == pytest.approx(e.w_new, rel=1e-5)
    assert e.note is None or "float32" in e.note


def test_a_single_phase_that_goes_non_finite_runs_and_is_logged():
    s = open_text("""
[data]
kind = "inline"
x = [[1.0, 2.0]]
y = [[3.0]]
[model]
layers = [ { linear = 1 } ]
init = "zeros"
[loss]
kind = "half_sse"
[optimizer]
kind = "sgd"
lr = 1e308
""")
    s.forward(), s.loss(), s.backward(), s.update()
    assert s.step_count == 1 and np.isinf(s.params["0.weight"][0, 0])
    assert s.events[-1].kind == "nonfinite"
    assert s.value("nan") is True
    s.back()
    assert s.value("nan") is False and s.cursor.phase == "update"


# -- explain: each optimizer's formula by hand ------------------------------------------------

def hand_update(kind: str, hp: dict, w: float, g: float, st: dict) -> float:
    lr = hp["lr"]
    if kind == "sgd":
        g = g + hp["weight_decay"] * w
        b = g if st["momentum_buffer"] is None else hp["momentum"] * st["momentum_buffer"] + (1 - hp["dampening"]) * g
        return w - lr * (g + hp["momentum"] * b if hp["nesterov"] else b)
    if kind == "rmsprop":
        g = g + hp["weight_decay"] * w
        a = hp["alpha"]
        v = a * st["square_avg"] + (1 - a) * g * g
        ga = a * st["grad_avg"] + (1 - a) * g
        denom = math.sqrt(v - ga * ga) + hp["eps"]
        b = hp["momentum"] * st["momentum_buffer"] + g / denom
        return w - lr * b
    if kind == "adagrad":
        g = g + hp["weight_decay"] * w
        t = st["step"] + 1
        s = st["sum"] + g * g
        return w - lr / (1 + (t - 1) * hp["lr_decay"]) * g / (math.sqrt(s) + hp["eps"])
    b1, b2 = hp["betas"]
    t = st["step"] + 1
    if kind == "adamw":
        w = w * (1 - lr * hp["weight_decay"])
    else:
        g = g + hp["weight_decay"] * w
    m = b1 * st["exp_avg"] + (1 - b1) * g
    v = b2 * st["exp_avg_sq"] + (1 - b2) * g * g
    if hp["amsgrad"]:
        v = max(v, st["max_exp_avg_sq"])
    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    return w - lr * m_hat / (math.sqrt(v_hat) + hp["eps"])


EXPLAIN = {
    "sgd": 'kind = "sgd"\nlr = 0.1\nmomentum = 0.9\ndampening = 0.1\nweight_decay = 0.01',
    "sgd-nesterov": 'kind = "sgd"\nlr = 0.1\nmomentum = 0.9\nnesterov = true',
    "rmsprop": 'kind = "rmsprop"\nlr = 0.01\nalpha = 0.9\nmomentum = 0.5\ncentered = true\nweight_decay = 0.01',
    "adagrad": 'kind = "adagrad"\nlr = 0.1\nlr_decay = 0.1\nweight_decay = 0.01\ninitial_accumulator_value = 0.1',
    "adam": 'kind = "adam"\nlr = 0.01\nbetas = [0.8, 0.9]\nweight_decay = 0.01\namsgrad = true',
    "adamw": 'kind = "adamw"\nlr = 0.01\nweight_decay = 0.1',
}


@pytest.mark.parametrize("case", sorted(EXPLAIN))
def test_explain_equals_the_hand_formula(case):
    s = open_text(regression(n=10, batch="4", optimizer=EXPLAIN[case]))
    opt = s.scenario.optimizer
    hp = {f: getattr(opt, f) for f in opt.__dataclass_fields__}
    hp.setdefault("grad_avg", None)
    for _ in range(4):
        s.step()
        u = s.record("update").params["0.weight"]
        for index in [(0, 0), (2, 1)]:
            e = s.explain("0.weight", index)
            st = {k: (v if v is None or isinstance(v, int) else float(v[index])) for k, v in u.state_before.items()}
            st.setdefault("grad_avg", 0.0), st.setdefault("momentum_buffer", 0.0) if opt.kind == "rmsprop" else None
            w, g = float(u.old[index]), float(u.grad[index])
            assert (e.w_old, e.grad, e.w_new) == (w, g, float(u.new[index]))
            assert hand_update(opt.kind, hp, w, g, st) == pytest.approx(e.w_new, rel=1e-12, abs=1e-15)
            assert e.terms[-1].value == pytest.approx(e.w_new, rel=1e-12, abs=1e-15)
            assert e.note is None
            assert e.text.startswith("W_new = ") and e.text.endswith(f" = {num(e.w_new)}")
            assert e.optimizer == opt.kind and e.step == s.step_count - 1
    with pytest.raises(GdstepError):
        s.explain("0.weight", (5, 0))
    with pytest.raises(GdstepError):
        s.explain("9.weight", (0, 0))


def test_explain_before_any_update_and_for_frozen_parameters():
    s = open_text(regression(n=10, batch="4").replace('[loss]', 'frozen = ["2.bias"]\n[loss]'))
    with pytest.raises(GdstepError, match="no update"):
        s.explain("0.weight", (0, 0))
    s.step()
    with pytest.raises(GdstepError, match="frozen"):
        s.explain("2.bias", (0,))


def test_explain_sgd_momentum_shows_the_buffer_line_first():
    s = open_text(regression(n=10, batch="4", optimizer='kind = "sgd"\nlr = 0.1\nmomentum = 0.9'))
    s.step(2)
    e = s.explain("0.weight", (0, 0))
    assert [t.symbol for t in e.terms] == ["g", "b", "W_new"]
    b = e.terms[1].value
    assert b == pytest.approx(0.9 * e.state_before["momentum_buffer"] + e.grad, rel=1e-14)
    assert b == e.state_after["momentum_buffer"]
    assert e.text == f"W_new = {num(e.w_old)} − 0.1 × {num(b) if b >= 0 else '(' + num(b) + ')'} = {num(e.w_new)}"


# -- gradcheck on every bundled scenario --------------------------------------------------------

@pytest.mark.parametrize("name, path", [(name, path) for name, path, _ in bundled()], ids=lambda v: getattr(v, "stem", v))
def test_gradcheck_is_ok_on_every_bundled_scenario(name, path):
    s = gdstep.open(path, dtype="float64")          # a .py scenario runs on torch, checked in float64
    for bp in s.breakpoints:
        bp.enabled = False
    s.step(3)
    s.forward()                                    # mid-iteration: the current batch
    rng = np.random.default_rng(0)
    for pname, p in s.params.items():
        for _ in range(3):
            index = tuple(int(rng.integers(0, n)) for n in p.shape)
            result = s.gradcheck(pname, index)
            assert result.ok, str(result)
            # relative to the gradient, or below the central difference's rounding for a
            # vanishing one (lesson 11's first layers: ~1e-7, where rounding is ~1e-10)
            assert result.rel_error < 1e-5 or abs(result.analytic - result.numeric) < 1e-9, str(result)
    assert s.events[-1].kind == "gradcheck"


def test_gradcheck_finds_a_wrong_gradient(monkeypatch):
    s = gdstep.open(scenarios_dir() / "xor.toml")
    real = s.backend.gradients
    monkeypatch.setattr(s.backend, "gradients", lambda x, y: {k: v * 1.01 for k, v in real(x, y).items()})
    assert not s.gradcheck("0.weight", (0, 0)).ok


# -- records --------------------------------------------------------------------------------

def test_records_hold_every_value_and_the_last_delta_is_dL_doutput():
    s = spiral()
    s.step(2)
    fwd = s.forward()
    assert [o.shape for o in fwd.outputs] == [(32, 32), (32, 32), (32, 3)]
    assert fwd.layer_names == ("0 linear", "1 relu", "2 linear")
    z, a, out = fwd.outputs
    p = s.params
    np.testing.assert_allclose(z, fwd.inputs @ p["0.weight"].T + p["0.bias"], rtol=1e-14)
    np.testing.assert_array_equal(a, np.maximum(z, 0))
    loss = s.loss()
    assert loss.per_sample.shape == (32,) and loss.value == pytest.approx(loss.per_sample.mean(), rel=1e-14)
    bwd = s.backward()
    assert [d.shape for d in bwd.deltas] == [o.shape for o in fwd.outputs]
    out_t = torch.tensor(out, requires_grad=True)
    torch.nn.functional.cross_entropy(out_t, torch.tensor(loss.target)).backward()
    np.testing.assert_allclose(bwd.deltas[-1], out_t.grad.numpy(), rtol=1e-12, atol=1e-16)
    np.testing.assert_array_equal(bwd.grad_output, bwd.deltas[-1])
    np.testing.assert_allclose(bwd.deltas[0], bwd.deltas[1] * (z > 0), rtol=1e-14)
    assert bwd.grad_norm == pytest.approx(math.sqrt(sum(float((g ** 2).sum()) for g in bwd.grads.values())), rel=1e-12)
    for name, g in bwd.grads.items():
        assert bwd.grad_norms[name] == pytest.approx(float(np.linalg.norm(g)), rel=1e-12)
    upd = s.update()
    for name, u in upd.params.items():
        np.testing.assert_array_equal(u.old, p[name])
        np.testing.assert_array_equal(u.new, s.params[name])
        np.testing.assert_array_equal(u.grad, bwd.grads[name])
    delta = math.sqrt(sum(float(((u.new - u.old) ** 2).sum()) for u in upd.params.values()))
    weight = math.sqrt(sum(float((u.old ** 2).sum()) for u in upd.params.values()))
    assert upd.update_ratio() == pytest.approx(delta / weight, rel=1e-12)
    assert s.value("update_ratio") == pytest.approx(delta / weight, rel=1e-12)
    # records are immutable and the values returned are copies
    with pytest.raises((ValueError, TypeError)):
        fwd.outputs[0][0, 0] = 1.0
    with pytest.raises(AttributeError):
        fwd.step = 5  # type: ignore[misc]
    params = s.params
    params["0.weight"][0, 0] = 123.0
    assert s.params["0.weight"][0, 0] != 123.0
    grads = s.grads
    grads["0.weight"][0, 0] = 123.0
    assert s.grads["0.weight"][0, 0] != 123.0


def test_record_of_an_unknown_phase():
    s = spiral()
    assert s.record("forward") is None
    with pytest.raises(GdstepError):
        s.record("backwards")


def test_condition_context_values():
    s = open_text(regression(n=10, batch="4"))
    assert s.value("loss") is None and s.value("prev_loss") is None and s.value("phase") is None
    s.step()
    s.forward(), s.loss()
    assert s.value("loss") == s.history.losses[-1] and s.value("prev_loss") == s.history.losses[-2]
    assert (s.value("epoch"), s.value("iteration"), s.value("step"), s.value("phase")) == (1, 2, 1, "loss")
    assert s.value("lr") == 0.1
    s.backward()
    assert s.value("grad_norm") == s.record("backward").grad_norm
    assert s.param("0.weight", (1, 1)) == s.params["0.weight"][1, 1]


def test_per_iteration_history_is_compact_and_follows_rewinds():
    """A long run keeps 8 bytes a value of history: loss, epoch, batch size and three norms a
    trainable parameter (‖∇W‖, ‖ΔW‖², ‖W‖²) per iteration, not a dict per iteration."""
    s = gdstep.open("spiral")
    s.step(250)
    h = s.history
    n_params = len(s.backend.trainable)
    assert len(h.losses) == len(h.grad_norms) == 250
    held = s.history_nbytes
    assert held == 8 * 250 * (3 + 3 * n_params)
    assert set(h.grad_norms[-1]) == s.backend.trainable
    assert h.grad_norms[-1]["0.weight"] == pytest.approx(s.record("backward").grad_norms["0.weight"], rel=0, abs=0)
    s.back(iterations=100)
    assert len(s.history.losses) == len(s.history.grad_norms) == 150
    assert s.history.grad_norm_series("2.bias") == [row["2.bias"] for row in s.history.grad_norms]


def torch_default_lr(name: str) -> float:
    import inspect

    import torch
    return inspect.signature(getattr(torch.optim, name)).parameters["lr"].default


@pytest.mark.parametrize("kind, name", [("sgd", "SGD"), ("adam", "Adam"), ("adamw", "AdamW"), ("rmsprop", "RMSprop"),
                                        ("adagrad", "Adagrad")])
def test_set_optimizer_takes_torchs_default_lr_unless_given(kind, name):
    s = open_text(regression(n=10, batch="4", optimizer='kind = "sgd"\nlr = 0.5'))
    s.step()
    s.set(optimizer=kind)
    assert s.lr == torch_default_lr(name)
    s.set(optimizer=kind, lr=0.02)
    assert s.lr == 0.02


def test_set_a_hyperparameter_keeps_the_state_as_a_torch_param_group_edit():
    """SGD momentum 0.9 for 3 steps, then momentum 0.5 and dampening 0.1: the same as
    torch.optim.SGD whose param_groups are edited between steps, on the same batches."""
    import torch

    text = regression(n=10, batch="4", optimizer='kind = "sgd"\nlr = 0.1\nmomentum = 0.9')
    s = open_text(text)
    start = s.params
    batches = []
    for k in range(5):
        if k == 3:
            s.set(momentum=0.5, dampening=0.1)
            assert "state kept" in s.events[-1].message and s.optimizer.momentum == 0.5 and s.lr == 0.1
        batches.append(s.next_batch_indices())
        s.step()
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.tensor(start[name]))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x_all, y_all = torch.tensor(s.backend.x), torch.tensor(s.backend.y)
    for k, rows in enumerate(batches):
        if k == 3:
            opt.param_groups[0].update(momentum=0.5, dampening=0.1)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x_all[rows]), y_all[rows]).backward()
        opt.step()
    for name, p in model.named_parameters():
        np.testing.assert_allclose(s.params[name], p.detach().numpy(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(s.optimizer_state[name]["momentum_buffer"], opt.state[p]["momentum_buffer"].numpy(),
                                   rtol=1e-12, atol=1e-15)


def test_an_edit_that_needs_state_the_optimizer_lacks_is_refused():
    s = open_text(regression(n=10, batch="4", optimizer='kind = "rmsprop"\nlr = 0.01'))
    s.step(2)
    with pytest.raises(GdstepError, match=r"set momentum: rmsprop's state has no momentum_buffer .* set optimizer rmsprop momentum=0.9"):
        s.set(momentum=0.9)
    s.back(iterations=2)
    s.set(momentum=0.9)                      # before the first step there is no state to keep
    s.step()
    assert s.optimizer_state["0.weight"]["momentum_buffer"] is not None


def test_a_nesterov_edit_names_what_was_set():
    s = open_text(regression(n=10, batch="4", optimizer='kind = "sgd"\nlr = 0.1\nmomentum = 0.9\nnesterov = true'))
    with pytest.raises(GdstepError, match=r"^set momentum: nesterov: needs momentum > 0"):
        s.set(momentum=0.0)


def test_an_explicit_until_wins_over_stop_when_for_that_run():
    s = open_text(regression(n=10, batch="4", extra='stop_when = "loss < 10"'))
    assert s.run().reason == "stop_when"           # at once: the loss is below 10 from the start
    result = s.run(until="step >= 6")
    assert result.reason == "until" and s.step_count == 6
    assert s.run(max_steps=1).reason == "stop_when"   # without until, stop_when holds again


def test_back_at_the_start_says_there_is_nothing_to_rewind():
    s = spiral()
    assert s.back() == s.cursor and s.position == 0
    assert s.events[-1].message.startswith("nothing to rewind") and "back from" not in s.events[-1].message
    s.forward()
    s.back(5)                                       # clamps at the start: that one was a rewind
    assert s.position == 0 and s.events[-1].message.startswith("back from")


def test_set_stop_when_replaces_the_scenarios():
    s = open_text(regression(n=10, batch="4", extra='stop_when = "loss < 10"'))
    s.set_stop_when("step >= 3")
    assert s.run().reason == "stop_when" and s.step_count == 3
    s.set_stop_when(None)
    assert s.run(max_steps=2).reason == "max_steps"
    with pytest.raises(GdstepError):
        s.set_stop_when("loss <")

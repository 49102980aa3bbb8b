"""Per-layer health: ‖ΔW‖/‖W‖ of each layer at every update stepped one at a time, and at
the first ten and then every tenth update of a longer run (update_norms.EVERY), stays in the
history through lean runs, forks and rewinds; checked against numpy computed here from
recorded parameters."""

from __future__ import annotations

import numpy as np
import pytest

import gdstep
from attach_loop import attached_iteration

LAYER = ("0.weight", "0.bias")


def recorded_params(scenario: str, steps: int, **open_kw) -> list[dict[str, np.ndarray]]:
    """The parameters before each update and after the last, one step at a time."""
    s = gdstep.open(scenario, **open_kw)
    out = [s.params]
    for _ in range(steps):
        s.step()
        out.append(s.params)
    return out


def ratios_by_hand(points, names) -> list[float]:
    out = []
    for old, new in zip(points, points[1:]):
        delta = sum(float(np.sum((new[n].astype(np.float64) - old[n].astype(np.float64)) ** 2)) for n in names)
        weight = sum(float(np.sum(old[n].astype(np.float64) ** 2)) for n in names)
        out.append(np.sqrt(delta / weight))
    return out


def run_measures(steps: int, start: int = 0) -> list[bool]:
    """Which updates of a run from `start` are measured: its first ten, then iterations
    1, 11, 21, … of the session (written out here, not read from gdstep)."""
    return [i - start < 10 or i % 10 == 0 for i in range(start, start + steps)]


@pytest.mark.parametrize("backend,dtype,rtol", [("numpy", "float64", 1e-12), ("numpy", "float32", 1e-4),
                                                 ("torch", "float64", 1e-12), ("torch", "float32", 1e-4)])
def test_update_ratio_per_layer_in_a_lean_run_equals_numpy_on_the_recorded_params(backend, dtype, rtol):
    if backend == "torch":
        pytest.importorskip("torch")
    points = recorded_params("spiral", 35, backend=backend, dtype=dtype)
    s = gdstep.open("spiral", backend=backend, dtype=dtype)
    s.run(max_steps=35)                                # lean: no update records kept
    h = s.history
    assert len(h.update_norms) == 35 == len(h.losses)
    measured = np.array(run_measures(35))
    assert np.flatnonzero(~measured).tolist() == [i for i in range(11, 35) if i not in (20, 30)]
    for names in (LAYER, ("2.weight", "2.bias"), ("0.weight",)):
        got = np.array(h.update_norms.ratio_series(names))
        np.testing.assert_allclose(got[measured], np.array(ratios_by_hand(points, names))[measured], rtol=rtol)
        assert np.isnan(got[~measured]).all()
    delta, weight = h.update_norms.series(("2.weight",))
    for i in (7, 20):
        w = points[i]["2.weight"].astype(np.float64)
        assert weight[i] == pytest.approx(float(np.sum(w * w)), rel=rtol)


def test_step_by_step_and_a_run_record_the_same_norms_where_the_run_measures():
    a = gdstep.open("spiral")
    for _ in range(25):
        a.step()                                       # one iteration at a time: every update measured
    b = gdstep.open("spiral")
    b.run(max_steps=25)
    rows_a, rows_b = a.history.update_norms.matrix(), b.history.update_norms.matrix()
    assert np.isfinite(rows_a).all()
    measured = run_measures(25)
    np.testing.assert_array_equal(rows_b[measured], rows_a[measured])
    assert np.isnan(rows_b[[not m for m in measured]]).all()


def test_rewind_trims_the_update_norms_and_a_fork_carries_them():
    s = gdstep.open("spiral")
    s.run(max_steps=20)
    full = list(s.history.update_norms.ratio_series(LAYER))
    stepped = gdstep.open("spiral")
    for _ in range(20):
        stepped.step()
    want = stepped.history.update_norms.ratio_series(LAYER)
    s.back(iterations=5)               # the replay from a checkpoint is a run: it measures its updates
    back = s.history.update_norms.ratio_series(LAYER)
    assert len(back) == 15 and np.isfinite(back[:11]).all() and back[:11] == full[:11]
    np.testing.assert_array_equal([v for v in back if not np.isnan(v)], [w for v, w in zip(back, want) if not np.isnan(v)])
    twin = s.fork()
    twin.step(5)                                       # a new run: its five updates are measured
    np.testing.assert_array_equal(twin.history.update_norms.ratio_series(LAYER)[15:], want[15:])
    s.run_to("backward")                               # mid-iteration: no update yet for this one
    assert len(s.history.update_norms) == 15


def test_torch_update_norms_stay_on_the_device_until_read():
    pytest.importorskip("torch")
    from gdstep import history

    s = gdstep.open("spiral", backend="torch")
    s.run(max_steps=history.FLUSH_EVERY + 11)
    # not read back once an update, nor at an update the run did not measure
    assert 0 < len(s._history._pending) < history.FLUSH_EVERY
    rows = s.history.update_norms.matrix()
    assert len(rows) == history.FLUSH_EVERY + 11 and not s._history._pending
    assert np.isfinite(rows[run_measures(len(rows))]).all()


def test_attach_mode_measures_every_tenth_update_in_step_and_in_watch():
    torch = pytest.importorskip("torch")

    for mode in ("step", "watch"):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loss_fn = torch.nn.MSELoss()
        dbg = gdstep.attach(model, opt, loss_fn, on_break="raise")
        g = torch.Generator().manual_seed(1)
        before = []
        for _ in range(23):
            x, y = torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g)
            before.append(model[0].weight.detach().clone())
            attached_iteration(mode, dbg, model, opt, loss_fn, x, y)
        before.append(model[0].weight.detach().clone())
        dbg.close()
        rows = dbg.session.history.update_norms
        delta, weight = rows.series(("0.weight",))
        for i in range(23):
            if i % 10 == 0:
                d = (before[i + 1] - before[i]).double()
                assert delta[i] == pytest.approx(float((d * d).sum()), rel=1e-5), (mode, i)
                assert weight[i] == pytest.approx(float((before[i].double() ** 2).sum()), rel=1e-5)
            else:
                assert np.isnan(delta[i]) and np.isnan(weight[i]), (mode, i)


def test_an_update_that_leaves_a_parameter_out_counts_it_zero_and_keeps_the_order():
    from gdstep import update_norms
    from gdstep.history import HistoryArrays
    from gdstep.records import ParamUpdate

    old, new = np.array([3.0, 4.0]), np.array([3.0, 5.0])
    row = update_norms.of_record({"a": ParamUpdate("a", old, None, new, {}, {})}, ("a", "b"))
    assert row == [1.0, 0.0, 25.0, 0.0]
    h = HistoryArrays(("a", "b"))

    class Pending:                                    # a device tensor's stand-in
        def __init__(self, values):
            self.values = values

    h._pending.append(Pending([9.0, 9.0, 9.0, 9.0]))
    flushed = []
    update_norms_to_floats = update_norms.to_floats
    try:
        update_norms.to_floats = lambda pending, width: flushed.append(len(pending)) or [v for p in pending for v in p.values]
        h.add_update_norms(row)
    finally:
        update_norms.to_floats = update_norms_to_floats
    assert flushed == [1] and list(h.update_sq) == [9.0, 9.0, 9.0, 9.0, 1.0, 0.0, 25.0, 0.0]


def test_an_unmeasured_update_waits_behind_device_rows_and_reads_as_nan():
    from gdstep import update_norms
    from gdstep.history import HistoryArrays

    h = HistoryArrays(("a",))
    h.add_update_norms(None)                          # nothing pending: NaNs at once
    assert np.isnan(list(h.update_sq)).all() and len(h.update_sq) == 2
    assert update_norms.to_floats([None, [1.0, 2.0], None], 2)[2:4] == [1.0, 2.0]
    torch = pytest.importorskip("torch")
    h.add_update_norms(torch.tensor([4.0, 9.0]))
    h.add_update_norms(None)                          # behind a device row: kept in order
    h.add_update_norms(torch.tensor([1.0, 16.0]))
    assert len(h._pending) == 3
    h._flush()
    got = list(h.update_sq)[2:]
    assert got[:2] == [4.0, 9.0] and np.isnan(got[2:4]).all() and got[4:] == [1.0, 16.0]


UNUSED = '''
import torch
torch.manual_seed(0)
class M(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(5, 3)
        self.unused = torch.nn.Linear(3, 3)      # trainable, in the optimizer, never called: no gradient
    def forward(self, x):
        return self.a(x)
model = M().{dtype}()
g = torch.Generator().manual_seed(1)
data = (torch.randn(64, 5, generator=g).{dtype}(), torch.randint(0, 3, (64,), generator=g))
loss_fn = torch.nn.CrossEntropyLoss()
optimizer = torch.optim.{optimizer}
batch_size = 16
'''


@pytest.mark.parametrize("dtype", ["double", "float"])
@pytest.mark.parametrize("optimizer", ["SGD(model.parameters(), lr=0.1)",
                                       "Adam(model.parameters(), lr=0.01, amsgrad=True)"])
def test_a_parameter_without_a_gradient_is_measured_alike_by_a_run_and_by_stepping(tmp_path, dtype, optimizer):
    """It did not move: ‖ΔW‖² 0, and ‖W‖² its own, whether the update ran lean in a run or
    with full records stepping; the other parameters' norms bit for bit the same too."""
    path = tmp_path / "unused.py"
    path.write_text(UNUSED.format(dtype=dtype, optimizer=optimizer))
    run, stepped = gdstep.open(str(path)), gdstep.open(str(path))
    before = run.params
    run.run(max_steps=3)
    for _ in range(3 * 4):
        stepped.next_phase()                          # full records: the update's own ParamUpdates
    a, b = run.history.update_norms.matrix(), stepped.history.update_norms.matrix()
    np.testing.assert_array_equal(a, b)
    names = run.history.update_norms.names
    row = a[0]
    k = len(names)
    for i, n in enumerate(names):
        if n.startswith("unused"):
            w = before[n].astype(np.float64)
            assert row[i] == 0.0
            np.testing.assert_allclose(row[k + i], float(np.sum(w * w)), rtol=1e-6)


WIDE = """
name = "wide: 263,682 parameters, 1.05 MB in float32"
seed = 0
[data]
kind = "blobs"
n = 48
classes = 2
features = 512
[model]
layers = [ { linear = 512 }, "relu", { linear = 2 } ]
[loss]
kind = "cross_entropy"
[optimizer]
kind = "adam"
lr = 1e-3
[training]
batch_size = 16
"""


def test_a_run_on_a_large_torch_model_measures_its_first_update_then_every_tenth():
    """Where measuring ‖ΔW‖ copies 1 MiB or more of parameters (update_norms.COPY_LARGE), a
    run measures its first update, not its first ten, then iterations 1, 11, 21, …; the
    numpy engine, which copies nothing, its first ten. Stepping measures every update, and
    the run's measured ones equal stepping's to the bit."""
    pytest.importorskip("torch")
    from gdstep import update_norms
    from gdstep.scenario import parse_scenario
    sc = parse_scenario(WIDE)
    torch_run = gdstep.open(sc, backend="torch", dtype="float32")
    assert torch_run.backend.update_norms_nbytes >= update_norms.COPY_LARGE > 263_682 * 4 // 2
    numpy_run = gdstep.open(sc, backend="numpy", dtype="float32")
    for s in (torch_run, numpy_run):
        s.run(max_steps=15)
        s.run(max_steps=7)                             # a second run, from iteration 16
    rows = np.isfinite(torch_run.history.update_norms.matrix()).all(axis=1)
    assert np.flatnonzero(rows).tolist() == [0, 10, 15, 20]
    rows = np.isfinite(numpy_run.history.update_norms.matrix()).all(axis=1)
    assert np.flatnonzero(rows).tolist() == list(range(10)) + [10] + list(range(15, 22))
    stepped = gdstep.open(sc, backend="torch", dtype="float32")
    for _ in range(22):
        stepped.step()
    got, want = torch_run.history.update_norms.matrix(), stepped.history.update_norms.matrix()
    np.testing.assert_array_equal(got[[0, 10, 15, 20]], want[[0, 10, 15, 20]])

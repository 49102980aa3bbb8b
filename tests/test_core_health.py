"""Per-layer health: ‖ΔW‖/‖W‖ of each layer at every update stays in the history through
lean runs, forks and rewinds; checked against numpy computed here from recorded parameters."""

from __future__ import annotations

import numpy as np
import pytest

import gdstep

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


@pytest.mark.parametrize("backend,dtype,rtol", [("numpy", "float64", 1e-12), ("numpy", "float32", 1e-4),
                                                 ("torch", "float64", 1e-12), ("torch", "float32", 1e-4)])
def test_update_ratio_per_layer_in_a_lean_run_equals_numpy_on_the_recorded_params(backend, dtype, rtol):
    if backend == "torch":
        pytest.importorskip("torch")
    points = recorded_params("spiral", 25, backend=backend, dtype=dtype)
    s = gdstep.open("spiral", backend=backend, dtype=dtype)
    s.run(max_steps=25)                                # lean: no update records kept
    h = s.history
    assert len(h.update_norms) == 25 == len(h.losses)
    for names in (LAYER, ("2.weight", "2.bias"), ("0.weight",)):
        np.testing.assert_allclose(h.update_norms.ratio_series(names), ratios_by_hand(points, names), rtol=rtol)
    delta, weight = h.update_norms.series(("2.weight",))
    w = points[10]["2.weight"].astype(np.float64)
    assert weight[10] == pytest.approx(float(np.sum(w * w)), rel=rtol)


def test_step_by_step_and_a_run_record_the_same_norms():
    a = gdstep.open("spiral")
    for _ in range(12):
        a.step()
    b = gdstep.open("spiral")
    b.run(max_steps=12)
    assert list(a.history.update_norms.values) == list(b.history.update_norms.values)


def test_rewind_trims_the_update_norms_and_a_fork_carries_them():
    s = gdstep.open("spiral")
    s.run(max_steps=20)
    full = list(s.history.update_norms.ratio_series(LAYER))
    s.back(iterations=5)
    assert s.history.update_norms.ratio_series(LAYER) == full[:15]
    twin = s.fork()
    twin.step(5)
    assert twin.history.update_norms.ratio_series(LAYER) == full
    s.run_to("backward")                               # mid-iteration: no update yet for this one
    assert len(s.history.update_norms) == 15


def test_torch_update_norms_stay_on_the_device_until_read():
    pytest.importorskip("torch")
    from gdstep import history

    s = gdstep.open("spiral", backend="torch")
    s.run(max_steps=history.FLUSH_EVERY + 3)
    assert len(s._history._pending) == 3                # read back in bulk, not once an update
    assert len(s.history.update_norms) == history.FLUSH_EVERY + 3
    assert not s._history._pending


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
        update_norms.to_floats = lambda pending: flushed.append(len(pending)) or [v for p in pending for v in p.values]
        h.add_update_norms(row)
    finally:
        update_norms.to_floats = update_norms_to_floats
    assert flushed == [1] and list(h.update_sq) == [9.0, 9.0, 9.0, 9.0, 1.0, 0.0, 25.0, 0.0]

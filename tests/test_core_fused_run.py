"""A numpy run's fused iteration (forward, loss and backward in one backend call, no δ kept,
ReLU masks applied in place, the update's norms from the flat vectors) computes, bit for
bit, what stepping phase by phase computes with full records: every optimizer, both
precisions, shuffled mini-batches, every layer kind, a frozen parameter; and it stops where
stepping stops."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gdstep
from gdstep import update_norms
from gdstep.scenario import parse_scenario
from optim_cases import ALL_ON

SCENARIO = """
name = "fused run"
seed = 5
[data]
kind = "blobs"
n = 45
classes = 3
features = 4
[model]
layers = [ {{ linear = 7 }}, "relu", {{ linear = 6 }}, "tanh", {{ linear = 6, bias = false }}, {{ leaky_relu = 0.1 }},
           {{ linear = 5 }}, "gelu", {{ linear = 5 }}, "elu", {{ linear = 5 }}, "softplus", {{ linear = 5 }}, "sigmoid",
           {{ linear = 5 }}, "identity", {{ linear = 5 }}, "relu", {{ linear = 3 }} ]
dtype = "{dtype}"
{frozen}
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


def _toml(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


def make(kind="adam", args=None, dtype="float64", frozen=""):
    args = ALL_ON[kind] if args is None else args
    lines = "\n".join(f"{k} = {_toml(v)}" for k, v in args.items())
    sc = parse_scenario(SCENARIO.format(dtype=dtype, kind=kind, args=lines, frozen=frozen))
    return gdstep.open(sc, dtype=dtype)


def bits(a) -> bytes:
    """The bytes of an array, or of a tensor wherever it is (a record's tensors stay on its device)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.ascontiguousarray(a).tobytes()


def same_state(run, stepped) -> None:
    assert run.cursor == stepped.cursor
    same_params(run, stepped)
    ha, hb = run.history, stepped.history
    assert bits(np.array(ha.losses)) == bits(np.array(hb.losses))
    assert bits(np.array(ha.grad_norms.values)) == bits(np.array(hb.grad_norms.values))
    same_update_norms(ha, hb)


def same_params(run, stepped) -> None:
    """The parameters and the optimizer's state, bit for bit."""
    for name, p in stepped.params.items():
        assert bits(run.params[name]) == bits(p), name
    for name, state in stepped.optimizer_state.items():
        for k, v in state.items():
            w = run.optimizer_state[name][k]
            assert (bits(w) == bits(v)) if isinstance(v, np.ndarray) else w == v, f"{name}.{k}"


def same_update_norms(ha, hb) -> None:
    """‖ΔW‖², ‖W_old‖² of each update the run measured (update_norms.measured; the others are
    NaN rows): the run's from its lean update, stepping's from its full records."""
    a, b = ha.update_norms.matrix(), hb.update_norms.matrix()
    assert a.shape == b.shape and len(a) > 0
    rows = [i for i in range(len(a)) if update_norms.measured(i, i)]
    assert rows and not np.isnan(a[rows]).any()
    assert np.isnan(a[[i for i in range(len(a)) if i not in rows]]).all()
    assert bits(a[rows]) == bits(b[rows])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", sorted(ALL_ON))
def test_a_fused_run_equals_stepping_phase_by_phase_bit_for_bit(kind, dtype):
    run, stepped = make(kind, dtype=dtype), make(kind, dtype=dtype)
    calls = []
    fused = run.backend.forward_backward_lean
    run.backend.forward_backward_lean = lambda *a: (calls.append(1), fused(*a))[1]
    result = run.run(max_steps=23)                 # across epochs: 6 batches an epoch, the last short
    assert result.reason == "max_steps" and len(calls) == 23
    for _ in range(23 * 4):
        stepped.next_phase()
    same_state(run, stepped)
    for phase in ("forward", "loss", "backward", "update"):       # materialised: the full records
        a, b = run.record(phase), stepped.record(phase)
        assert a.step == b.step
    for da, db in zip(run.record("backward").deltas, stepped.record("backward").deltas):
        assert bits(da) == bits(db)
    assert bits(run.record("forward").outputs[-1]) == bits(stepped.record("forward").outputs[-1])


def test_the_update_norms_are_those_of_the_parameters():
    """Independent of either path: Σ(W_new − W_old)² and ΣW_old² in float64 sums."""
    s = make("sgd", {"lr": 0.1, "momentum": 0.9})
    s.run(max_steps=3)
    before = s.params
    s.run(max_steps=1)
    after = s.params
    row = s.history.update_norms.matrix()[-1]
    names = s.history.update_norms.names
    for j, name in enumerate(names):
        delta = (after[name] - before[name]).astype(np.float64)
        assert math.isclose(row[j], float(np.sum(delta * delta)), rel_tol=1e-12)
        assert math.isclose(row[len(names) + j], float(np.sum(before[name] ** 2)), rel_tol=1e-12)


def test_a_frozen_parameter_stays_out_and_the_run_still_matches():
    run, stepped = make("adam", frozen='frozen = ["2.bias"]'), make("adam", frozen='frozen = ["2.bias"]')
    run.run(max_steps=9)
    for _ in range(9 * 4):
        stepped.next_phase()
    same_state(run, stepped)


@pytest.mark.parametrize("phase", ["forward", "loss", "backward", "update"])
def test_a_fused_run_stops_after_any_phase_where_stepping_would(phase):
    run, stepped = make("rmsprop"), make("rmsprop")
    run.run(max_steps=4)
    run.run_to(phase)
    for _ in range(4 * 4 + ("forward", "loss", "backward", "update").index(phase) + 1):
        stepped.next_phase()
    same_state(run, stepped)
    rec, ref = run.record(phase), stepped.record(phase)
    for field in rec._fields:
        a, b = getattr(rec, field), getattr(ref, field)
        if isinstance(a, np.ndarray):
            assert bits(a) == bits(b), field


def test_a_reader_mid_iteration_sends_the_rest_of_it_stepwise():
    """on_phase reads a record after the forward (the app's frame): the iteration is
    recomputed there, and the run goes on from it to the same end."""
    run, stepped = make("adam"), make("adam")
    seen = []

    def on_phase():
        if run.phase_due == "loss":
            seen.append(run.record("forward").step)
        return False
    run.run(max_steps=7, on_phase=on_phase)
    assert seen == list(range(7))
    for _ in range(7 * 4):
        stepped.next_phase()
    same_state(run, stepped)


def pauses_where_stepping_does(run, ref) -> None:
    """`run` runs into a non-finite value; `ref`, stepped phase by phase, meets the same one
    (named alike) and steps back to where the run stands."""
    result = run.run(max_steps=50)
    assert result.reason == "nonfinite"
    events = len(ref.events)
    while not [e for e in ref.events[events:] if e.kind == "nonfinite"]:
        ref.next_phase()
    bad = [e for e in ref.events[events:] if e.kind == "nonfinite"][0]
    ref.back()
    assert str(result.nonfinite) in bad.message and run.cursor == ref.cursor


def test_a_non_finite_forward_pauses_before_it_with_the_culprit_named():
    run, ref = make("sgd", {"lr": 1e30}, "float32"), make("sgd", {"lr": 1e30}, "float32")
    pauses_where_stepping_does(run, ref)


TORCH_SCENARIO = SCENARIO.replace('{{ linear = 5 }}, "gelu", {{ linear = 5 }}, "elu", {{ linear = 5 }}, "softplus", '
                                  '{{ linear = 5 }}, "sigmoid",\n           {{ linear = 5 }}, "identity", ', "")


@pytest.mark.parametrize("deferred", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", sorted(ALL_ON))
def test_a_torch_run_keeps_the_update_norms_of_stepping_bit_for_bit(kind, dtype, deferred):
    """The torch backend's lean update: W_old copied into kept buffers, its finiteness from
    the update's norms; the history equals that of stepping, which takes the norms from
    its full records."""
    pytest.importorskip("torch")
    lines = "\n".join(f"{k} = {_toml(v)}" for k, v in ALL_ON[kind].items())
    sc = parse_scenario(TORCH_SCENARIO.format(dtype=dtype, kind=kind, args=lines, frozen=""))
    run, stepped = (gdstep.open(sc, backend="torch", dtype=dtype) for _ in range(2))
    run._defer = deferred
    calls = []
    fused = run._update_norms_lean
    assert fused is not None
    run._update_norms_lean = lambda *a, **k: (calls.append(1), fused(*a, **k))[1]
    assert run.run(max_steps=11).reason == "max_steps" and len(calls) == 11
    for _ in range(11 * 4):
        stepped.next_phase()
    ha, hb = run.history, stepped.history
    assert bits(np.array(ha.losses)) == bits(np.array(hb.losses))
    same_update_norms(ha, hb)
    for name, p in stepped.params.items():
        assert bits(run.params[name]) == bits(p), name


@pytest.mark.parametrize("deferred", [False, True])
def test_a_torch_update_that_overflows_pauses_with_the_culprit_of_stepping(deferred):
    pytest.importorskip("torch")
    sc = parse_scenario(TORCH_SCENARIO.format(dtype="float32", kind="sgd", args="lr = 1e30", frozen=""))
    run, ref = (gdstep.open(sc, backend="torch", dtype="float32") for _ in range(2))
    run._defer = deferred
    pauses_where_stepping_does(run, ref)

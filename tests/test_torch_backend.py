"""The torch backend on its own terms: rewinding exactly, computations aside that change
nothing, bounded history, devices and dtypes, and the errors a user can meet."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

import gdstep
from gdstep.backends.torch_support import resolve_device
from gdstep.errors import BackendError, GdstepError


def same(a, b) -> bool:
    return torch.equal(a, b) if torch.is_tensor(a) else a == b


def records_equal(r1, r2) -> None:
    """Two records of the same phase, element for element (bit for bit)."""
    assert type(r1) is type(r2)
    for f1, f2 in zip(r1, r2):
        if isinstance(f1, tuple) and f1 and torch.is_tensor(f1[0]):
            assert all(same(x, y) for x, y in zip(f1, f2))
        elif isinstance(f1, dict):
            assert f1.keys() == f2.keys()
            for k in f1:
                if hasattr(f1[k], "_fields"):
                    records_equal(f1[k], f2[k])
                elif isinstance(f1[k], dict):
                    assert all(same(f1[k][j], f2[k][j]) for j in f1[k])
                else:
                    assert same(f1[k], f2[k]), k
        elif torch.is_tensor(f1):
            assert torch.equal(f1, f2)
        elif isinstance(f1, np.ndarray):
            np.testing.assert_array_equal(f1, f2)
        elif hasattr(f1, "kind") and not isinstance(f1, str):
            assert f1 == f2
        else:
            assert f1 == f2


@pytest.mark.parametrize("name, dtype", [("spiral", "float32"), ("xor", "float64"), ("scenarios/residual.py", "float32")])
def test_rewind_is_bit_exact(name, dtype):
    s = gdstep.open(name, backend="torch", dtype=dtype)
    s.step(7)
    s.forward(); s.loss(); s.backward()
    ahead = {p: s.record(p) for p in ("forward", "loss", "backward")}
    params, state = s.params, s.optimizer_state
    s.update()
    s.step(3)
    s.forward(); s.loss(); s.backward()
    s.back(iterations=4)                         # to the same phase four iterations earlier
    assert s.cursor.phase == "update" and s.step_count == 7
    for phase, rec in ahead.items():
        records_equal(rec, s.record(phase))
    for k, v in params.items():
        np.testing.assert_array_equal(s.params[k], v)
    for k, st in state.items():
        for key, v in st.items():
            np.testing.assert_array_equal(np.asarray(s.optimizer_state[k][key]), np.asarray(v))
    s.update()
    s.step(3)
    s.back(phases=1)
    s.next_phase()


def test_rewind_from_thinned_history_is_exact():
    """With a tiny budget only far-apart snapshots stay: rewinding recomputes from them."""
    s = gdstep.open("spiral", backend="torch", history_budget=60_000)
    s.step(40)
    first = s.params
    s.step(30)
    assert s.checkpoint_nbytes <= 60_000 + s.backend.checkpoint_nbytes(s.backend.capture())
    s.back(iterations=30)
    for k, v in first.items():
        np.testing.assert_array_equal(s.params[k], v)


def test_snapshots_share_the_update_copies():
    s = gdstep.open("spiral", backend="torch")
    s.step(2)
    u = s.record("update").params["0.weight"]
    snap = s.backend.capture()
    assert snap.params["0.weight"] is u.new               # no second copy
    assert snap.state["0.weight"]["exp_avg"] is u.state_after["exp_avg"]
    assert s.backend.checkpoint_nbytes(snap) == sum(p.nbytes for p in s.params.values()) * 3


def test_records_do_not_change_afterwards():
    s = gdstep.open("spiral", backend="torch")
    s.step(1)
    rec = s.record("update")
    kept = {n: (u.new.clone(), u.state_after["exp_avg"].clone()) for n, u in rec.params.items()}
    grads = {n: g.clone() for n, g in s.record("backward").grads.items()}
    s.step(3)
    for n, (new, exp_avg) in kept.items():
        assert torch.equal(rec.params[n].new, new)
        assert torch.equal(rec.params[n].state_after["exp_avg"], exp_avg)
    for n, g in grads.items():
        assert torch.equal(rec.params[n].grad, g)


def test_gradcheck_and_loss_value_change_nothing():
    s = gdstep.open("xor", backend="torch", dtype="float64")
    s.step(2)
    s.forward(); s.loss(); s.backward()
    weight = s.backend.model[0].weight
    version, before = weight._version, weight.detach().clone()
    rng = torch.get_rng_state()
    result = s.gradcheck("0.weight", (1, 0))
    assert result.ok and result.rel_error < 1e-6
    assert weight._version == version and torch.equal(weight.detach(), before)
    assert torch.equal(torch.get_rng_state(), rng)
    x, y = s.backend.batch(s.next_batch_indices())
    value = s.backend.loss_value(x, y, {"0.weight": ((1, 0), 123.0)})
    assert value != s.loss_value and torch.equal(weight.detach(), before)
    grads = s.backend.gradients(x, y)
    assert torch.allclose(grads["0.weight"], s.record("backward").grads["0.weight"], rtol=1e-12, atol=1e-15)


def test_gradcheck_of_a_frozen_parameter():
    from gdstep.scenario import parse_scenario
    text = gdstep.bundled.resolve("xor").read_text().replace('init = "xavier"', 'init = "xavier"\nfrozen = ["0.bias"]')
    s = gdstep.Session(sc := parse_scenario(text), gdstep.backends.torch_backend.TorchBackend(sc, dtype="float64"))
    s.step(1)
    assert s.gradcheck("0.bias", (2,)).ok


def test_evaluate_and_predict():
    s = gdstep.open("spiral", backend="torch")
    s.step(30)
    loss, accuracy = s.evaluate()
    n = gdstep.open("spiral")
    n.step(30)
    assert loss == pytest.approx(n.evaluate()[0], rel=1e-4)
    assert 0.0 <= accuracy <= 1.0
    out = s.backend.predict(np.zeros((5, 2)))
    assert isinstance(out, np.ndarray) and out.shape == (5, 3)


def test_default_dtype_and_device_names():
    s = gdstep.open("xor", backend="torch")
    assert (s.backend.name, s.backend.device, s.backend.dtype) == ("torch", "cpu", "float32")
    assert s.backend.model[0].weight.dtype == torch.float32
    assert isinstance(s.record("forward") or s.forward(), tuple)
    assert s.record("forward").outputs[0].dtype == torch.float32
    s64 = gdstep.open("xor", backend="torch", dtype="float64")
    assert s64.backend.dtype == "float64" and s64.backend.x.dtype == torch.float64
    assert s.params["0.weight"].dtype == np.float32      # numpy copies for the API


def test_starting_values_are_the_numpy_engines():
    t, n = gdstep.open("spiral", backend="torch", dtype="float64"), gdstep.open("spiral")
    for k, v in n.params.items():
        np.testing.assert_array_equal(t.params[k], v)


def test_device_auto_falls_back_to_cpu_and_says_so():
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: auto takes it")
    s = gdstep.open("xor", backend="torch", device="auto")
    assert s.backend.device == "cpu"
    assert any(e.kind == "info" and "auto" in e.message and "cpu" in e.message for e in s.events)


def test_cuda_without_cuda_is_one_line_and_exit_2(capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(BackendError, match="CUDA is not available"):
        gdstep.open("xor", backend="torch", device="cuda")
    from gdstep.cli import main
    assert main(["run", "xor", "--backend", "torch", "--device", "cuda", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA is not available" in err and "Traceback" not in err


@pytest.mark.parametrize("device, message", [("tpu7", "unknown device"), ("meta", "not supported")])
def test_unknown_devices_are_refused(device, message):
    with pytest.raises(BackendError, match=message):
        resolve_device(device)


def test_without_torch_the_torch_backend_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    from gdstep.backends.torch_support import require_torch
    with pytest.raises(BackendError, match="needs PyTorch, which is not installed"):
        require_torch()


def test_without_torch_the_cli_prints_one_line():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from gdstep.cli import main\n"
            "sys.exit(main(['run', 'xor', '--backend', 'torch', '--quiet']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "needs PyTorch" in done.stderr and "Traceback" not in done.stderr


def test_cli_run_and_check_parity_on_torch(capsys):
    from gdstep.cli import main
    assert main(["run", "xor", "--backend", "torch", "--quiet", "--max-steps", "20"]) == 0
    assert "torch on cpu, float32" in capsys.readouterr().out
    assert main(["check", "linear", "--parity"]) == 0
    out = capsys.readouterr().out
    assert "parity: numpy vs torch (cpu), float64" in out and "agree" in out


def test_parity_refuses_a_python_scenario():
    from gdstep import compare_backends
    with pytest.raises(GdstepError, match="Python scenario runs on torch only"):
        compare_backends("scenarios/residual.py")


def test_nonfinite_values_pause_a_torch_run_with_the_element():
    s = gdstep.open("overshoot", backend="torch", dtype="float64")
    s.remove_breakpoint(1)
    result = s.run(max_steps=5000)
    assert result.reason == "nonfinite" and result.nonfinite.phase == "loss"
    assert s.find_nonfinite() is None                     # the state from before the bad phase
    s.loss()
    assert not np.isfinite(s.loss_value)


def test_set_lr_keeps_the_torch_state():
    s = gdstep.open("spiral", backend="torch")
    s.step(3)
    opt = s.backend.torch_optimizer
    s.set(lr=0.001)
    s.step(1)
    assert s.backend.torch_optimizer is opt
    assert opt.param_groups[0]["lr"] == 0.001 and s.record("update").lr == 0.001
    assert s.record("update").params["0.weight"].state_after["step"] == 4


def test_a_torch_without_foreach_clone_checkpoints_and_rewinds_alike(monkeypatch):
    """torch 2.11 (what a GPU machine here had) has no torch._foreach_clone: a session there
    could not even take its first checkpoint. Checkpoints then clone tensor by tensor,
    with the same values: a rewind lands on the same bits as with the fused call."""
    fused = gdstep.open("spiral", backend="torch")
    fused.run(max_steps=20)
    monkeypatch.delattr(torch, "_foreach_clone", raising=False)
    s = gdstep.open("spiral", backend="torch")
    s.run(max_steps=20)
    for session in (s, fused):
        session.back(iterations=7)
    for name, p in fused.params.items():
        assert np.array_equal(s.params[name], p), name
    assert s.step_count == fused.step_count == 13

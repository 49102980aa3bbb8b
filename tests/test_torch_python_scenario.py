"""Python scenarios: the user's own nn.Module stepped phase by phase, every record checked
against torch computing the same thing independently (and finite differences); the file's
mistakes reported in one line naming the file."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path

import pytest
import torch

import gdstep
from gdstep.cli import main
from gdstep.errors import ScenarioError

RESIDUAL = Path(__file__).resolve().parent.parent / "scenarios" / "residual.py"


def write(tmp_path: Path, body: str, name: str = "model.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def test_residual_scenario_loads_with_module_names_and_options():
    s = gdstep.open(RESIDUAL)
    assert s.backend.name == "torch" and s.backend.dtype == "float32"
    names = [info.name for info in s.backend.layers]
    assert names == ["inp", "block", "block.fc1", "block.act", "block.fc2", "act", "out", "(output)"]
    assert list(s.backend.param_shapes)[:3] == ["inp.weight", "inp.bias", "block.fc1.weight"]
    assert s.scenario.training.batch_size == 32 and s.scenario.training.epochs == 60
    assert [b.text for b in s.breakpoints] == ["grad_norm > 50"]
    assert s.scenario.description.startswith("Two moons, a residual MLP")
    assert s.scenario.loss.kind == "cross_entropy"


def test_residual_records_match_torch_computed_independently():
    s = gdstep.open(RESIDUAL, dtype="float64")
    s.step(3)
    model = copy.deepcopy(s.backend.model)
    ref_opt = torch.optim.Adam(model.parameters(), lr=0.02)
    ref_opt.load_state_dict(copy.deepcopy(s.backend.torch_optimizer.state_dict()))   # torch shares `step` otherwise

    fwd = s.forward()
    x = s.backend.x[torch.as_tensor(fwd.indices)]
    assert torch.equal(fwd.inputs, x)
    seen = {}
    hooks = [m.register_forward_hook(lambda m, a, o, n=n: seen.__setitem__(n, o)) for n, m in model.named_modules() if n]
    out = model(x)
    for h in hooks:
        h.remove()
    for name, value in zip([i.name for i in s.backend.layers], fwd.outputs):
        expected = out if name == "(output)" else seen[name]
        torch.testing.assert_close(value, expected.detach(), rtol=0, atol=0)

    y = s.backend.y[torch.as_tensor(fwd.indices)]
    loss_rec = s.loss()
    loss = torch.nn.functional.cross_entropy(out, y)
    assert loss_rec.value == pytest.approx(loss.item(), rel=1e-15)
    torch.testing.assert_close(loss_rec.per_sample, torch.nn.functional.cross_entropy(out, y, reduction="none").detach())

    block_out = seen["block"]
    names = [n for n, _ in model.named_parameters()]
    grads = torch.autograd.grad(loss, [block_out] + list(model.parameters()))
    bwd = s.backward()
    block_index = [i.name for i in s.backend.layers].index("block")
    torch.testing.assert_close(bwd.deltas[block_index], grads[0], rtol=1e-12, atol=1e-15)
    for name, g in zip(names, grads[1:]):
        torch.testing.assert_close(bwd.grads[name], g, rtol=1e-12, atol=1e-15)

    for p, g in zip(model.parameters(), grads[1:]):
        p.grad = g
    ref_opt.step()
    upd = s.update()
    for name, p in model.named_parameters():
        torch.testing.assert_close(upd.params[name].new, p.detach(), rtol=0, atol=0)
        torch.testing.assert_close(upd.params[name].state_after["exp_avg"], ref_opt.state[p]["exp_avg"], rtol=0, atol=0)
    assert upd.params["inp.weight"].state_after["step"] == 4


@pytest.mark.parametrize("name, index", [("inp.weight", (3, 1)), ("block.fc1.weight", (2, 5)), ("block.fc2.bias", (7,)),
                                         ("out.weight", (1, 9))])
def test_residual_gradients_against_finite_differences(name, index):
    s = gdstep.open(RESIDUAL, dtype="float64")
    s.step(2)
    result = s.gradcheck(name, index)
    assert result.ok and result.rel_error < 1e-6, result


def test_residual_trains_and_explains():
    s = gdstep.open(RESIDUAL)
    result = s.run(max_steps=300)
    assert result.reason in ("stop_when", "max_steps", "breakpoint")
    loss, accuracy = s.evaluate()
    assert accuracy > 0.9
    text = str(s.explain("block.fc2.weight", (0, 0)))
    assert "adam" in text and "m̂" in text


def test_an_unknown_optimizer_shows_state_and_delta_without_a_formula(tmp_path):
    path = write(tmp_path, """
        import torch
        torch.manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
        loss_fn = torch.nn.MSELoss()
        optimizer = torch.optim.Adamax(model.parameters(), lr=0.05)
        data = (torch.randn(10, 2), torch.randn(10, 1))
    """)
    s = gdstep.open(path)
    assert s.optimizer.kind == "Adamax" and s.lr == 0.05
    s.step(2)
    e = s.explain("0.weight", (1, 1))
    assert [t.symbol for t in e.terms] == ["g", "ΔW", "W_new"]
    assert e.w_new == pytest.approx(e.w_old + e.terms[1].value)
    assert set(e.state_after) >= {"exp_avg", "exp_inf", "step"}
    s.set(lr=0.01)
    s.step(1)
    assert s.backend.torch_optimizer.param_groups[0]["lr"] == 0.01 and s.record("update").lr == 0.01
    s.back(iterations=2)
    s.step(2)


def test_dropout_and_batchnorm_rewind_exactly(tmp_path):
    path = write(tmp_path, """
        import torch
        from torch import nn
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 2))
        loss_fn = nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        data = (torch.randn(40, 3), torch.randint(0, 2, (40,)))
        batch_size = 8
    """)
    s = gdstep.open(path, dtype="float64")
    s.step(6)
    fwd = s.forward()
    running = s.backend.model[1].running_mean.clone()
    s.step(4)
    s.back(iterations=4)                              # to the start of that iteration
    again = s.forward()
    assert torch.equal(s.backend.model[1].running_mean, running)
    for a, b in zip(fwd.outputs, again.outputs):
        assert torch.equal(a, b)                      # the same dropout mask, drawn again
    g = s.gradcheck("0.weight", (0, 0))              # the mask of this forward, not a new one
    assert g.ok, g


def test_module_level_options(tmp_path):
    path = write(tmp_path, '''
        """A tiny regression.

        More text that is not the description."""
        import numpy as np
        import torch
        model = torch.nn.Linear(1, 1)
        loss_fn = torch.nn.MSELoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        x = np.linspace(-1, 1, 20)[:, None]
        data = (x, 3 * x)
        batch_size = "full"
        shuffle = False
        epochs = 7
        stop_when = "loss < 0.001"
        seed = 5
        name = "line"
    ''')
    s = gdstep.open(path, dtype="float64")
    sc = s.scenario
    assert (sc.name, sc.description, sc.seed) == ("line", "A tiny regression.", 5)
    assert sc.training.batch_size is None and not sc.training.shuffle and sc.training.epochs == 7
    assert s.backend.x.dtype == torch.float64 and s.backend.y.dtype == torch.float64
    assert s.run().reason in ("stop_when", "epochs")


@pytest.mark.parametrize("body, where, message", [
    ("import torch\nloss_fn = None\n", None, "defines no model, optimizer, data"),
    ("x = (\n", "line 1", "syntax error"),
    ("import torch\n\nraise RuntimeError('boom')\n", "line 3", "RuntimeError while running the file: boom"),
    ("import torch\nmodel = 3\nloss_fn = print\noptimizer = 1\ndata = (1, 2)\n", "model", "expected a torch.nn.Module"),
    ("import torch\nmodel = torch.nn.Linear(2, 1)\nloss_fn = torch.nn.MSELoss()\n"
     "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\ndata = (torch.zeros(4, 3), torch.zeros(4, 1))\n",
     "model", "model(x) fails on the data"),
    ("import torch\nmodel = torch.nn.Linear(2, 1)\nloss_fn = torch.nn.MSELoss()\n"
     "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\ndata = (torch.zeros(4, 2), torch.zeros(3, 1))\n",
     "data", "same number of rows"),
    ("import torch\nmodel = torch.nn.Linear(2, 1)\nloss_fn = torch.nn.MSELoss()\n"
     "optimizer = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)\ndata = (torch.zeros(4, 2), torch.zeros(4, 1))\n",
     "optimizer", "not the model's"),
    ("import torch\nmodel = torch.nn.Linear(2, 1)\nloss_fn = torch.nn.MSELoss()\n"
     "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\ndata = (torch.zeros(4, 2), torch.zeros(4, 1))\n"
     "breakpoints = ['grad_norm(0.weight) > 1']\n", "breakpoints[0]", "no parameter '0.weight'"),
    ("import torch\nmodel = torch.nn.Linear(2, 1)\nloss_fn = torch.nn.MSELoss()\n"
     "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\ndata = (torch.zeros(4, 2), torch.zeros(4, 1))\n"
     "batch_size = 0\n", "batch_size", "positive integer"),
])
def test_mistakes_in_the_file_name_the_file_and_what_is_wrong(tmp_path, capsys, body, where, message):
    path = write(tmp_path, body)
    with pytest.raises(ScenarioError) as info:
        gdstep.open(path)
    err = info.value
    assert err.file == str(path) and err.where == where and message in str(err)
    assert main(["check", str(path)]) == 2
    out = capsys.readouterr().err
    assert out.count("\n") == 1 and str(path) in out and "Traceback" not in out


def test_a_missing_file_is_a_scenario_error():
    with pytest.raises(ScenarioError, match="no such file"):
        gdstep.open("nowhere/at_all.py")


def test_a_python_scenario_needs_torch(monkeypatch):
    import sys
    from gdstep.errors import BackendError
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(BackendError, match="needs PyTorch"):
        gdstep.open(RESIDUAL)


def test_a_script_steps_a_model_whose_output_has_three_dimensions(tmp_path):
    """A sequence model's (batch, time, features) output: the script's forward line names the
    shape and the first sample's first values (it raised IndexError on out[0][:6] before)."""
    from gdstep.script.runner import Runner

    path = write(tmp_path, """
        import torch
        from torch import nn
        torch.manual_seed(0)
        class Seq(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(3, 4)
            def forward(self, x):
                return self.fc(x).reshape(len(x), 2, 2)
        model = Seq()
        loss_fn = nn.MSELoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        data = (torch.randn(8, 3), torch.randn(8, 2, 2))
        batch_size = 8
    """)
    s = gdstep.open(path, dtype="float64")
    outcome = Runner(s).execute_line("forward")
    assert outcome.ok, outcome
    out = s.backend.model(s.backend.x)              # the same full batch, computed here
    text = " ".join(outcome.lines)
    assert "output 8×2×2" in text
    assert f"{out[0, 0, 0].item():.4g}"[:5] in text

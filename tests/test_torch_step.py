"""The torch backend's optimizer step on kept lists (gdstep.backends.torch_step) against
torch.optim's own default `step()`, bit for bit: every optimizer and option gdstep builds
(tests/optim_cases.py), float32 and float64, across a first step, a parameter without a
gradient, a state replaced as a restore replaces it, and a change of the learning rate."""

from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

from gdstep.backends.torch_step import KeptStep  # noqa: E402
from optim_cases import CASES, TORCH, case_id  # noqa: E402

SHAPES = [(7, 5), (7,), (3, 7), (3,)]


CUDA = pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])


def _optimizer(kind: str, args: dict, dtype, device: str = "cpu"):
    torch.manual_seed(0)
    params = [torch.randn(s, dtype=dtype).to(device).requires_grad_() for s in SHAPES]
    return params, getattr(torch.optim, TORCH[kind])(params, **args)


def _state(opt) -> list:
    return [(k, v) for p in opt.param_groups[0]["params"] for k, v in sorted(opt.state.get(p, {}).items())]


def _grads(step: int, dtype, device: str = "cpu") -> list:
    g = torch.Generator().manual_seed(step)
    scale = 10.0 ** (step % 9 - 5)            # gradients from 1e-5 to 1e3: each operation's rounding shows
    return [(torch.randn(s, generator=g, dtype=dtype) * scale).to(device) for s in SHAPES]


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_the_kept_step_equals_torch_optims_step_bit_for_bit(case, dtype, device):
    kind, args = case
    plain, plain_opt = _optimizer(kind, args, dtype, device)
    ours, opt = _optimizer(kind, args, dtype, device)
    kept, taken = KeptStep(), 0
    for step in range(40):
        grads = _grads(step, dtype, device)
        missing = 2 if step == 12 else None       # a parameter without a gradient: step() skips it
        for params in (plain, ours):
            for i, (p, g) in enumerate(zip(params, grads)):
                p.grad = None if i == missing else g.clone()
        if step == 20:                            # as a restore does: new state tensors, the same values
            for o in (plain_opt, opt):
                o.load_state_dict(copy.deepcopy(o.state_dict()))
        if step == 30:
            for o in (plain_opt, opt):
                o.param_groups[0]["lr"] *= 0.5
        plain_opt.step()
        if kept.step(torch, opt):
            taken += 1
        else:
            opt.step()
        for a, b in zip(plain, ours):
            assert torch.equal(a, b), f"{kind} {args}: parameters differ after step {step}"
        for (ka, a), (kb, b) in zip(_state(plain_opt), _state(opt), strict=True):
            assert ka == kb and (torch.equal(a, b) if torch.is_tensor(a) else a == b), \
                f"{kind} {args}: state {ka} differs after step {step}"
    assert taken >= 35, f"the kept step took {taken} of 40 steps"


def test_a_step_hook_makes_step_take_the_step():
    params, opt = _optimizer("adam", {"lr": 0.01}, torch.float32)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()                                   # the first step makes the state
    kept = KeptStep()
    assert kept.step(torch, opt)
    called = []
    handle = opt.register_step_post_hook(lambda o, a, k: called.append(1))
    assert not kept.step(torch, opt)             # the hook must run: step() takes it
    handle.remove()
    assert kept.step(torch, opt)


def test_an_optimizer_a_scheduler_wrapped_takes_its_own_step():
    """An lr scheduler wraps the optimizer's step to count its calls: that step() must run."""
    params, opt = _optimizer("sgd", {"lr": 0.1, "momentum": 0.9}, torch.float32)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    kept = KeptStep()
    assert kept.step(torch, opt)
    torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    assert not kept.step(torch, opt)


def test_a_step_count_changed_elsewhere_is_read_again():
    """A step() taken between kept steps (a fallback) moves the counts; the bias correction
    follows them, as torch's own step would."""
    plain, plain_opt = _optimizer("adam", {"lr": 0.01}, torch.float32)
    ours, opt = _optimizer("adam", {"lr": 0.01}, torch.float32)
    kept = KeptStep()
    for step in range(12):
        for params in (plain, ours):
            for p, g in zip(params, _grads(step, torch.float32)):
                p.grad = g.clone()
        plain_opt.step()
        if step % 4 == 3 or not kept.step(torch, opt):
            opt.step()
    for a, b in zip(plain, ours):
        assert torch.equal(a, b)


SCENARIO = """
name = "blobs, Adam, full batch"
seed = 0
[data]
kind = "blobs"
n = 96
classes = 3
features = 5
[model]
layers = [ { linear = 16 }, "relu", { linear = 3 } ]
[loss]
kind = "cross_entropy"
[optimizer]
kind = "{kind}"
lr = 0.01
[training]
batch_size = "full"
epochs = 1000
shuffle = false        # the bare loop's order
"""


@pytest.mark.parametrize("kind", ["adam", "adamw", "sgd"])
def test_a_torch_backend_run_equals_a_plain_torch_loop_bit_for_bit(kind):
    """Session.run on the torch backend (its step on kept lists) against a bare loop of the
    same model with torch.optim's default step and torch's own cross entropy, from the same
    starting values, on the same full batch."""
    import gdstep
    from gdstep.scenario import parse_scenario

    scenario = parse_scenario(SCENARIO.replace("{kind}", kind))
    s = gdstep.open(scenario, backend="torch")
    model = copy.deepcopy(s.backend.model)
    x, y = s.backend.x, s.backend.y
    s.run(max_steps=60)
    opt = getattr(torch.optim, TORCH[kind])(model.parameters(), lr=0.01)
    for _ in range(60):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y, reduction="none").mean()   # as gdstep reduces
        loss.backward()
        opt.step()
    for (name, p), (_, q) in zip(model.named_parameters(), s.backend.model.named_parameters(), strict=True):
        assert torch.equal(p, q), name

"""The forward's finiteness proved from bounds (gdstep.backends.forward_bound): every bound is
checked against the outputs torch really computes, a row is only called finite where it is,
and the chain ends wherever something else could change a value."""

from __future__ import annotations

import math
import random

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from gdstep.backends.forward_bound import ForwardBound  # noqa: E402

AFFINE = (nn.Linear, nn.Conv2d)


def run(model, x, walk):
    """Model's rows one by one, as the Sequential path runs them, each linked to the walk;
    returns [(row, output, proven)]."""
    out, h = [], x
    for i, m in enumerate(model):
        given, h = h, m(h)
        walk.link(i, m, (given,), h)
        out.append((i, h, walk.proven(i)))
    return out


def walked(model, x):
    """A measuring forward (the sizes), then one with the weights' norms read."""
    fb = ForwardBound(torch, list(model), lambda: set())
    with torch.no_grad():
        run(model, x, fb.walk())
        walk = fb.walk()
        walk.read()
        return walk, run(model, x, walk)


def random_net(rng: random.Random, dtype):
    layers = [nn.Conv2d(3, 16, 3, padding=1)]
    for _ in range(rng.randint(1, 4)):
        layers.append(rng.choice([nn.ReLU(), nn.Tanh(), nn.LeakyReLU(rng.choice([0.01, 3.0])), nn.GELU(), nn.SiLU(),
                                  nn.ELU(rng.choice([1.0, 5.0])), nn.Dropout(0.3), nn.Identity()]))
    layers += [rng.choice([nn.MaxPool2d(2), nn.AvgPool2d(2)]), nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(),
               nn.Flatten(), nn.Linear(8 * 16 * 16, 10)]
    return nn.Sequential(*layers).to(dtype).train()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_bound_holds_and_only_finite_outputs_are_proven(dtype):
    rng = random.Random(7)
    proven_all = 0
    for case in range(40):
        torch.manual_seed(case)
        model = random_net(rng, dtype)
        big = 10.0 ** rng.uniform(0, 36 if dtype == torch.float32 else 300)   # up to overflow
        scale = big if case % 3 == 0 else 1.0
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(scale ** (1 / 3))
        x = torch.randn(8, 3, 32, 32, dtype=dtype) * 10.0 ** rng.uniform(-2, 3)
        if case % 7 == 5:
            x[0, 0, 0, 0] = rng.choice([math.inf, -math.inf, math.nan])
        walk, rows = walked(model, x)
        for i, out, proven in rows:
            b = walk.bounds.get(i)
            if b is not None and b < torch.finfo(dtype).max:
                assert out.abs().max().item() <= b, (case, i, type(model[i]).__name__)
            if proven:
                assert bool(torch.isfinite(out).all()), (case, i)
        checked = [i for i, m in enumerate(model) if isinstance(m, AFFINE)]
        if scale == 1.0 and case % 7 != 5:
            assert all(rows[i][2] for i in checked), case        # an ordinary net: every checked row proven
            proven_all += 1
        if case % 7 == 5:
            assert not any(p for _, _, p in rows), case          # a non-finite input proves nothing
    assert proven_all >= 15


def test_an_overflowing_row_is_not_proven_and_really_overflows():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 32 * 32, 2))
    with torch.no_grad():
        model[0].weight.fill_(-3e38)          # every output -inf; the ReLU hides it from the loss
        model[0].bias.zero_()
    x = torch.rand(8, 3, 32, 32) + 0.5
    walk, rows = walked(model, x)
    assert not rows[0][2] and not bool(torch.isfinite(rows[0][1]).all())
    assert bool(torch.isfinite(rows[3][1]).all())              # downstream all finite: only the test of row 0 sees it


def hooked(model, fb):
    """Walk the model through forward hooks, as attach mode does; the hook ids are gdstep's own."""
    state = {}
    handles = [m.register_forward_hook(lambda m, a, o, i=i: state["walk"].link(i, m, a, o)) for i, m in enumerate(model)]
    fb.own_hooks = lambda: {h.id for h in handles}
    return state


def test_the_chain_ends_where_a_value_could_change_between_rows():
    torch.manual_seed(1)
    conv, relu = nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()
    lin = nn.Linear(16 * 32 * 32, 2)

    class Edited(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.relu, self.flat, self.lin = conv, relu, nn.Flatten(), lin
            self.scale = None

        def forward(self, x):
            h = self.conv(x)
            if self.scale is not None:
                h.mul_(self.scale)            # in place, between two rows
            return self.lin(self.flat(self.relu(h)))

    model = Edited()
    rows = [model.conv, model.relu, model.flat, model.lin]
    fb = ForwardBound(torch, rows, lambda: set())
    state = hooked(nn.ModuleList(rows), fb)
    x = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        state["walk"] = fb.walk()
        model(x)                              # measures the sizes
        for scale, expect in ((None, {0, 1, 2, 3}), (1e30, {0})):
            model.scale = scale
            walk = state["walk"] = fb.walk()
            walk.read()
            model(x)
            assert walk.proven() == expect, scale


def test_no_proof_through_a_foreign_hook_a_subclass_a_moved_weight_or_another_dtype():
    torch.manual_seed(2)

    def fresh():
        return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 32 * 32, 2))

    x = torch.randn(8, 3, 32, 32)
    model = fresh()
    handle = model[0].register_forward_hook(lambda m, a, o: o * 1e30)       # a user's hook that changes the output
    walk, rows = walked(model, x)
    assert not any(p for _, _, p in rows)
    handle.remove()
    walk, rows = walked(model, x)
    assert all(p for _, _, p in rows)

    handle = nn.modules.module.register_module_forward_hook(lambda m, a, o: None)   # a global hook
    try:
        walk, rows = walked(model, x)
        assert not any(p for _, _, p in rows)
    finally:
        handle.remove()

    class MyConv(nn.Conv2d):
        pass

    sub = fresh()
    sub[0] = MyConv(3, 16, 3, padding=1)
    walk, rows = walked(sub, x)
    assert not any(p for _, _, p in rows)

    fb = ForwardBound(torch, list(model), lambda: set())       # a weight moved after its norm was read
    with torch.no_grad():
        run(model, x, fb.walk())
        walk = fb.walk()
        walk.read()
        model[0].weight.mul_(2.0)
        rows = run(model, x, walk)
    assert not rows[0][2]

    with torch.autocast("cpu", dtype=torch.bfloat16):          # the input cast on the way in
        walk, rows = walked(model, x)
    assert not rows[0][2] and not rows[3][2]


def test_an_inference_tensor_ends_the_chain_without_raising():
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 32 * 32, 2))
    x = torch.randn(8, 3, 32, 32)
    with torch.inference_mode():          # its outputs have no version counter
        walk, rows = walked(model, x)
    assert not any(p for _, _, p in rows)

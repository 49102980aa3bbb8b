"""The forward's finiteness proved from bounds (gdstep.backends.forward_bound): every bound is
checked against the outputs torch really computes, a row is only called finite where it is,
and the chain ends wherever something else could change a value."""

from __future__ import annotations

import math
import random

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from gdstep.backends.detachable import detachable  # noqa: E402
from gdstep.backends.forward_bound import AFFINE_ROW, ForwardBound, rule_of  # noqa: E402

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


def walked(model, x, small: bool = False):
    """A measuring forward (the sizes), then one with the weights' norms read (with `small`,
    also where every output is small)."""
    fb = ForwardBound(torch, list(model))
    with torch.no_grad():
        run(model, x, fb.walk())
        walk = fb.walk(small)
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
    """Walk the model through forward hooks, as attach mode does: gdstep's own (detachable)."""
    state = {}
    for i, m in enumerate(model):
        m.register_forward_hook(detachable(lambda m, a, o, i=i: state["walk"].link(i, m, a, o)))
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
    fb = ForwardBound(torch, rows)
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

    # a hook of another debugger's (another owner's Detachable: a second attach whose step
    # mode may run a pending update from its hook) is foreign too; this bound's own is not
    def scaled(m, a, o):
        return o * 1e30
    other = model[0].register_forward_hook(detachable(scaled, owner=object()))
    walk, rows = walked(model, x)
    assert not any(p for _, _, p in rows)
    other.remove()
    owner = object()
    mine = model[0].register_forward_hook(detachable(lambda m, a, o: None, owner=owner))
    fb = ForwardBound(torch, list(model), owner)
    with torch.no_grad():
        run(model, x, fb.walk())
        walk = fb.walk()
        walk.read()
        rows = run(model, x, walk)
    assert all(p for _, _, p in rows)
    mine.remove()

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

    fb = ForwardBound(torch, list(model))       # a weight moved after its norm was read
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


def row_kinds(rng: random.Random, dims: int, channels: int):
    """One random row that keeps a `dims`-d image's rank (strides, dilations, groups,
    paddings, ceil_mode, divisor_override …), and the channels it leaves."""
    conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1]
    convt = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)[dims - 1]
    maxpool = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[dims - 1]
    avgpool = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)[dims - 1]
    adaptive = ((nn.AdaptiveAvgPool1d, nn.AdaptiveMaxPool1d), (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d),
                (nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool3d))[dims - 1]
    kind = rng.randrange(9)
    if kind == 0:
        groups = rng.choice([1, channels]) if channels % 2 == 0 else 1
        out = rng.choice([channels, 2 * channels]) if groups > 1 else rng.randint(1, 12)
        k = rng.randint(1, 4)
        return conv(channels, out, k, stride=rng.randint(1, 2), padding=rng.randint(0, k // 2),
                    dilation=rng.randint(1, 2), groups=groups, bias=rng.random() < 0.8), out
    if kind == 1:
        out, k, s = rng.randint(1, 12), rng.randint(1, 4), rng.randint(1, 3)
        return convt(channels, out, k, stride=s, padding=rng.randint(0, k // 2), output_padding=rng.randint(0, s - 1),
                     bias=rng.random() < 0.8), out
    if kind == 2:
        k = rng.randint(1, 3)
        return maxpool(k, stride=rng.randint(1, 3), padding=rng.randint(0, k // 2), dilation=rng.randint(1, 2),
                       ceil_mode=rng.random() < 0.5), channels
    if kind == 3:
        k = rng.randint(1, 3)
        over = {} if dims == 1 else {"divisor_override": rng.choice([None, 1, 2, -1, -3])}     # (torch takes any but 0)
        return avgpool(k, stride=rng.randint(1, 3), padding=rng.randint(0, k // 2), ceil_mode=rng.random() < 0.5,
                       count_include_pad=rng.random() < 0.5, **over), channels
    if kind == 4:
        return rng.choice(adaptive)(rng.choice([1, 2, 3, 5, 7])), channels
    return rng.choice([nn.ReLU(), nn.ReLU6(), nn.Tanh(), nn.Sigmoid(), nn.Softsign(), nn.Hardsigmoid(), nn.GELU(),
                       nn.SiLU(), nn.LeakyReLU(rng.choice([0.01, 4.0])), nn.ELU(rng.choice([0.5, 6.0])),
                       nn.Dropout(rng.choice([0.0, 0.5])), nn.Identity()]), channels     # (p=0: x itself)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_every_rows_bound_holds_the_norm_of_its_whole_output(dims):
    """Each bound is of ‖output‖, the 2-norm of the whole tensor (hence of max|output|):
    checked against torch's own outputs, in float64, for every kind of row the rules know,
    with strides, dilations, groups, paddings, ceil_mode, divisor_override, output_padding,
    and with large and small inputs and weights."""
    rng = random.Random(dims)
    size = {1: 40, 2: 14, 3: 7}[dims]
    checked = 0
    for case in range(60):
        torch.manual_seed(case)
        channels, layers = 4, [(nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1](3, 4, 3, padding=1)]
        for _ in range(rng.randint(1, 5)):
            row, channels = row_kinds(rng, dims, channels)
            layers.append(row)
        layers += [nn.Flatten(), nn.LazyLinear(rng.randint(1, 5))]
        model = nn.Sequential(*layers).double().train()
        x = torch.randn(rng.randint(1, 4), 3, *([size] * dims), dtype=torch.float64) * 10.0 ** rng.uniform(-3, 3)
        try:
            with torch.no_grad():
                model(x)                      # shapes a random chain cannot take are skipped
        except RuntimeError:
            continue
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(10.0 ** rng.uniform(-2, 2))
                if case % 2:                  # signs aligned: sums add up, the bounds nearly tight
                    p.abs_()
            if case % 2:
                x.abs_()
        walk, rows = walked(model, x, small=True)
        for i, out, proven in rows:
            if rule_of(model[i]) is None or walk.bounds.get(i) == math.inf:    # a dilated, padded max-pool
                assert isinstance(model[i], (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)) and not proven
                break
            if rule_of(model[i]) == AFFINE_ROW and i not in walk.rows:     # weights larger than the output
                break
            b = walk.bounds.get(i)
            assert b is not None, (case, i, model[i])
            assert out.norm().item() <= b * (1 + 1e-9), (case, i, model[i])
            assert proven
            checked += 1
    assert checked >= 150


def test_a_deep_mlp_at_its_initialisation_is_proven_and_an_other_padding_mode_ends_the_chain():
    """42 Linear rows 64×64 (gdstep's benchmark of many tensors): the 2-norms' chain grows ~4.6×
    a row, far inside float32's range, so watch mode need not read a single output. A
    convolution with reflect padding repeats input elements: no rule."""
    torch.manual_seed(0)
    layers = [nn.Linear(32, 64), nn.ReLU()]
    for _ in range(40):
        layers += [nn.Linear(64, 64), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(64, 10))
    x = torch.randn(64, 32)
    fb = ForwardBound(torch, list(model))
    with torch.no_grad():
        run(model, x, fb.walk())
        assert fb.chosen() == []                      # small outputs: read together where gdstep runs the rows
        walk = fb.walk(small=True)
        assert walk.rows == [i for i, m in enumerate(model) if isinstance(m, nn.Linear)]
        walk.read(x)
        assert walk.ahead(model, x) == set(range(len(model)))
        assert walk.ahead(model, torch.randn(63, 32)) == set()     # another shape: sizes unknown
    reflect = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), nn.ReLU())
    walk, rows = walked(reflect, torch.randn(2, 3, 8, 8))
    assert not any(p for _, _, p in rows)


def test_a_dilated_padded_max_pool_whose_window_holds_padding_alone_is_not_proven():
    """Its output there is -inf from a finite input (the taps at -1 and 1 of a 1-wide image):
    such a pool ends the chain (the rule of max|out| ≤ max|in| used before said finite)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.MaxPool2d(2, stride=2, padding=1, dilation=2, ceil_mode=True),
                          nn.Flatten(), nn.Linear(4, 2))
    walk, rows = walked(model, torch.randn(2, 3, 1, 1), small=True)
    assert torch.isinf(rows[1][1]).all() and rows[0][2] and not rows[1][2] and not rows[3][2]


@pytest.mark.parametrize("pool", [nn.AdaptiveAvgPool2d(7), nn.AdaptiveMaxPool2d(7), nn.AvgPool2d(3, 1, divisor_override=1),
                                  nn.AvgPool2d(3, 1, divisor_override=-1)])
def test_pools_that_repeat_or_sum_their_input_are_bounded_by_what_they_make(pool):
    """An adaptive pool larger than its input repeats each element (7×7 of a 1×1 image: 49
    times); a divisor_override of 1 sums windows: the norm grows, and the bound with it."""
    adaptive = "Adaptive" in type(pool).__name__
    model = nn.Sequential(nn.Conv2d(3, 4, 1), pool, nn.Flatten(), nn.Linear(4 * 49 if adaptive else 4 * 81, 2))
    x = torch.rand(2, 3, *((1, 1) if adaptive else (11, 11))) + 1
    with torch.no_grad():
        model[0].weight.abs_()
        model[0].bias.abs_()
    walk, rows = walked(model, x, small=True)
    out = rows[1][1]
    assert out.norm().item() > 2 * rows[0][1].norm().item()     # it grew
    assert out.norm().item() <= walk.bounds[1] and rows[1][2]


def test_a_nan_input_proves_nothing_after_a_squashing_row():
    """Tanh of a nan is a nan: the bound √n of a row at most 1 each holds of finite inputs only."""
    model = nn.Sequential(nn.Tanh(), nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(3, 4)
    x[1, 2] = math.nan
    walk, rows = walked(model, torch.randn(3, 4), small=True)
    assert all(p for _, _, p in rows[1:])                  # a finite batch: proven
    fb = walk.fb
    with torch.no_grad():
        walk = fb.walk(small=True)
        walk.read()
        rows = run(model, x, walk)
    assert not any(p for _, _, p in rows) and not torch.isfinite(rows[3][1]).all()


def test_weights_given_new_tensors_or_a_parametrization_make_the_bounds_again():
    from gdstep.backends.lean_forward import LeanForward

    class Rows(LeanForward):             # the part of a backend the bounds are kept by
        def __init__(self, model):
            self._rows, self._hooks = [(str(i), m) for i, m in enumerate(model)], []
            self._torch = torch

    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    rows = Rows(model)
    first = rows.forward_bound
    assert rows.forward_bound is first                      # kept while nothing changed
    model.load_state_dict({k: v * 1e30 for k, v in model.state_dict().items()}, assign=True)
    again = rows.forward_bound
    assert again is not first and again.params[0][0] is model[0].weight
    model[0].bias = nn.Parameter(model[0].bias.detach() * 1e30)          # one bias assigned anew
    biased = rows.forward_bound
    assert biased is not again and biased.params[0][1] is model[0].bias
    weight = model[2].weight.detach().clone()
    del model[2].weight
    model[2].register_buffer("weight", weight)        # a weight kept among the buffers: the same tensor stays
    buffered = rows.forward_bound
    assert buffered is not biased and buffered.params[2][0] is weight and rows.forward_bound is buffered
    nn.utils.parametrize.register_parametrization(model[2], "bias", nn.Identity())
    assert rows.forward_bound is not buffered and rows.forward_bound.rules[2] is None   # a subclass now: no rule

    bare = nn.Sequential(nn.Linear(4, 8, bias=False), nn.ReLU(), nn.Linear(8, 2))
    rows = Rows(bare)
    first = rows.forward_bound
    del bare[0].bias
    bare[0].register_buffer("bias", torch.full((8,), -math.inf))     # a bias where there was none: not in parameters
    assert rows.forward_bound is not first and rows.forward_bound.params[0][1] is bare[0].bias
    again = rows.forward_bound
    object.__setattr__(bare[2], "weight", torch.full((2, 8), math.inf))    # a weight that shadows the parameter
    assert rows.forward_bound is not again and rows.forward_bound.params[2][0] is bare[2].weight


def test_ahead_refuses_a_row_given_twice_and_a_pre_hook_of_the_loops_on_the_model():
    lin = nn.Linear(8, 8)
    twice = nn.Sequential(lin, nn.ReLU(), lin)
    fb = ForwardBound(torch, [lin, twice[1]])     # the rows as named_modules gives them: once
    x = torch.randn(4, 8)
    with torch.no_grad():
        run(nn.Sequential(lin, nn.ReLU()), x, fb.walk(small=True))
        walk = fb.walk(small=True)
        walk.read(x)
        assert walk.ahead(twice, x) == set()
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    fb = ForwardBound(torch, list(model))
    with torch.no_grad():
        run(model, x, fb.walk(small=True))
        walk = fb.walk(small=True)
        walk.read(x)
        assert walk.ahead(model, x) == {0, 1, 2}
        handle = model.register_forward_pre_hook(lambda m, args: (args[0] * 1e37,))
        walk = fb.walk(small=True)
        walk.read(x)
        assert walk.ahead(model, x) == set()
        handle.remove()

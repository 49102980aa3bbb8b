"""A run knows an update finite without reading it where bounds say so (`UpdateBound`).

Each optimizer's bound is checked against torch.optim's own step: after every step, each
|element| of the parameters and of the bounded state lies within the bound the rule gave,
including the regimes that stress each term (L2 and decoupled weight decay large enough to
grow W, a denominator down to ε, momentum). Then in attach mode:
- an update that turns a parameter non-finite is still caught where the loop changed what
  the bounds assumed: optimizer state edited in place, gradients scaled between `watch()`
  and `step()`;
- a run that may rely on its bounds reads nothing after the first update;
- a net whose parameters take fewer than `BOUNDS_FROM` bytes is read instead (cheaper).

The tests of attach mode use small nets, so they lower `BOUNDS_FROM` to 0.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import gdstep
from gdstep.backends.torch_optim import config_of, twin_formula
from gdstep.backends.update_bound import UpdateBound

CASES = [
    ("Adam", dict(lr=1e-3)),
    ("Adam", dict(lr=1.0, betas=(0.5, 0.9))),                      # steps of η·m/ε on tiny gradients
    ("Adam", dict(lr=0.1, amsgrad=True, weight_decay=3.0)),         # L2: g + λ·W
    ("AdamW", dict(lr=0.5, weight_decay=6.0)),                      # W·(1 − η·λ) = −2·W
    ("SGD", dict(lr=0.5)),
    ("SGD", dict(lr=0.5, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.5, momentum=0.9, dampening=0.3, weight_decay=10.0)),
    ("RMSprop", dict(lr=1e-2)),
    ("RMSprop", dict(lr=1e-2, momentum=0.9, weight_decay=0.5)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, weight_decay=4.0)),
]


def grads_at(scale: float, shape, gen) -> torch.Tensor:
    """A gradient with one dominant element (its norm then near its largest |element|),
    some exact zeros, and the rest small."""
    g = torch.randn(shape, generator=gen, dtype=torch.float64) * scale * 1e-3
    g.view(-1)[0] = scale
    g.view(-1)[1:4] = 0.0
    return g


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind,hyper", CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CASES)])
def test_every_element_after_torchs_own_step_lies_within_the_rules_bound(kind, hyper, dtype):
    gen = torch.Generator().manual_seed(7)
    params = [torch.zeros(5, 4, dtype=dtype, requires_grad=True), torch.zeros(7, dtype=dtype, requires_grad=True)]
    with torch.no_grad():
        params[0].view(-1)[0], params[1][3] = 1e-6, -2.0
    opt = getattr(torch.optim, kind)(params, **hyper)
    config = config_of(opt)
    info = torch.finfo(dtype)
    scales = [1.0, 1e-12, 3e2, 0.0, 1e-9, 50.0, 1e-6, 7.0] * 3
    for p in params:                                      # the first step makes the state
        p.grad = grads_at(1.0, p.shape, gen).to(dtype)
    opt.step()
    state = [(k, v) for p in params for k, v in opt.state[p].items()
             if k in config.bounded_state and isinstance(v, torch.Tensor)]
    bounds = UpdateBound.from_norms([p.norm().item() for p in params], [(k, v.norm().item()) for k, v in state])
    for step, scale in enumerate(scales):
        for p in params:
            p.grad = grads_at(scale, p.shape, gen).to(dtype)
        grad = math.sqrt(2 * math.fsum(n.item() ** 2 for n in torch._foreach_norm([p.grad for p in params])))
        after = config.bound_after(opt.param_groups[0], bounds, grad, info.eps, info.tiny)
        assert after is not None
        opt.step()
        for p in params:
            assert p.abs().max().item() <= after["param"], (step, p.abs().max().item(), after)
        for k, v in state:
            assert v.abs().max().item() <= after[k], (step, k, v.abs().max().item(), after)
        bounds = after


@pytest.mark.parametrize("hyper", [dict(lr=1.0), dict(lr=1.0, amsgrad=True), dict(lr=1.0, betas=(0.99, 0.999))])
def test_adams_bias_corrected_step_on_a_gradient_below_epsilon_lies_within_the_bound(hyper):
    """The regime where the step is η·m̂/ε and m̂ = m/(1 − β₁ᵗ) is far above m: a tiny
    gradient once, zeros after it, the weights near zero (so no W term hides the step)."""
    p = torch.zeros(6, requires_grad=True)
    opt = torch.optim.Adam([p], **hyper)
    config, info = config_of(opt), torch.finfo(torch.float32)
    p.grad = torch.tensor([1e-12, 0, 0, 0, 0, 0])
    opt.step()
    state = [(k, v) for k, v in opt.state[p].items() if k in config.bounded_state]
    bounds = UpdateBound.from_norms([p.norm().item()], [(k, v.norm().item()) for k, v in state])
    for _ in range(6):
        p.grad = torch.zeros(6)
        after = config.bound_after(opt.param_groups[0], bounds, 0.0, info.eps, info.tiny)
        opt.step()
        assert p.abs().max().item() <= after["param"], (p.abs().max().item(), after)
        bounds = after


def step_with_bounds(opt, params, rules, bound: UpdateBound, update: int) -> dict:
    """One torch step as a run takes it: the gradients measured, UpdateBound asked before and
    after the step (its own combination of the groups), the state as the bounds watch it."""
    named = {str(i): p for i, p in enumerate(params)}
    bound.measured({n: p.grad for n, p in named.items()}, {n: p.grad.norm().item() ** 2 for n, p in named.items()})
    bound.before_step(update, opt.param_groups)
    opt.step()
    return bound.after_step(rules, bound._known[0], list(named.items()), update)


def watch_all(opt, params, rules, bound: UpdateBound) -> list:
    """A full test's norms made into bounds, as `LeanPhases._stepped` does; the watched list."""
    state = [(k, v) for p in params for k, v in opt.state[p].items() if k in rules.bounded_state]
    watched = list(params) + [v for _, v in state]
    bound.tested(watched, UpdateBound.from_norms([p.norm().item() for p in params],
                                                 [(k, v.norm().item()) for k, v in state]))
    return state


def test_param_groups_with_their_own_values_are_bounded_by_each_groups_formula():
    """AdamW with weight decay on the weights and none on the biases, at its own lr each
    (what transformer recipes do): the bound is each group's rule, the largest taken."""
    gen = torch.Generator().manual_seed(3)
    w, b = torch.randn(5, 4, generator=gen).requires_grad_(), torch.randn(5, generator=gen).requires_grad_()
    opt = torch.optim.AdamW([{"params": [w], "weight_decay": 6.0, "lr": 0.5}, {"params": [b], "weight_decay": 0.0}], lr=1.0)
    rules = twin_formula(opt)
    assert not hasattr(config_of(opt), "bound_after")          # the groups differ: no one config
    for p in (w, b):
        p.grad = grads_at(1.0, p.shape, gen).float()
    opt.step()
    bound = UpdateBound()
    state = watch_all(opt, [w, b], rules, bound)
    for update, scale in enumerate([1e-12, 3e2, 0.0, 7.0, 1e-9], start=1):
        for p in (w, b):
            p.grad = grads_at(scale, p.shape, gen).float()
        after = step_with_bounds(opt, [w, b], rules, bound, update)
        assert max(w.abs().max().item(), b.abs().max().item()) <= after["param"], after
        for k, v in state:
            assert v.abs().max().item() <= after[k]
        bound.tested(bound._known[0], after)


def test_a_group_whose_step_leaves_a_state_alone_keeps_that_states_bound():
    """Two SGD groups; the second's momentum set to 0 after its buffers exist: torch leaves
    them as they are, so their bound must not shrink with the first group's averages."""
    a, b = torch.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    opt = torch.optim.SGD([{"params": [a]}, {"params": [b]}], lr=0.1, momentum=0.5)
    a.grad, b.grad = torch.zeros(3), torch.full((3,), 100.0)
    opt.step()                                               # b's buffer: 100
    rules, bound = twin_formula(opt), UpdateBound()
    state = watch_all(opt, [a, b], rules, bound)
    opt.param_groups[1]["momentum"] = 0.0
    for update in range(1, 7):
        a.grad, b.grad = torch.full((3,), 1e-3), torch.zeros(3)
        after = step_with_bounds(opt, [a, b], rules, bound, update)
        for k, v in state:
            assert v.abs().max().item() <= after[k], (update, v.abs().max().item(), after)
        bound.tested(bound._known[0], after)


def test_the_bound_takes_the_lr_of_the_step_not_the_one_a_scheduler_set_after_it():
    w = torch.ones(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=1.0)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.01)
    rules, bound = twin_formula(opt), UpdateBound()
    w.grad = torch.ones(1)
    opt.step()
    watch_all(opt, [w], rules, bound)
    w.grad = torch.full((1,), -1000.0)
    named = {"w": w}
    bound.measured({"w": w.grad}, {"w": 1e6})
    bound.before_step(1, opt.param_groups)
    opt.step()
    scheduler.step()                                         # as a Python scenario's optimizer_step does
    after = bound.after_step(rules, bound._known[0], list(named.items()), 1)
    assert w.abs().max().item() <= after["param"], (w.item(), after)


def test_attach_with_param_groups_of_their_own_values_relies_on_its_bounds():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    rest = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=1e-2)
    dbg = gdstep.attach(model, opt, F.cross_entropy, on_break=lambda s, m: None)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    for _ in range(4):
        dbg.step(x, y)
    assert dbg.backend.update_bound._known is not None


def test_no_bound_follows_where_the_formula_can_make_nan_from_finite_values():
    p = torch.zeros(3, requires_grad=True)
    bounds = {"param": 1.0, "square_avg": 1.0, "exp_avg": 1.0, "exp_avg_sq": 1.0, "sum": 1.0}
    info = torch.finfo(torch.float32)
    for opt in (torch.optim.RMSprop([p], centered=True),      # √(v − ḡ²) may round to √(negative)
                torch.optim.Adam([p], eps=0.0),                # 0/(0 + 0)
                torch.optim.Adagrad([p], eps=0.0)):
        assert config_of(opt).bound_after(opt.param_groups[0], bounds, 1.0, info.eps, info.tiny) is None


@pytest.fixture(autouse=True)
def bounds_on_any_net(monkeypatch):
    monkeypatch.setattr("gdstep.backends.torch_lean.BOUNDS_FROM", 0)


def attached_adam(mode_lr=1e-2):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    opt = torch.optim.Adam(model.parameters(), lr=mode_lr)
    seen = []
    dbg = gdstep.attach(model, opt, F.cross_entropy, on_break=lambda s, m: seen.append((s.step_count, m)))
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    return model, opt, dbg, seen, x, y


def test_optimizer_state_the_loop_edits_in_place_is_read_again_and_the_nan_it_makes_is_caught():
    """Negative v makes √v NaN: the bounds knew v ≥ 0, so the edit must send the test back to reading."""
    model, opt, dbg, seen, x, y = attached_adam()
    for _ in range(4):
        dbg.step(x, y)
    assert dbg.backend.update_bound._known is not None          # the bounds are in use
    first = model[0].weight
    opt.state[first]["exp_avg_sq"].fill_(-1.0)                   # the loop's own edit
    dbg.step(x, y)
    assert not torch.isfinite(first).all()
    assert seen and seen[0][0] == 4 and "update" in seen[0][1], seen


def test_gradients_scaled_between_watch_and_step_are_not_taken_for_the_ones_measured():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    seen = []
    dbg = gdstep.attach(model, opt, F.cross_entropy, on_break=lambda s, m: seen.append((s.step_count, m)))
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    for i in range(5):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        dbg.watch(loss, y)
        if i == 4:
            assert dbg.backend.update_bound._known is not None
            for p in model.parameters():
                p.grad.mul_(1e39)                # after watch(): inf (NaN where 0), and so W
        opt.step()
    assert not all(torch.isfinite(p).all() for p in model.parameters())
    assert seen and seen[0][0] == 5 and "during update" in seen[0][1], seen     # the loop's step ran


def replace_v(model, opt):
    st = opt.state[model[0].weight]
    st["exp_avg_sq"] = -torch.ones_like(st["exp_avg_sq"])     # assigned, not written in place: √v NaN


def step_count_minus_one(model, opt):
    for st in opt.state.values():
        st["step"].fill_(-1.0)                                # fused Adam: 1 − β₁⁰ = 0, lr/0, NaN


@pytest.mark.parametrize("action", [replace_v, step_count_minus_one], ids=["state tensor replaced", "Adam's step count edited"])
def test_what_the_bounds_cannot_see_sends_the_test_back_to_reading(action):
    """Each of these makes the next update NaN while the bounds, as they stood, said finite:
    the update's test must read, and name the update."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, fused=action is step_count_minus_one)
    seen = []
    dbg = gdstep.attach(model, opt, F.cross_entropy, on_break=lambda s, m: seen.append((s.step_count, m)))
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    for _ in range(4):
        dbg.step(x, y)
    assert dbg.backend.update_bound._known is not None
    action(model, opt)
    dbg.step(x, y)
    assert not torch.isfinite(model[0].weight).all()
    assert seen and seen[0][0] == 4 and "during update" in seen[0][1], seen


def test_a_post_hook_of_the_loops_own_that_changes_parameters_is_not_taken_for_the_formula():
    """The loop's unit-norm projection after each step, which divides a zeroed row by its
    norm at one step: 0/0, NaN, named in that update as without bounds."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    dbg = None

    def project(optimizer, args, kwargs):
        if dbg is not None and dbg.session is not None and dbg.session.step_count == 5:
            with torch.no_grad():
                model[0].weight[0].zero_()
                model[0].weight.div_(model[0].weight.norm(dim=1, keepdim=True))

    opt.register_step_post_hook(project)
    seen = []
    dbg = gdstep.attach(model, opt, F.cross_entropy, on_break=lambda s, m: seen.append((s.step_count, m)))
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    for _ in range(6):
        dbg.step(x, y)
        if seen:
            break
    assert seen and "0.weight" in seen[0][1] and "during update" in seen[0][1], seen


def test_parameters_given_new_memory_through_data_send_the_test_back_to_reading(monkeypatch):
    """`vector_to_parameters` assigns `p.data`, which moves no version counter: the bounds,
    which knew the old values, are not used for the next update."""
    import gdstep.backends.torch_lean as lean
    from torch.nn.utils import parameters_to_vector, vector_to_parameters
    model, opt, dbg, seen, x, y = attached_adam()
    for _ in range(4):
        dbg.step(x, y)
    reads = []
    real = lean.cpu_norms
    monkeypatch.setattr(lean, "cpu_norms", lambda torch, tensors: reads.append(len(tensors)) or real(torch, tensors))
    dbg.step(x, y)
    assert reads == []                                        # the bounds hold: nothing read
    vector_to_parameters(parameters_to_vector(model.parameters()).detach() * 100, model.parameters())
    dbg.step(x, y)
    assert reads == [12]                                      # W, m and v of the 4 parameters, read again
    assert not seen


def test_a_run_relying_on_its_bounds_reads_nothing_after_its_first_update(monkeypatch):
    import gdstep.backends.torch_lean as lean
    reads = []
    real = lean.cpu_norms
    monkeypatch.setattr(lean, "cpu_norms", lambda torch, tensors: reads.append(len(tensors)) or real(torch, tensors))
    model, opt, dbg, seen, x, y = attached_adam()
    for _ in range(9):
        dbg.step(x, y)
    # step 0 measures its norms (1 in 10) and reads the state with them; step 1 reads all
    # it changed once; from then on the bounds say it
    assert reads == [4 + 4 + 4], reads                   # W, m, v of the 4 parameters, once
    assert not seen


@pytest.mark.parametrize("above", [False, True])
def test_bounds_only_where_the_parameters_take_bounds_from_bytes(monkeypatch, above):
    """Below `BOUNDS_FROM` bytes of parameters a run reads every update (one fused read
    costs less than the bounds' bookkeeping); from it on, the bounds spare the reads."""
    import gdstep.backends.torch_finite as finite
    import gdstep.backends.torch_lean as lean
    reads = []
    real = finite.cpu_norms
    counted = lambda torch, tensors: reads.append(len(tensors)) or real(torch, tensors)     # noqa: E731
    for module in (lean, finite):       # (the bounds' test reads through lean's name, the full test through finite's)
        monkeypatch.setattr(module, "cpu_norms", counted)
    size = (4 * 6 + 6 + 6 * 3 + 3) * 4                   # attached_adam's parameters, float32
    monkeypatch.setattr(lean, "BOUNDS_FROM", size if above else size + 1)
    model, opt, dbg, seen, x, y = attached_adam()
    for _ in range(9):
        dbg.step(x, y)
    assert (dbg.backend.update_bound._known is not None) == above
    assert reads == ([12] if above else [8] * 8), reads     # read: W and v of the 4 parameters, each update
    assert not seen

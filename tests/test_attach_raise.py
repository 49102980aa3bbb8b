"""on_break="raise" in a loop that catches gdstep.BreakpointHit and goes on: the loop trains
exactly as a bare loop with the same batches (dbg.step raises with the session at the break and
finishes that iteration, as the loop would have, at the next dbg.step; in watch mode it raises
once the iteration is recorded), and every later breakpoint fires once, on its own iteration."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import gdstep  # noqa: E402
from attach_loop import attached_iteration  # noqa: E402


def _setup():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g)) for _ in range(9)]
    return model, opt, torch.nn.MSELoss(), batches


def _bare():
    model, opt, loss_fn, batches = _setup()
    for x, y in batches:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return model.state_dict()


def test_gdstep_breakpointhit_is_importable_from_the_package():
    from gdstep.debugger import BreakpointHit

    assert gdstep.BreakpointHit is BreakpointHit and issubclass(BreakpointHit, Exception)


@pytest.mark.parametrize("mode", ["step", "watch"])
def test_a_loop_that_catches_breakpointhit_goes_on_as_the_bare_loop(mode):
    want = _bare()
    model, opt, loss_fn, batches = _setup()
    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["step == 3", "step == 7"], on_break="raise")
    caught = []
    for i, (x, y) in enumerate(batches):
        try:        # in watch mode the update's breakpoint is raised from opt.step(), after the step
            attached_iteration(mode, dbg, model, opt, loss_fn, x, y)
        except gdstep.BreakpointHit as hit:
            caught.append((i, hit.message, hit.session is dbg.session))
            if mode == "step":             # the session stands at the break, for the handler to look at
                assert hit.session.step_count == 3 if i == 2 else 7
    dbg.close()
    assert [(i, same) for i, _, same in caught] == [(2, True), (6, True)]
    assert "step == 3" in caught[0][1] and "step == 7" in caught[1][1]
    assert dbg.session.step_count == len(batches)
    got = model.state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_a_nonfinite_forward_raised_in_dbg_step_is_finished_as_the_loop_would_have():
    """The bare loop would have stepped on the NaN batch too: the weights it leaves are NaN,
    and gdstep's are the same (the iteration finished, unchecked), not rewound or stuck."""
    model, opt, loss_fn, batches = _setup()
    x, y = batches[4]
    x = x.clone()
    x[0, 0] = float("nan")
    batches[4] = (x, y)
    dbg = gdstep.attach(model, opt, loss_fn, on_break="raise")
    hits = []
    for i, (x, y) in enumerate(batches):
        try:
            dbg.step(x, y)
        except gdstep.BreakpointHit:
            hits.append(i)
    dbg.close()
    # from the NaN batch on every iteration breaks; each is finished by the next dbg.step,
    # the last one by dbg.close(), as a bare loop's last iteration is
    assert hits == list(range(4, len(batches))) and dbg.session.step_count == len(batches)
    assert not torch.isfinite(model[0].weight).all()

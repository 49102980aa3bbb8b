"""A loop that catches gdstep.BreakpointHit (on_break="raise") goes on training exactly as it
would without gdstep: in watch mode the handler may read every record, but the session
stays where the loop stands (a move is refused in one line, nothing moved); the loop's own
gradient tensors are what it finds after the handler. In step mode `close()` finishes an
iteration a break left unfinished. Each loop is compared with a bare loop, bit for bit.
(Found by running pytorch/examples' loops under attach mode.)"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gdstep
from attach_loop import attached_iteration
from gdstep.errors import GdstepError


def make():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    return model, torch.optim.Adam(model.parameters(), lr=0.05)


def batches(n: int = 6):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)) for _ in range(n)]


def bare(halve: bool = False):
    model, opt = make()
    for x, y in batches():
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        if halve:
            for p in model.parameters():
                p.grad = p.grad * 0.5
        opt.step()
    return model


def same(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_a_loop_that_gives_its_parameters_new_gradient_tensors_between_watch_and_step_runs_on():
    """`p.grad = p.grad * 0.5` after watch(): before, the step's pre-hook compared the tensors
    with == and raised torch's "Boolean value of Tensor … is ambiguous" out of the loop's step()."""
    model, opt = make()
    dbg = gdstep.attach(model, opt, nn.MSELoss())
    for x, y in batches():
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        dbg.watch(loss, y)
        for p in model.parameters():
            p.grad = p.grad * 0.5
        used = {n: p.grad.clone() for n, p in model.named_parameters()}
        opt.step()
    assert same(model, bare(halve=True))
    rec = dbg.session.record("update")
    for name, u in rec.params.items():              # the gradients step() used
        assert torch.equal(u.grad, used[name]), name
    dbg.close()


@pytest.mark.parametrize("where", ['phase == "loss"', 'phase == "update"'])
def test_a_watch_mode_handler_reads_every_record_and_the_loop_finds_its_own_tensors(where):
    model, opt = make()
    dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=[f"step == 3 and {where}"], on_break="raise")
    hits = 0
    for x, y in batches():
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        try:
            dbg.watch(loss, y)
            opt.step()
        except gdstep.BreakpointHit as hit:
            hits += 1
            grads = [p.grad for p in model.parameters()]
            values = [p.detach().clone() for p in model.parameters()]
            s = hit.session
            for phase in ("forward", "loss", "backward", "update"):
                s.record(phase)                       # recomputed from a checkpoint
            at = s.position
            assert "— ok" in str(s.gradcheck("0.weight", (0, 0)))     # a side computation,
            assert s.position == at                                   # not a call of the loop's
            s.explain("0.weight", (0, 0))
            assert s.record("loss").value == loss.item()
            assert all(p.grad is g for p, g in zip(model.parameters(), grads))      # the very tensors
            assert all(torch.equal(p, v) for p, v in zip(model.parameters(), values))
            if where == 'phase == "loss"':
                opt.step()
    assert hits == 1
    assert same(model, bare())
    said = [e.message for e in dbg.session.events if e.kind != "breakpoint"]
    assert not any("changes the gradients" in m or "in place after the update" in m for m in said), said  # it did not
    dbg.close()


@pytest.mark.parametrize("move", ["back", "step", "seek"])
def test_a_watch_mode_handler_that_moves_the_session_is_refused_and_nothing_moves(move):
    """The loop goes on from where it stands when the handler returns: a rewind there would
    leave its tensors elsewhere (before, the weights went on from the rewound ones, silently)."""
    model, opt = make()
    dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=["step == 3"], on_break="raise")
    refused = []
    for i, (x, y) in enumerate(batches()):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        dbg.watch(loss, y)
        try:
            opt.step()
        except gdstep.BreakpointHit as hit:
            s = hit.session
            where = s.position
            for phase in ("forward", "loss", "backward", "update"):
                s.record(phase)                  # its recomputation steps the optimizer: no end of the hold
            with pytest.raises(GdstepError) as e:
                {"back": lambda: s.back(iterations=2), "step": lambda: s.step(1),
                 "seek": lambda: s.seek(where - 5)}[move]()
            refused.append(str(e.value))
            assert s.position == where
    assert len(refused) == 1 and "\n" not in refused[0]
    assert "on_break=<function>" in refused[0] or "from a BreakpointHit's handler, return" in refused[0]
    assert same(model, bare())
    s = dbg.session
    s.back(iterations=1)                 # after the loop: the session is the debugger's again
    assert s.position == 4 * 5
    dbg.close()


def test_a_watch_mode_function_on_break_may_rewind_and_the_loop_goes_on_as_bare():
    model, opt = make()
    seen = []

    def look(session, message):
        session.back(iterations=2)
        seen.append(session.record("loss").value)

    dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=["step == 4"], on_break=look)
    losses = []
    for x, y in batches():
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        losses.append(loss.item())
        dbg.watch(loss, y)
        opt.step()
    assert seen == [losses[1]]           # iteration 2's loss, recomputed to the bit
    assert same(model, bare())
    dbg.close()


def stepped_to_a_last_break(breakpoint: str):
    """A step-mode loop over the batches whose handler only counts the hits: (model, dbg, hits)."""
    model, opt = make()
    dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=[breakpoint.format(n=len(batches()))],
                        on_break="raise")
    hits = 0
    for x, y in batches():
        try:
            dbg.step(x, y)
        except gdstep.BreakpointHit:
            hits += 1
    return model, dbg, hits


def test_step_mode_close_finishes_the_last_iteration_a_break_left_unfinished():
    model, dbg, hits = stepped_to_a_last_break('step == {n} - 1 and phase == "loss"')
    assert hits == 1 and not same(model, bare())     # the break stands before the last update
    dbg.close()
    assert same(model, bare())


def test_step_mode_the_loops_evaluation_and_checkpoint_after_a_caught_break_see_a_bare_loops_weights():
    """The break stands after the loss; the loop catches it, evaluates (under no_grad, in
    eval mode), saves a state_dict and draws its next batch from torch's generator: each
    sees what a bare loop's would (the iteration gets its update at the loop's first call
    of the model or state_dict, not at the next dbg.step)."""
    def run(attached: bool):
        model, opt = make()
        dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=['step == 2 and phase == "loss"'],
                            on_break="raise") if attached else None
        g = torch.Generator().manual_seed(3)
        evals, saved, draws = [], [], []
        x_eval = torch.randn(16, 4, generator=g)
        for x, y in batches():
            try:
                attached_iteration("bare" if dbg is None else "step", dbg, model, opt, nn.functional.mse_loss, x, y)
            except gdstep.BreakpointHit as hit:
                hit.session.record("forward")
                hit.session.record("update")
                where = hit.session.position
                assert "this iteration's batch" in str(hit.session.gradcheck("0.weight", (0, 0)))
                assert hit.session.position == where          # its model calls are not taken for the loop's
            model.eval()
            with torch.no_grad():
                evals.append(model(x_eval).sum().item())
            model.train()
            saved.append({k: v.clone() for k, v in model.state_dict().items()})
            draws.append(torch.rand(()).item())
        said = []
        if dbg is not None:
            dbg.close()
            said = [e.message for e in dbg.session.events if e.kind == "inexact"]
        return evals, saved, draws, said

    torch.manual_seed(5)
    bare_run = run(False)
    torch.manual_seed(5)
    attached = run(True)
    assert attached[0] == bare_run[0] and attached[2] == bare_run[2]
    assert attached[3] == []              # the records read are gdstep's writes, not the loop's changes
    for a, b in zip(attached[1], bare_run[1]):
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("condition", ["grad_norm > 0", 'phase == "forward"', 'phase == "loss"'])
def test_step_mode_the_loops_random_draws_after_a_caught_break_are_its_own(condition):
    """Dropout, a break every iteration that the loop catches without reading anything,
    then the loop draws from torch's generator (noise for its next batch) before its next
    call: finishing the iteration recomputes it from a checkpoint, whose generator is the
    iteration's, and the loop's draws since must stand (before: the generator went back, and
    the loop drew the same numbers again: every later parameter differed)."""
    def run(attached: bool):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=[condition], on_break="raise") if attached else None
        draws, noise = [], torch.zeros(8, 4)
        for x, y in batches():
            try:
                attached_iteration("bare" if dbg is None else "step", dbg, model, opt, nn.functional.mse_loss,
                                   x + noise, y)
            except gdstep.BreakpointHit:
                pass
            noise = torch.randn(8, 4) * 0.1
            draws.append(noise.sum().item())
        if dbg is not None:
            dbg.close()
        return model, draws

    torch.manual_seed(5)
    bare_model, bare_draws = run(False)
    torch.manual_seed(5)
    model, draws = run(True)
    assert draws == bare_draws
    assert same(model, bare_model)


def test_step_mode_a_checkpoint_right_after_the_handler_holds_the_finished_update():
    model, opt = make()
    dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=['step == 2 and phase == "backward"'], on_break="raise")
    for i, (x, y) in enumerate(batches(3)):
        try:
            dbg.step(x, y)
        except gdstep.BreakpointHit:
            state = {k: v.clone() for k, v in model.state_dict().items()}       # before any other call
    reference, ref_opt = make()
    for x, y in batches(3):
        ref_opt.zero_grad()
        nn.functional.mse_loss(reference(x), y).backward()
        ref_opt.step()
    assert all(torch.equal(state[k], v) for k, v in reference.state_dict().items())
    dbg.close()


def test_step_mode_a_handler_that_moves_the_session_is_refused_in_one_line():
    model, opt = make()
    dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=['step == 3 and phase == "loss"'], on_break="raise")
    said = []
    for x, y in batches():
        try:
            dbg.step(x, y)
        except gdstep.BreakpointHit as hit:
            where = hit.session.position
            with pytest.raises(GdstepError) as e:
                hit.session.back(iterations=2)
            said.append(str(e.value))
            assert hit.session.position == where
    assert len(said) == 1 and "on_break=<function>" in said[0]
    assert same(model, bare())
    dbg.close()


@pytest.mark.parametrize("case", ["scheduler", "inference_mode", "optimizer checkpoint", "clip"])
def test_step_mode_what_the_loop_does_between_its_handler_and_the_next_step(case):
    """The loop steps its scheduler (the finished update keeps the lr it had), evaluates under
    inference_mode (the finishing needs gradients all the same), saves the optimizer's state
    (finished first), or clips its weights before the next dbg.step (a bare loop would
    have updated first: gdstep says so, one line and an inexact event)."""
    def run(attached: bool):
        model, opt = make()
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=['step == 2 and phase == "backward"'],
                            on_break="raise") if attached else None
        seen = []
        for x, y in batches():
            try:
                attached_iteration("bare" if dbg is None else "step", dbg, model, opt, nn.functional.mse_loss, x, y)
            except gdstep.BreakpointHit:
                pass
            if case == "scheduler":
                sched.step()
            elif case == "inference_mode":
                with torch.inference_mode():
                    seen.append(model(x).sum().item())
            elif case == "optimizer checkpoint":
                state = opt.state_dict()["state"]
                seen.append([v["exp_avg"].clone() for v in state.values()])
            else:
                with torch.no_grad():
                    for p in model.parameters():
                        p.clamp_(-0.3, 0.3)
        return model, seen, dbg

    bare_model, bare_seen, _ = run(False)
    model, seen, dbg = run(True)
    if case == "clip":
        said = [e.message for e in dbg.session.events if e.kind == "inexact"]
        assert any("after catching its break and before the iteration's update" in m for m in said), said
    else:
        assert same(model, bare_model)
        assert all(torch.equal(torch.as_tensor(a[0] if isinstance(a, list) else a),
                               torch.as_tensor(b[0] if isinstance(b, list) else b)) for a, b in zip(seen, bare_seen))
        assert dbg.session.replay_inexact is None
    dbg.close()



@pytest.mark.parametrize("phase", ["loss", "backward", "update"])
def test_step_mode_a_handler_that_changes_a_weight_has_its_change_kept(phase):
    """The handler of a caught break halves a weight before the loop's next dbg.step. At a
    break before the update, the iteration's update then runs on the halved weight with the
    gradients of the weights its forward used (a bare loop that halves between backward()
    and step()), and
    gdstep says so; after the update, the change is the loop's edit, kept as one. Either way
    the loop ends with that bare loop's weights, and a rewind to the start and back again
    gives them too, with nothing called inexact about the replay."""
    def halve(model):
        with torch.no_grad():
            model[0].weight.mul_(0.5)

    model, opt = make()
    dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=[f'step == 2 and phase == "{phase}"'], on_break="raise")
    hits = 0
    for x, y in batches():
        try:
            dbg.step(x, y)
        except gdstep.BreakpointHit:
            hits += 1
            dbg.session.record("loss")          # a handler that reads first (recomputed from a checkpoint)
            halve(model)
    bare_model, bare_opt = make()
    for i, (x, y) in enumerate(batches()):
        bare_opt.zero_grad()
        nn.functional.mse_loss(bare_model(x), y).backward()
        if i == 2 and phase != "update":
            halve(bare_model)
        bare_opt.step()
        if i == 1 and phase == "update":
            halve(bare_model)
    dbg.close()
    s = dbg.session
    assert hits == 1 and same(model, bare_model)
    said = [e.message for e in s.events if "0.weight" in e.message]
    if phase != "update":
        assert len(said) == 1 and "ran on the loop's values with the gradients of the weights its forward used" in said[0]
    else:
        assert len(said) == 1 and "in place after the update" in said[0]
    at = s.position
    s.seek(0)
    s.seek(at)
    assert same(model, bare_model) and s.replay_inexact is None

def test_after_the_loop_ends_on_a_caught_break_set_trace_may_move():
    model, dbg, hits = stepped_to_a_last_break('step == {n} and phase == "update"')
    assert hits == 1
    seen = []
    dbg.on_break = lambda session, message: seen.append(session.back(iterations=2))
    dbg.open()
    assert len(seen) == 1 and same(model, bare())
    dbg.close()


@pytest.mark.parametrize("mode", ["step", "watch"])
def test_a_break_every_iteration_with_a_budget_under_two_checkpoints_reads_and_goes_on(mode):
    """A history budget smaller than two checkpoints (a ResNet-18's is ~88 MB against the
    default 64 MiB) keeps none before the latest iteration: its records are recomputed from
    the checkpoint at its start. Before, the seventeenth break's records (and in step mode
    dbg.step itself, going back on a non-finite value) failed with "cannot recompute
    iteration 1 … keep=N keeps more"."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    dbg = gdstep.attach(model, opt, nn.CrossEntropyLoss(), breakpoints=["loss > 0"], on_break="raise",
                        history_budget=int(1.5 * size))
    g = torch.Generator().manual_seed(1)
    hits = read = 0
    for i in range(40):
        x, y = torch.randn(8, 64, generator=g), torch.randint(0, 4, (8,), generator=g)
        if i == 30:
            with torch.no_grad():
                model[0].weight[0, 0] = float("inf")       # from here on every iteration is non-finite
        try:
            attached_iteration(mode, dbg, model, opt, nn.functional.cross_entropy, x, y)
        except gdstep.BreakpointHit as hit:
            hits += 1
            rec = hit.session.record("forward")              # no error: recomputed where it can be
            read += 1
            if i < 30:                                       # the loss's break: this iteration's forward
                assert rec.step == hit.session.step_count and torch.equal(rec.inputs, x)
            if mode == "watch" and hit.session.phase_due == "update":
                opt.step()
    assert hits == 40 and read == 40
    dbg.close()


@pytest.mark.parametrize("mode", ["step", "watch"])
def test_an_on_break_function_that_raises_leaves_the_iteration_whole_for_a_loop_that_catches_it(mode):
    """A handler with a bug (it raises on its second call); the loop catches the exception
    and goes on: every iteration, that one too, is a bare loop's (before, in step mode, that
    iteration's update was lost: one Adam step short)."""
    calls = []

    def handler(session, message):
        calls.append(message)
        if len(calls) == 2:
            raise ValueError("a bug in the loop's handler")

    model, opt = make()
    dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=["step >= 1"], on_break=handler)
    caught = 0
    for x, y in batches():
        if mode == "step":
            try:
                dbg.step(x, y)
            except ValueError:
                caught += 1
            continue
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        for call in (lambda: dbg.watch(loss, y), opt.step):     # raised out of either, after its bookkeeping
            try:
                call()
            except ValueError:
                caught += 1
    dbg.close()
    assert caught == 1 and len(calls) >= 2
    assert same(model, bare())
    assert all(st["step"] == len(batches()) for st in opt.state.values())


@pytest.mark.parametrize("handler", ["read", "back 1 iteration", "back 2 phases"])
def test_the_loops_random_draws_after_set_trace_and_a_rewind_are_its_own(handler):
    """The loop draws noise after each dbg.step and calls set_trace with a handler that
    rewinds (as a user does in the app); gdstep brings the loop back where it was, its
    generator too (before: the return recomputed from a checkpoint and set it back, so the
    loop drew the same numbers again)."""
    handlers = {"read": lambda s, m: s.record("update"), "back 1 iteration": lambda s, m: s.back(iterations=1),
                "back 2 phases": lambda s, m: s.back(phases=2)}

    def run(tracing: bool):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.3), nn.Tanh(), nn.Linear(8, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        dbg = gdstep.attach(model, opt, nn.MSELoss())
        torch.manual_seed(5)
        draws = []
        for i, (x, y) in enumerate(batches(5)):
            dbg.step(x, y)
            draws.append(torch.randn(2).sum().item())
            if i == 2 and tracing:
                gdstep.set_trace(on_break=handlers[handler])
            draws.append(torch.randn(2).sum().item())
        dbg.close()
        return model, draws

    model, draws = run(True)
    plain, plain_draws = run(False)
    assert draws == plain_draws and same(model, plain)


def test_a_non_finite_forward_caught_in_step_mode_leaves_the_loop_its_generator():
    """The default "nan" break, on_break="raise", dropout: the pause steps the session back
    to before the forward, which set torch's generator to the checkpoint's; the loop's draws
    in its handler and after are its own, and the iteration finishes as a bare loop's."""
    def run(attached: bool):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.ReLU(), nn.Linear(16, 1))
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        dbg = gdstep.attach(model, opt, nn.MSELoss(), on_break="raise") if attached else None
        torch.manual_seed(7)
        draws = []
        for i, (x, y) in enumerate(batches(6)):
            if i == 3:
                x = x.clone()
                x[0, 0] = float("nan")
            try:
                attached_iteration("bare" if dbg is None else "step", dbg, model, opt, nn.functional.mse_loss, x, y)
                if dbg is None and i == 3:
                    draws.append(torch.rand(()).item())        # where the attached loop's handler draws
            except gdstep.BreakpointHit:
                draws.append(torch.rand(()).item())            # the handler draws
                dbg.dismiss("nan")                             # (the update spreads nan: no more breaks)
            draws.append(torch.rand(()).item())
        if dbg is not None:
            dbg.close()
        return [p.detach().nan_to_num(nan=7.0) for p in model.parameters()], draws

    params, draws = run(True)
    bare_params, bare_draws = run(False)
    assert draws == bare_draws and len(draws) == 7
    assert all(torch.equal(a, b) for a, b in zip(params, bare_params))


@pytest.mark.parametrize("error", [KeyboardInterrupt, ValueError])
def test_a_watch_mode_handler_that_rewinds_then_raises_leaves_the_loop_its_own_state(error):
    """The handler moves the session back, then raises (Ctrl-C in a handler, a bug): the
    loop catches it with its own parameters, gradients and optimizer state, and goes on as a
    bare loop (before: a KeyboardInterrupt skipped putting them back)."""
    def handler(session, message):
        session.back(iterations=2)
        raise error("out of the handler")

    model, opt = make()
    dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=['step == 3 and phase == "backward"'], on_break=handler)
    caught = 0
    for x, y in batches():
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        try:
            dbg.watch(loss, y)
        except error:
            caught += 1
        opt.step()
    dbg.close()
    assert caught == 1 and same(model, bare())


@pytest.mark.parametrize("mode", ["step", "watch"])
def test_set_trace_with_a_handler_that_rewinds_leaves_the_loop_where_it_stands(mode):
    """gdstep.set_trace() mid-run with a function that rewinds two iterations (as a user
    does in the app): the loop goes on from its own state in both modes (before, in watch
    mode, its parameters and Adam state were left two iterations back, unsaid)."""
    model, opt = make()
    dbg = gdstep.attach(model, opt, nn.MSELoss())
    for i, (x, y) in enumerate(batches()):
        attached_iteration(mode, dbg, model, opt, nn.functional.mse_loss, x, y)
        if i == 3:
            gdstep.set_trace(on_break=lambda session, message: session.back(iterations=2))
    dbg.close()
    assert same(model, bare())
    assert all(st["step"] == len(batches()) for st in opt.state.values())


@pytest.mark.parametrize("mode", ["raise", "function"])
def test_a_non_finite_break_in_watch_mode_offers_a_rewind_only_where_the_handler_may_rewind(mode):
    """The culprit is named either way; "rewind with back" is said to a function on_break
    (which may rewind), not in the BreakpointHit a loop catches (whose handler may not)."""
    model, opt = make()
    said = []
    dbg = gdstep.attach(model, opt, nn.MSELoss(), on_break="raise" if mode == "raise" else lambda s, m: said.append(m))
    for i, (x, y) in enumerate(batches(4)):
        if i == 2:
            x = x.clone()
            x[1, 2] = float("nan")
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        try:
            dbg.watch(loss, y)
        except gdstep.BreakpointHit as hit:
            said.append(str(hit))
            with pytest.raises(GdstepError):
                hit.session.back()
        opt.step()
    # (the step after it spreads the nan to every weight: the iteration after breaks too)
    assert said[0].startswith("non-finite value nan in layer 0 linear output[1,0] during forward")
    assert all(("rewind with back" in m) is (mode == "function") for m in said)
    dbg.close()


class Failing(nn.Module):
    """The loop's model, whose forward raises while `fail` is set (a recomputation that fails
    where the loop's own forward ran)."""

    def __init__(self, model):
        super().__init__()
        self.net, self.fail = model, False

    def forward(self, x):
        if self.fail:
            raise RuntimeError("this forward fails now")
        return self.net(x)


@pytest.mark.parametrize("phase", ["forward", "loss", "backward", "update"])
def test_a_way_back_to_the_loop_that_fails_leaves_the_loop_its_own_training_and_gdstep_starts_afresh(capsys, phase):
    """A handler's rewind whose recomputation raises (caught by the handler), then the way
    back to the loop raising the same: before, the session stood at an old checkpoint and
    each later watch() restored it into the loop's model and raised. Now the loop's tensors
    are put back, it trains as a bare loop does, and gdstep attaches afresh, saying so."""
    inner, opt = make()
    model = Failing(inner)
    caught = []

    def handler(s, message):
        model.fail = True
        try:
            s.back(iterations=1)
        except RuntimeError as e:
            caught.append(str(e))

    when = f"step == {3 if phase == 'update' else 2} and phase == '{phase}'"     # the third iteration's
    dbg = gdstep.attach(model, opt, nn.MSELoss(), breakpoints=[when], on_break=handler)
    returned = []
    for x, y in batches():
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        returned.append(dbg.watch(loss, y) == loss.item())
        opt.step()
        model.fail = False
    assert caught == ["this forward fails now"] and all(returned)
    assert same(inner, bare())
    err = capsys.readouterr().err
    assert "gdstep: iteration 3: the debugger could not come back to where your loop stands " \
           "(recomputing raised RuntimeError: this forward fails now); your loop's own tensors are put back" in err
    assert "iteration 4: the debugger could not come back" in err and \
           "so gdstep attached afresh from the next iteration on" in err
    s = dbg.session              # the new session: iterations 5 and 6 (the 4th attached it afresh)
    assert s.step_count == 2 and s.record("loss").value == pytest.approx(loss.item())
    dbg.close()

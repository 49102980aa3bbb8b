"""Launching small DDP jobs for the DDP tests: one process per rank over gloo on localhost,
each running `worker` below, with a time limit so a hang fails instead of blocking CI.

Run as a script, this file is one rank: `python test_ddp_support.py CASES RANK WORLD PORT OUT`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(cases: str, world: int, out: Path, timeout: float = 60.0, extra: dict | None = None) -> dict:
    """Start `cases` on `world` ranks, one process each; `finish` waits for them."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", CI="1",
               GDSTEP_CASE_ARGS=json.dumps(extra or {}), GDSTEP_HANG_AFTER=str(max(5.0, timeout - 8)))
    procs = [subprocess.Popen([sys.executable, str(Path(__file__)), cases, str(r), str(world), str(port), str(out)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(world)]
    return {"procs": procs, "start": time.monotonic(), "timeout": timeout, "name": f"{world}-rank job {cases!r}"}


def finish(job: dict):
    """[(returncode, stderr)] per rank, and the seconds taken; a job past its time is killed
    and fails the test with what each rank had written."""
    procs, results = job["procs"], []
    try:
        for p in procs:
            left = max(1.0, job["timeout"] - (time.monotonic() - job["start"]))
            _, err = p.communicate(timeout=left)
            results.append((p.returncode, err))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        errs = [p.communicate()[1][-1500:] for p in procs]
        raise AssertionError(f"the {job['name']} hung for {job['timeout']:g} s:\n" + "\n".join(errs))
    return results, time.monotonic() - job["start"]


def launch(cases: str, world: int, out: Path, timeout: float = 60.0, extra: dict | None = None):
    return finish(start(cases, world, out, timeout, extra))


# -- one rank ------------------------------------------------------------------------------------

def _setup(rank: int, world: int, port: int):
    import torch
    import torch.distributed as dist
    from datetime import timedelta

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    return torch, dist


def _net(torch, seed: int = 0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))


def _batches(torch, rank: int, steps: int, n: int = 6):
    g = torch.Generator().manual_seed(100 + rank)
    return [(torch.randn(n, 3, generator=g), torch.randn(n, 2, generator=g)) for _ in range(steps)]


def _ddp(torch, opt_kind: str, lr: float):
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = DDP(_net(torch))
    if opt_kind == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return model, opt


def _bare(torch, batches, opt_kind: str, lr_at) -> dict:
    """A bare DDP loop: the reference (lr_at(i) is the lr of iteration i)."""
    model, opt = _ddp(torch, opt_kind, lr_at(0))
    loss_fn = torch.nn.MSELoss()
    for i, (x, y) in enumerate(batches):
        for g in opt.param_groups:
            g["lr"] = lr_at(i)
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_everywhere(torch, dist, params: dict) -> bool:
    flat = torch.cat([v.reshape(-1) for v in params.values()]).view(torch.int32)     # bits: NaN equals NaN
    everyone = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, flat)
    return all(torch.equal(everyone[0], f) for f in everyone)


def worker(cases: str, rank: int, world: int, port: int, out: Path) -> None:
    """Run the cases ("a+b+c") one after another in one process group; one report each."""
    import faulthandler

    faulthandler.dump_traceback_later(float(os.environ.get("GDSTEP_HANG_AFTER", "50")), exit=True)
    torch, dist = _setup(rank, world, port)
    every = json.loads(os.environ.get("GDSTEP_CASE_ARGS", "{}"))
    for case in cases.split("+"):
        folder = out / case
        folder.mkdir(exist_ok=True)
        report = run_case(torch, dist, case.split(":")[0], rank, folder, every.get(case, {}))
        (folder / f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()
    # torch 2.13's gloo aborts about one exit in ten while the interpreter shuts down
    # ("terminate called without an active exception", no Python frame left), in a bare DDP
    # loop that never imported gdstep too; every report is written by now, so this rank
    # leaves without the interpreter's shutdown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_case(torch, dist, case: str, rank: int, out: Path, args: dict) -> dict:
    import gdstep

    steps = args.get("steps", 4)
    batches = _batches(torch, rank, steps)
    report: dict = {"rank": rank, "pauses": []}
    loss_fn = torch.nn.MSELoss()

    def on_break(session, message):
        report["pauses"].append({"step": session.step_count, "position": session.position, "message": message})
        if case == "retry":      # as the app's prompt does: the script language
            from gdstep.script import Runner

            runner = Runner(session)
            report["outcomes"] = [runner.execute_line(line).ok for line in ("back 1 iterations", "set lr 0.01", "step 1")]
        if case == "die":
            os._exit(3)
        if case == "followerdies":       # the other rank is gone by now: the next command says so
            import time as clock

            from gdstep.script import Runner

            clock.sleep(args["rank_timeout"] + 1.5)
            Runner(session).execute_line("step 1")

    if case == "identical":
        opt_kind = args.get("optimizer", "adam")
        expected = _bare(torch, batches, opt_kind, lambda i: 0.05)
        model, opt = _ddp(torch, opt_kind, 0.05)
        dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["loss > 1e9"])
        for x, y in batches:
            dbg.step(x, y)
        dbg.close()
        got = {k: v.detach() for k, v in model.state_dict().items()}
        report["equal_bare"] = all(torch.equal(got[k], expected[k]) for k in expected)
        report["same_everywhere"] = _same_everywhere(torch, dist, got)
        return report
    bad = args.get("bad_rank", -1)
    if case in ("nan", "nandump") and rank == bad:
        x, y = batches[2]
        x = x.clone()
        x[1, 0] = float("nan")
        batches[2] = (x, y)
    if case == "watchnan" and rank == bad:
        x, y = batches[2]
        x = x.clone()
        x[0, 1] = float("nan")
        batches[2] = (x, y)
    followers = [r for r in range(dist.get_world_size()) if r != args.get("dbg_rank", 0)]
    if case == "followerdies" and rank in args.get("dies", followers):
        import gdstep.distributed.ranks as ranks_module

        ranks_module.follow = lambda *a: os._exit(4)      # this rank dies as it starts to wait
    if case == "sigterm" and rank == 0:      # the app, as in a terminal; torchrun's SIGTERM once it is up
        import signal

        import gdstep.debugger
        from gdstep.tui.app import GdstepApp

        gdstep.debugger.interactive = lambda: True
        run = GdstepApp.run

        def headless(app, *a, **kw):
            app.call_later(app.set_timer, 0.5, lambda: os.kill(os.getpid(), signal.SIGTERM))
            return run(app, headless=True)
        GdstepApp.run = headless
    if case == "unused":       # find_unused_parameters, each rank through a branch of its own (mixture of experts)
        from torch.nn.parallel import DistributedDataParallel as DDP

        class Branches(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.a = torch.nn.Linear(3, 2)
                self.b = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))

            def forward(self, x):
                return self.b(x) if rank == 1 else self.a(x)

        torch.manual_seed(0)
        model = DDP(Branches(), find_unused_parameters=True)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        dbg = gdstep.attach(model, opt, loss_fn, breakpoints=["step == 2"], on_break=lambda s, m: None)
        for x, y in batches:
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            dbg.watch(loss, y)
            opt.step()
        view = dbg.ranks.view
        report.update(paused=dbg.ranks.pauses, averaged={k: v.tolist() for k, v in view.averaged.items()},
                      local={str(r.rank): {k: v.tolist() for k, v in r.local_grads.items()} for r in view.ranks})
        dbg.close()
        return report
    if case in ("raisestep", "raisewatch"):     # on_break="raise", the loop catching every break (one a step)
        expected = _bare(torch, batches, "adam", lambda i: 0.05)
        model, opt = _ddp(torch, "adam", 0.05)
        dbg = gdstep.attach(model, opt, loss_fn, breakpoints=['step >= 1 and phase == "loss"'], on_break="raise")
        caught = 0
        for x, y in batches:
            try:
                if case == "raisestep":
                    dbg.step(x, y)
                else:
                    opt.zero_grad()
                    loss = loss_fn(model(x), y)
                    loss.backward()
                    dbg.watch(loss, y)
            except gdstep.BreakpointHit:
                caught += 1
            if case == "raisewatch":
                opt.step()
        logged = sum(e.kind == "breakpoint" for e in dbg.session.events)
        dbg.close()
        got = {k: v.detach() for k, v in model.state_dict().items()}
        report.update(caught=caught, logged=logged, equal_bare=all(torch.equal(got[k], expected[k]) for k in expected),
                      same_everywhere=_same_everywhere(torch, dist, got))
        return report
    model, opt = _ddp(torch, "sgd", 0.1)
    handler = None if case in ("dump", "sigterm", "nandump") else on_break
    dbg = gdstep.attach(model, opt, loss_fn, breakpoints=args.get("breakpoints", ["nan"]), on_break=handler,
                        dump_dir=str(out), dbg_rank=args.get("dbg_rank", 0), rank_timeout=args.get("rank_timeout", 60.0))
    report["held"] = []
    for i, (x, y) in enumerate(batches):
        before = dbg.ranks.pauses
        if case in ("watchnan", "clipwatch"):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            dbg.watch(loss, y)
            if case == "clipwatch":         # the loop clips after watch(): the ranks pause after its step
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)
            opt.step()
        else:
            dbg.step(x, y)
        for verdict in dbg.ranks.verdicts[before:]:     # every rank: where it was held, and why
            report["held"].append({"iteration": i, "message": verdict.message(), "ranks": list(verdict.ranks)})
            if "view" not in report:
                view = dbg.ranks.view
                report["view"] = {"losses": view.losses, "outliers": list(view.outliers()), "text": view.text(),
                                  "local": {str(r.rank): {k: v.tolist() for k, v in r.local_grads.items()}
                                            for r in view.ranks},
                                  "averaged": {k: v.tolist() for k, v in view.averaged.items()}}
    if case == "retry":          # gdstep.set_trace() on every rank: rewind an iteration and redo it
        def trace(session, message):
            from gdstep.script import Runner

            runner = Runner(session)
            report["traced"] = [message] + [runner.execute_line(line).ok for line in ("back 1 iterations", "step 1")]
        gdstep.set_trace(on_break=trace)
    dbg.close()
    got = {k: v.detach() for k, v in model.state_dict().items()}
    report["same_everywhere"] = _same_everywhere(torch, dist, got)
    report["lr"] = opt.param_groups[0]["lr"]
    report["dumps"] = [str(p) for p in dbg.dumps]
    if case == "retry":
        expected = _bare(torch, batches, "sgd", lambda i: 0.1 if i < 1 else 0.01)
        report["equal_bare"] = all(torch.equal(got[k], expected[k]) for k in expected)
    return report


if __name__ == "__main__":
    worker(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]))

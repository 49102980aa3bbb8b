"""The app on a DDP pause, in this process: a one-rank gloo group (the debugging rank with
no one to follow it) is enough to drive every key through the mirrored session — each
call must travel as a message (pickled) and run through the lockstep run loop."""

from __future__ import annotations

import pickle

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

from conftest import settle  # noqa: E402
from test_ddp_support import free_port  # noqa: E402

import gdstep  # noqa: E402


@pytest.fixture
def one_rank():
    from datetime import timedelta

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1,
                            timeout=timedelta(seconds=30))
    yield
    dist.destroy_process_group()


async def test_the_apps_keys_and_prompt_run_through_the_mirrored_session(one_rank):
    from torch.nn.parallel import DistributedDataParallel as DDP

    from gdstep.distributed.channel import Channel
    from gdstep.distributed.mirror import Mirrored
    from gdstep.distributed.verdict import Verdict
    from gdstep.tui.ranks_view import RanksScreen, make_ranks_app

    torch.manual_seed(0)
    model = DDP(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dbg = gdstep.attach(model, opt, torch.nn.MSELoss(), on_break="raise")
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        dbg.step(torch.randn(8, 3, generator=g), torch.randn(8, 1, generator=g))
    ranks, s = dbg.ranks, dbg.session
    ranks.view = ranks.gather_view(dbg, Verdict((0,), (None,)))
    channel = Channel(ranks.store, 0, 1, 0, f"{ranks.prefix}/app", 30.0)
    channel.start()
    sent = []
    post = channel.post
    channel.post = lambda message: (sent.append(pickle.loads(pickle.dumps(message))), post(message))
    try:
        app = make_ranks_app(Mirrored(s, ranks, channel), ranks.view)
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.press("R")
            await pilot.pause()
            assert isinstance(app.screen, RanksScreen)
            await pilot.press("escape", "left", "left", "left", "left")      # back one iteration
            await settle(pilot)
            assert s.position == 8
            await pilot.press("colon", *"set lr 0.05", "enter")
            await settle(pilot)
            await pilot.press("s")                                        # the iteration again, lr 0.05
            await settle(pilot)
            assert s.position == 12 and s.lr == 0.05
    finally:
        channel.stop()
        dbg.close()
    calls = [m[1] for m in sent if m[0] == "call"]
    assert calls.count("back") == 4 and "set" in calls and "step" in calls
    assert opt.param_groups[0]["lr"] == 0.05


def test_with_stderr_redirected_the_debugger_writes_break_files_instead_of_an_unseen_app(monkeypatch):
    """Textual draws on the process's stderr: `torchrun ... 2> err.log`, stdin and stdout on
    a terminal, drew the app into the file and left the job paused with nothing on screen."""
    import io
    import sys

    from gdstep.debugger import interactive

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.delenv("CI", raising=False)
    for name in ("stdin", "stdout", "__stderr__"):
        monkeypatch.setattr(sys, name, Terminal())
    assert interactive()
    monkeypatch.setattr(sys, "__stderr__", io.StringIO())
    assert not interactive()

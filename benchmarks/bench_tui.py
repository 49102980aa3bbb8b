"""The TUI in a continuous run on xor against Session.run headless, and how fast a key
acts while the run goes.

    python benchmarks/bench_tui.py [--scenario xor] [--seconds 3] [--rounds 3]

The app runs headless (App.run_test, 120×36), so it renders every frame as it would in a
terminal. Each round: `Session.run` alone for `--seconds`, then the app's `r` run for as
long, on fresh sessions of the same scenario (stop_when and the epoch limit lifted so both
keep going). Reported: iterations/s of each and their ratio (goal ≥ 0.5), and, while the
app runs, the delay from a key to its effect: `shift+down` (the selected element moves: a
new frame arrives) and `r` (the run has paused and the app is idle again), goal < 100 ms.
The median over rounds is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gdstep  # noqa: E402
from gdstep.tui.app import make_app  # noqa: E402
from gdstep.tui.tensor_view import TensorView  # noqa: E402


def open_endless(scenario: str):
    session = gdstep.open(scenario)
    session.epochs = 10**9
    session.stop_when = None
    for bp in list(session.breakpoints):
        session.remove_breakpoint(bp.id)
    return session


def headless(scenario: str, seconds: float) -> float:
    """Iterations/s of Session.run, paused from its own on_phase after `seconds`."""
    session = open_endless(scenario)
    end = time.perf_counter() + seconds
    start = time.perf_counter()
    session.run(on_phase=lambda: time.perf_counter() > end)
    return session.step_count / (time.perf_counter() - start)


async def wait_for(condition, timeout: float = 10.0) -> float:
    """Seconds until condition() holds, checked every millisecond."""
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout:
            raise TimeoutError("the app did not respond")
        await asyncio.sleep(0.001)
    return time.perf_counter() - start


async def in_app(scenario: str, seconds: float) -> tuple[float, float, float]:
    session = open_endless(scenario)
    app = make_app(session, timestamps=False)
    async with app.run_test(size=(120, 36)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        tensor = app.query_one(TensorView)
        start_steps, start = session.step_count, time.perf_counter()
        app.simulate_key("r")
        await wait_for(lambda: app.running)
        await asyncio.sleep(seconds / 2)
        row = tensor.panel.index[0]
        app.simulate_key("shift+down")
        select_delay = await wait_for(lambda: tensor.panel is not None and tensor.panel.index[0] == row + 1)
        await asyncio.sleep(seconds / 2)
        app.simulate_key("r")
        steps, elapsed = session.step_count - start_steps, time.perf_counter() - start
        pause_delay = await wait_for(lambda: not app.running)
        await app.workers.wait_for_complete()
    return steps / elapsed, select_delay, pause_delay


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="xor")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for k in range(args.rounds):
        base = headless(args.scenario, args.seconds)
        tui, select_delay, pause_delay = asyncio.run(in_app(args.scenario, args.seconds))
        rows.append((base, tui, tui / base, select_delay, pause_delay))
        print(f"round {k + 1}: Session.run {base:9.0f} it/s   TUI run {tui:9.0f} it/s   ratio {tui / base:.2f}   "
              f"shift+down {select_delay * 1000:5.1f} ms   r (pause) {pause_delay * 1000:5.1f} ms")
    med = [statistics.median(col) for col in zip(*rows)]
    print(f"median ({args.scenario}): Session.run {med[0]:.0f} it/s, TUI {med[1]:.0f} it/s, ratio {med[2]:.2f} "
          f"(goal ≥ 0.5); key → effect while running: select {med[3] * 1000:.1f} ms, pause {med[4] * 1000:.1f} ms "
          f"(goal < 100 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

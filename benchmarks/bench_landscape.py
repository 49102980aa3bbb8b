"""Landscapes and lanes on the benchmark MLP 64-128-128-10 (1,792 samples).

    python benchmarks/bench_landscape.py [--rounds 5] [--steps 100]

- a 40×40 landscape (random directions, full data) after 40 steps: seconds (goal < 1 s),
  beside one backend `loss_at` a point (the way it was computed before), timed on 8 of the
  40 rows and scaled to 40; the CPU seconds of each (all threads), which a busy machine
  inflates less than wall time; and this machine's speed in each round, one core's GFLOPS
  on the grid's own products (it drifts by a third from minute to minute here), with the
  time the grid's products alone take at that speed;
- four lanes (SGD, momentum, RMSprop, Adam) run in lockstep for `steps` iterations against
  four separate sessions run one after the other, side by side in each round: the ratio of
  their speeds (goal ≥ 0.8), the median of per-round ratios;
- the app (headless, 120×36) on the same model while it computes its landscape (16×16,
  then 40×40, on the worker): the delay from `shift+down` to the selected element's move,
  pressed 20 times, each 20–60 ms into a landscape's computation (goal < 100 ms), the
  median and the slowest of all presses.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import gdstep  # noqa: E402
from gdstep.landscape_grid import _pointwise  # noqa: E402

from common import scenario  # noqa: E402

LANES = ["sgd lr=0.05", "sgd lr=0.05 momentum=0.9", "rmsprop lr=0.001", "adam lr=0.001"]
SEPARATE = [dict(optimizer="sgd", lr=0.05), dict(optimizer="sgd", lr=0.05, momentum=0.9),
            dict(optimizer="rmsprop", lr=0.001), dict(optimizer="adam", lr=0.001)]


async def keys_while_computing(sc, presses: int = 20) -> list[float]:
    """Delays (s) of shift+down in the app, each pressed while its landscape computes."""
    from gdstep.tui.app import make_app
    from gdstep.tui.tensor_view import TensorView

    s = gdstep.open(sc)
    s.step(40)
    app = make_app(s, timestamps=False)
    delays = []
    async with app.run_test(size=(120, 36)) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        tensor = app.query_one(TensorView)
        while app.query_one("#plot-switcher").current != "landscape-plot":
            await pilot.press("v")
        computing = lambda: app.driver.current is not None and app.driver.current.kind == "picture"  # noqa: E731
        app.simulate_key("d")                                     # new directions: a landscape computes again
        for k in range(presses):
            start = time.perf_counter()
            while not computing():
                if time.perf_counter() - start > 10:
                    return delays
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.02 + 0.01 * (k % 5))            # into the computation
            if not computing():
                continue
            row = tensor.panel.index[0]
            step = 1 if row == 0 else -1
            pressed = time.perf_counter()
            app.simulate_key("shift+down" if step == 1 else "shift+up")
            while tensor.panel.index[0] != row + step:
                if time.perf_counter() - pressed > 10:
                    raise TimeoutError("the app did not answer shift+down in 10 s")
                await asyncio.sleep(0.001)
            delays.append(time.perf_counter() - pressed)
            if k % 5 == 4:                                         # now and then a new landscape from the start
                app.simulate_key("d")
    return delays


def product_speed(seconds: float = 0.2) -> float:
    """GFLOPS of one core on the grid's own products (float32, 128×129 by 129×224), now:
    how fast this machine is in this round (its speed drifts by a third here)."""
    import numpy as np

    from gdstep.landscape_grid import _one_blas_thread
    a, b = np.ones((128, 129), np.float32), np.ones((129, 224), np.float32)
    out = np.empty((128, 224), np.float32)
    count, start = 0, time.perf_counter()
    with _one_blas_thread():
        while time.perf_counter() - start < seconds:
            for _ in range(50):
                np.matmul(a, b, out=out)
            count += 50
    return count * 2 * 128 * 129 * 224 / (time.perf_counter() - start) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=100)
    args = ap.parse_args()
    sc = scenario("float32")
    land_times, point_times, land_cpu, point_cpu, ratios, speeds = [], [], [], [], [], []
    for _ in range(args.rounds):
        s = gdstep.open(sc)
        s.step(40)
        speeds.append(product_speed())
        start, cpu = time.perf_counter(), time.process_time()
        land = s.landscape("random", resolution=(40, 40))
        land_times.append(time.perf_counter() - start)
        land_cpu.append(time.process_time() - cpu)
        start, cpu = time.perf_counter(), time.process_time()
        _pointwise(s.backend, s.backend.x, s.backend.y, land.origin, land.d1, land.d2, land.alphas, land.betas[:8])
        point_times.append((time.perf_counter() - start) * 5)
        point_cpu.append((time.process_time() - cpu) * 5)

        lanes = s.lanes(LANES)
        start = time.perf_counter()
        lanes.run(args.steps)
        together = time.perf_counter() - start
        start = time.perf_counter()
        for settings in SEPARATE:
            one = s.fork()
            one.set(**settings)
            one.step(args.steps)
        apart = time.perf_counter() - start
        ratios.append(apart / together)
    print(f"MLP 64-128-128-10, float32, 1792 samples; median of {args.rounds} rounds")
    print(f"40×40 landscape, random directions, full data: {statistics.median(land_times):.2f} s "
          f"(range {min(land_times):.2f}–{max(land_times):.2f}; goal < 1 s); a loss_at a point: "
          f"{statistics.median(point_times):.2f} s (range {min(point_times):.2f}–{max(point_times):.2f})")
    print(f"  CPU time (all threads; on a busy machine closer to the work than wall time): "
          f"{statistics.median(land_cpu):.2f} s vs {statistics.median(point_cpu):.2f} s a loss_at a point")
    flops = 40 * 40 * len(s.backend.x) * 2 * (128 * 129 + 10 * 129)      # the layers after the first, biases carried
    speed = statistics.median(speeds)
    print(f"  this machine's one-core products in these rounds: {speed:.0f} GFLOPS (range {min(speeds):.0f}–"
          f"{max(speeds):.0f}); the grid's {flops / 1e9:.0f} GFLOP of them alone take {flops / 1e9 / speed:.2f} s "
          f"on one core at that speed, {flops / 2e9 / speed:.2f} s on two")
    delays = sorted(asyncio.run(keys_while_computing(sc)))
    if delays:
        print(f"app, keys while its landscape computes: shift+down answered in {statistics.median(delays) * 1000:.0f} ms "
              f"(median of {len(delays)} presses), the slowest {delays[-1] * 1000:.0f} ms (goal < 100 ms)")
    print(f"4 lanes × {args.steps} iterations vs 4 sessions one after another: {statistics.median(ratios):.2f} "
          f"(range {min(ratios):.2f}–{max(ratios):.2f}; goal ≥ 0.8)")


if __name__ == "__main__":
    main()

"""Rewind memory stays bounded: 10,000 iterations of a ~100k-parameter model with SGD and
momentum (so every snapshot holds parameters and a state buffer) keep what the history holds
under 200 MB, and the rewind still lands bit-exactly at the end.

It runs in a child process with one BLAS thread: tracemalloc then sees only this run, and
the timing does not depend on how busy the machine's other cores are."""

from __future__ import annotations

import json
import os
import subprocess
import sys

LIMIT = 200 * 2**20

SCRIPT = r'''
import gc, json, sys, time, tracemalloc, types
import numpy as np
import gdstep
from gdstep.scenario import parse_scenario

TEXT = """
seed = 2
[data]
kind = "blobs"
n = 256
classes = 3
features = 100
[model]
layers = [ { linear = 512 }, "relu", { linear = 100 }, "relu", { linear = 3 } ]
[loss]
kind = "cross_entropy"
[optimizer]
kind = "sgd"
lr = 0.01
momentum = 0.9
[training]
batch_size = 4
epochs = 1000000
"""
ITERATIONS, MIDDLE, EARLY = 10_000, 4_321, 10

def open_session():
    return gdstep.open(parse_scenario(TEXT))

def reachable_array_bytes(root):
    """The bytes of every distinct numpy buffer reachable from `root` (not through code,
    classes or modules): an account of what the session holds, independent of its own."""
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.CodeType)
    seen, buffers, stack = set(), {}, [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            buffers[id(base)] = base.nbytes
            continue
        stack.extend(gc.get_referents(obj))
    return sum(buffers.values())

s = open_session()
n_params = sum(p.size for p in s.params.values())
before_held = reachable_array_bytes(s)
gc.collect()
tracemalloc.start()
t0 = time.perf_counter()
s.run(max_steps=MIDDLE)
middle = {k: v.copy() for k, v in s.params.items()}
middle_state = {k: v["momentum_buffer"].copy() for k, v in s.optimizer_state.items()}
s.run(max_steps=ITERATIONS - MIDDLE)
seconds = time.perf_counter() - t0
gc.collect()
current, peak = tracemalloc.get_traced_memory()
tracemalloc.stop()
held = reachable_array_bytes(s)

t1 = time.perf_counter()
s.back(iterations=ITERATIONS - MIDDLE)
middle_ok = s.step_count == MIDDLE and all(np.array_equal(s.params[k], middle[k]) for k in middle) and all(
    np.array_equal(s.optimizer_state[k]["momentum_buffer"], middle_state[k]) for k in middle_state)
s.back(iterations=MIDDLE - EARLY)
rewind_seconds = time.perf_counter() - t1
fresh = open_session()
fresh.run(max_steps=EARLY)
early_ok = s.step_count == EARLY and s.cursor == fresh.cursor and all(
    np.array_equal(s.params[k], fresh.params[k]) for k in fresh.params) and all(
    np.array_equal(s.optimizer_state[k]["momentum_buffer"], fresh.optimizer_state[k]["momentum_buffer"])
    for k in fresh.optimizer_state)
s.step(5), fresh.step(5)
rerun_ok = all(np.array_equal(s.params[k], fresh.params[k]) for k in fresh.params)
print(json.dumps(dict(n_params=int(n_params), steps=s.step_count, traced_current=current, traced_peak=peak,
                      held=held, before_held=before_held, seconds=seconds, rewind_seconds=rewind_seconds,
                      middle_ok=bool(middle_ok), early_ok=bool(early_ok), rerun_ok=bool(rerun_ok),
                      losses=len(s.history.losses))))
'''


def test_ten_thousand_iterations_keep_history_under_200_mb_and_rewind_exactly():
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 95_000 <= r["n_params"] <= 110_000
    # Without bounding, 10,000 snapshots of params + momentum buffer would be ~16 GB.
    snapshot_bytes = 2 * 8 * r["n_params"]
    assert 10_000 * snapshot_bytes > 50 * LIMIT
    assert r["traced_current"] < LIMIT, r           # what the run left allocated: the history
    assert r["traced_peak"] < LIMIT, r
    assert r["held"] < LIMIT, r                     # every numpy buffer the session can reach
    assert r["held"] > r["before_held"]             # … which does include the snapshots kept
    assert r["middle_ok"] and r["early_ok"] and r["rerun_ok"], r
    assert r["losses"] == 15                        # history rewound too: 10 + 5 iterations

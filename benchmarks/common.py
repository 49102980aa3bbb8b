"""The benchmark problem: an MLP 64-128-128-10 (ReLU, cross_entropy, Adam lr 1e-3, batch 64)
on 1,792 samples of 64 features, and the plain loops gdstep is measured against."""

from __future__ import annotations

import math
import time

import numpy as np

SCENARIO = """
name = "benchmark MLP 64-128-128-10"
seed = 0
[data]
kind = "blobs"
n = 1792
classes = 10
features = 64
std = 4.0
[model]
layers = [ { linear = 128 }, "relu", { linear = 128 }, "relu", { linear = 10 } ]
dtype = "{dtype}"
[loss]
kind = "cross_entropy"
[optimizer]
kind = "adam"
lr = 1e-3
[training]
batch_size = 64
epochs = 1000000
shuffle = true
"""


# The breakpoints a benchmarked run keeps on: exploding gradients, and a loss spike (a rise
# of 100× from a loss above 0.01: on separable data the loss falls to ~1e-6 and then
# wanders by more than 100× between batches, which is no spike).
BREAKPOINTS = ("grad_norm > 1e6", "loss > 100 * prev_loss and loss > 0.01")

# What the loops are timed with: wall time, or (`--clock cpu`) the CPU time of the thread
# that runs them, which other processes on a busy machine do not inflate (CPU loops only).
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
_clock = time.perf_counter


def use_clock(name: str) -> None:
    global _clock
    _clock = CLOCKS[name]


def now() -> float:
    return _clock()


def scenario(dtype: str = "float64"):
    from gdstep.scenario import parse_scenario
    return parse_scenario(SCENARIO.replace("{dtype}", dtype))


def batches(n: int, batch_size: int, seed: int, epochs: int):
    """The same shuffled order gdstep uses, so every loop does the same work."""
    from gdstep.data import epoch_permutation
    for epoch in range(1, epochs + 1):
        perm = epoch_permutation(seed, epoch, n)
        for start in range(0, n, batch_size):
            yield perm[start:start + batch_size]


def plain_numpy(x, y, params, steps: int, batch_size: int = 64, lr: float = 1e-3, betas=(0.9, 0.999), eps=1e-8):
    """A hand-written numpy training loop, as a practitioner would write it."""
    W1, b1, W2, b2, W3, b3 = (params[k].copy() for k in ("0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"))
    ps = [W1, b1, W2, b2, W3, b3]
    m = [np.zeros_like(p) for p in ps]
    v = [np.zeros_like(p) for p in ps]
    b1_, b2_ = betas
    t = 0
    n = len(x)
    epochs = steps * batch_size // n + 2
    it = batches(n, batch_size, 0, epochs)
    start = now()
    for _ in range(steps):
        idx = next(it)
        xb, yb = x[idx], y[idx]
        z1 = xb @ W1.T + b1
        a1 = np.maximum(z1, 0)
        z2 = a1 @ W2.T + b2
        a2 = np.maximum(z2, 0)
        z3 = a2 @ W3.T + b3
        z = z3 - z3.max(axis=1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        loss = -logp[np.arange(len(yb)), yb].mean()
        g3 = np.exp(logp)
        g3[np.arange(len(yb)), yb] -= 1
        g3 /= len(yb)
        gW3, gb3 = g3.T @ a2, g3.sum(0)
        g2 = (g3 @ W3) * (z2 > 0)
        gW2, gb2 = g2.T @ a1, g2.sum(0)
        g1 = (g2 @ W2) * (z1 > 0)
        gW1, gb1 = g1.T @ xb, g1.sum(0)
        t += 1
        for p, g, mi, vi in zip(ps, (gW1, gb1, gW2, gb2, gW3, gb3), m, v):
            mi *= b1_
            mi += (1 - b1_) * g
            vi *= b2_
            vi += (1 - b2_) * g * g
            denom = np.sqrt(vi) / math.sqrt(1 - b2_ ** t) + eps     # a Python float: float32 stays float32
            p -= lr / (1 - b1_ ** t) * mi / denom
    elapsed = now() - start
    return elapsed, float(loss), dict(zip(("0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"), ps))


def plain_torch(x, y, params, steps: int, batch_size: int = 64, lr: float = 1e-3, dtype: str = "float32",
                device: str = "cpu", sizes=(64, 128, 128, 10), precomputed: bool = False, foreach: bool | None = None):
    """A plain torch loop: nn.Sequential, CrossEntropyLoss, torch.optim.Adam. On the CPU it
    draws its batches in the timed loop, as `plain_numpy` does (`precomputed`: every batch's
    indices made into a tensor before the clock starts, as this loop did before; `foreach`:
    Adam's own option, None its default)."""
    import torch

    dt = getattr(torch, dtype)
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).to(device=device, dtype=dt)
    if params is not None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(torch.as_tensor(params[name]))
    opt = torch.optim.Adam(model.parameters(), lr=lr, foreach=foreach)
    loss_fn = torch.nn.CrossEntropyLoss()
    xt = torch.as_tensor(x, dtype=dt, device=device)
    yt = torch.as_tensor(y, dtype=torch.long, device=device)
    n = len(x)
    it = batches(n, batch_size, 0, steps * batch_size // n + 2)
    if device != "cpu":      # on a GPU the order is there before the loop, as gdstep keeps it there
        order = [torch.as_tensor(next(it), device=device) for _ in range(steps)]
        torch.cuda.synchronize()
    elif precomputed:
        order = [torch.from_numpy(next(it)) for _ in range(steps)]
    else:                    # the batches drawn in the loop, each epoch's order made as it comes, as
        order = (torch.from_numpy(next(it)) for _ in range(steps))      # plain_numpy and gdstep draw them
    start = now()
    for idx in order:
        xb, yb = xt[idx], yt[idx]
        opt.zero_grad()
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
    loss_value = float(loss.item())
    elapsed = now() - start
    return elapsed, loss_value


def best_of(repeats: int, fn):
    results = [fn() for _ in range(repeats)]
    return min(results, key=lambda r: r[0])

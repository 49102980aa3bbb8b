"""The course (scenarios/lessons.toml): every lesson replays with its narration and its
`expect` lines hold, every `{…}` field of a `say` line reads a value that exists, and the
facts the lessons teach are checked here independently: the hand-worked numbers worked
again by hand, the optimizers' claims against torch.optim loops that know nothing of gdstep.
"""

from __future__ import annotations

import math
import re
import runpy
import tomllib

import numpy as np
import pytest

import gdstep
from gdstep.bundled import scenarios_dir
from gdstep.cli import main
from gdstep.conditions import parse_expression

HERE = scenarios_dir()
CATALOGUE = tomllib.loads((HERE / "lessons.toml").read_text(encoding="utf-8"))["lesson"]
NAMES = ["loss", "gradient", "learning-rate", "backprop", "batches", "momentum", "adaptive", "minima", "xor",
         "cross-entropy", "vanishing", "high-dimensions"]
SAY = re.compile(r'^\s*say\s+"(?P<text>.*)"\s*$')


def script(name: str) -> str:
    entry = next(e for e in CATALOGUE if e["name"] == name)
    return (HERE / entry["script"]).read_text(encoding="utf-8")


def narration(name: str) -> str:
    return "\n".join(m.group("text") for line in script(name).splitlines() if (m := SAY.match(line)))


def toml(path: str) -> dict:
    return tomllib.loads((HERE / path).read_text(encoding="utf-8"))


def inline_data(path: str) -> tuple[np.ndarray, np.ndarray]:
    data = toml(path)["data"]
    return np.array(data["x"], dtype=float), np.array(data["y"], dtype=float)


# -- the catalogue and the replays ------------------------------------------------------------

def test_the_catalogue_lists_the_twelve_lessons_in_order_with_their_files():
    assert [e["name"] for e in CATALOGUE] == NAMES
    for number, entry in enumerate(CATALOGUE, start=1):
        assert set(entry) == {"name", "title", "scenario", "script"}
        assert (HERE / entry["scenario"]).is_file() and (HERE / entry["script"]).is_file()
        assert entry["script"].startswith(f"lesson{number:02d}_") and entry["title"]


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e["name"])
def test_every_lesson_replays_with_its_narration_and_its_expectations_hold(entry, capsys):
    """The real parser, `say` lines included: this needs the `say` command."""
    scenario = HERE / entry["scenario"]
    backend = "torch" if scenario.suffix == ".py" else "numpy"
    assert main(["replay", str(scenario), str(HERE / entry["script"]), "--backend", backend]) == 0
    out = capsys.readouterr().out
    assert "FAILED" not in out and out.rstrip().splitlines()[-1].startswith("done:")
    text = script(entry["name"])
    assert len(re.findall(r"^expect ", text, re.M)) >= 3
    assert 5 <= len(re.findall(r"^say ", text, re.M)) <= 25


def _fields(text: str) -> list[str]:
    """The expressions inside `{…}` (`{{` and `}}` are literal), without their format specs."""
    found = []
    for m in re.finditer(r"(?<!\{)\{(?!\{)([^{}]*)\}", text):
        body = m.group(1)
        depth, cut = 0, len(body)
        for i, ch in enumerate(body):           # the spec starts at a ':' outside brackets
            depth += ch in "([" and 1 or (ch in ")]" and -1 or 0)
            if ch == ":" and depth == 0:
                cut = i
        found.append(body[:cut])
    return found


@pytest.mark.parametrize("entry", CATALOGUE, ids=lambda e: e["name"])
def test_every_narration_field_reads_a_name_the_session_has(entry):
    if entry["scenario"].endswith(".py"):       # a Python scenario: its parameter names from the file
        model = runpy.run_path(str(HERE / entry["scenario"]))["model"]
        shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    else:
        shapes = gdstep.open(HERE / entry["scenario"]).backend.param_shapes
    fields = _fields(narration(entry["name"]))
    assert fields or entry["name"] in ("backprop",)
    for field in fields:
        parse_expression(field).check_names(shapes)


# -- lessons 1 and 2: the loss and the gradient, by hand ---------------------------------------

def test_lesson_1_the_mean_squared_errors_and_cross_entropies_it_quotes():
    x, y = inline_data("lesson01_loss.toml")
    assert np.mean((1.0 * x + 0.0 - y) ** 2) == 7.5                     # errors −1, −2, −3, −4
    assert np.mean((2.0 * x + 0.5 - y) ** 2) == 0.25                    # after one step: every error −0.5
    text = narration("loss")
    for p, shown in ((0.9, "0.105"), (0.5, "0.693"), (0.1, "2.303")):
        assert f"{-math.log(p):.3f}" == shown and shown in text


def test_lesson_2_the_gradient_and_the_step_worked_by_hand_and_by_finite_differences():
    x, y = inline_data("lesson02_gradient.toml")
    x, y = x[:, 0], y[:, 0]

    def loss(w, b):
        return np.mean((w * x + b - y) ** 2)

    err = 1.0 * x + 0.0 - y
    gw, gb = 2 * np.mean(err * x), 2 * np.mean(err)
    assert (gw, gb) == (-10.0, -5.0)
    h = 1e-6
    assert (loss(1 + h, 0) - loss(1 - h, 0)) / (2 * h) == pytest.approx(-10, abs=1e-6)
    assert (loss(1, h) - loss(1, -h)) / (2 * h) == pytest.approx(-5, abs=1e-6)
    w, b = 1 - 0.1 * gw, 0 - 0.1 * gb
    assert (w, b) == (2.0, 0.5) and loss(w, b) == 0.25
    err = w * x + b - y
    assert math.hypot(2 * np.mean(err * x), 2 * np.mean(err)) == pytest.approx(1.8027756377319946, abs=1e-15)
    s = gdstep.open(HERE / "lesson02_gradient.toml")
    s.forward(), s.loss(), s.backward()
    assert s.grads["0.weight"][0, 0] == gw and s.grads["0.bias"][0] == gb


def test_lesson_3_each_learning_rate_does_what_the_lesson_says():
    x, y = inline_data("lesson03_learning_rate.toml")
    x, y = x[:, 0], y[:, 0]

    def descend(lr, steps, w=-1.0, b=3.0):
        for step in range(1, steps + 1):
            err = w * x + b - y
            w, b = w - lr * 2 * np.mean(err * x), b - lr * 2 * np.mean(err)
            with np.errstate(over="ignore", invalid="ignore"):
                if not np.isfinite(np.mean((w * x + b - y) ** 2)):
                    return step, w, b
        return steps, w, b

    assert descend(0.3, 1)[1] == 1.25 and descend(0.7, 1)[1] == 4.25       # short of 2, and past it
    losses = {lr: np.mean((descend(lr, 15)[1] * x + descend(lr, 15)[2] - y) ** 2) for lr in (0.02, 0.3, 0.7)}
    assert losses[0.3] < losses[0.7] < losses[0.02]
    blown, w, _ = descend(1.1, 5000)          # |1 − 2.5 × 1.1| = 1.75 > 1: it grows until it overflows
    assert 600 < blown < 700 and abs(w) > 1e150


# -- lesson 4: the textbook network, every quoted number worked again --------------------------

def test_lesson_4_every_number_in_the_narration_is_the_hand_computation():
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    x1, x2, t1, t2 = 0.05, 0.10, 0.01, 0.99
    z1, z2 = 0.15 * x1 + 0.20 * x2 + 0.35, 0.25 * x1 + 0.30 * x2 + 0.35
    h1, h2 = sig(z1), sig(z2)
    zo1, zo2 = 0.40 * h1 + 0.45 * h2 + 0.60, 0.50 * h1 + 0.55 * h2 + 0.60
    o1, o2 = sig(zo1), sig(zo2)
    e1, e2 = 0.5 * (t1 - o1) ** 2, 0.5 * (t2 - o2) ** 2
    d1, d2 = (o1 - t1) * o1 * (1 - o1), (o2 - t2) * o2 * (1 - o2)
    dh1 = d1 * 0.40 + d2 * 0.50
    delta_h1 = dh1 * h1 * (1 - h1)
    g5, g1 = d1 * h1, delta_h1 * x1
    quoted = [z1, z2, h1, h2, zo1, zo2, o1, o2, e1, e2, e1 + e2, o1 - t1, o1 * (1 - o1), g5, d1, d2,
              d1 * 0.40, d2 * 0.50, dh1, h1 * (1 - h1), delta_h1, g1, 0.40 - 0.5 * g5, 0.15 - 0.5 * g1]
    text = narration("backprop").replace("−", "-")
    for value in quoted:                       # six decimals, or fewer when the rest are zeros
        shown = f"{abs(value):.6f}"             # (a negative one may be written as a subtraction)
        assert shown in text or shown.rstrip("0") in text, value
    assert abs(e1 + e2 - 0.298371109) < 1e-9 and abs(g5 - 0.082167041) < 1e-9 and abs(g1 - 0.000438568) < 1e-9
    s = gdstep.open(HERE / "textbook.toml")
    s.step()
    assert s.params["2.weight"][0, 0] == pytest.approx(0.40 - 0.5 * g5, abs=1e-15)
    assert s.params["0.weight"][0, 0] == pytest.approx(0.15 - 0.5 * g1, abs=1e-15)


# -- lessons 5 to 8: batches, momentum, adaptive steps, minima ----------------------------------

def _full_loss_moons(s, x, y) -> float:
    p = s.params
    z = np.tanh(x @ p["0.weight"].T + p["0.bias"]) @ p["2.weight"].T + p["2.bias"]
    z = z - z.max(axis=1, keepdims=True)
    return float(-(z[np.arange(len(y)), y] - np.log(np.exp(z).sum(axis=1))).mean())


def test_lesson_5_small_batches_go_further_per_epoch_and_their_losses_jump():
    s = gdstep.open(HERE / "lesson05_batches.toml")
    x, y = s.backend.problem.x, np.asarray(s.backend.problem.y).astype(int).ravel()
    lanes = s.lanes(["batch_size=full", "batch_size=20", "batch_size=1"])
    lanes.run(until="epoch > 2")
    assert [lane.session.step_count for lane in lanes.lanes] == [2 * math.ceil(200 / b) for b in (200, 20, 1)]
    full, mini, single = (_full_loss_moons(lane.session, x, y) for lane in lanes.lanes)
    assert single < mini < full                # on all 200 points, not on the last batch
    lanes.run(until="epoch > 20")
    rises = [float(np.mean(np.diff(lane.session.history.losses) > 0)) for lane in lanes.lanes]
    assert rises[0] == 0 and rises[1] > 0.2 and rises[2] > 0.2


def _quadratic_runs(path: str, optimizers: dict, steps: int, start) -> dict:
    """A bare torch.optim loop per optimizer on the scenario's inline data: (loss at the last
    iteration, before its update as gdstep's `loss` reads it, and the weights after)."""
    import torch
    x, y = (torch.tensor(a) for a in inline_data(path))
    out = {}
    for key, make in optimizers.items():
        w = torch.tensor([start], dtype=torch.float64, requires_grad=True)
        opt = make([w])
        for _ in range(steps):
            loss = ((x @ w.T - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        out[key] = (loss.item(), w.detach().numpy()[0])
    return out


def test_lesson_6_the_ravine_and_momentum_against_bare_torch_sgd():
    import torch
    x, _ = inline_data("lesson06_momentum.toml")
    lam = np.linalg.eigvalsh(2 * x.T @ x / len(x))
    assert lam[1] / lam[0] > 50                # a ravine: curvature 94 times larger across than along
    assert 1 < 0.5 * lam[1] < 2                # η = 0.5 jumps across it every step, yet converges
    sgd = torch.optim.SGD
    runs = _quadratic_runs("lesson06_momentum.toml", {
        "plain 0.5": lambda p: sgd(p, lr=0.5), "plain 0.3": lambda p: sgd(p, lr=0.3),
        "momentum": lambda p: sgd(p, lr=0.3, momentum=0.9),
        "nesterov": lambda p: sgd(p, lr=0.3, momentum=0.9, nesterov=True)}, 100, [4.0, 1.0])
    loss = {k: v[0] for k, v in runs.items()}
    assert loss["momentum"] < loss["plain 0.5"] / 100 and loss["nesterov"] < loss["momentum"]
    assert loss["plain 0.3"] > loss["plain 0.5"]
    assert "about a thousand times lower" in narration("momentum") and 500 < loss["plain 0.5"] / loss["momentum"] < 2000


def test_lesson_7_adaptive_steps_against_bare_torch_optimizers():
    import torch
    runs = _quadratic_runs("lesson07_adaptive.toml", {
        "sgd": lambda p: torch.optim.SGD(p, lr=0.4), "adagrad": lambda p: torch.optim.Adagrad(p, lr=2),
        "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.1), "adam": lambda p: torch.optim.Adam(p, lr=0.5)},
        100, [0.0, 0.0])
    assert runs["sgd"][1][1] < 13 and abs(runs["adagrad"][1][1] - 20) < 1 and abs(runs["adam"][1][1] - 20) < 0.2
    assert runs["adam"][0] < runs["sgd"][0] / 1000 and runs["adagrad"][0] < runs["sgd"][0] / 10
    assert runs["rmsprop"][0] < runs["sgd"][0]
    first = _quadratic_runs("lesson07_adaptive.toml", {"sgd": lambda p: torch.optim.SGD(p, lr=0.4)}, 1, [0.0, 0.0])
    assert np.allclose(first["sgd"][1], [2.0, 0.2], atol=1e-15)
    w = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    x, y = (torch.tensor(a) for a in inline_data("lesson07_adaptive.toml"))
    adam = torch.optim.Adam([w], lr=0.5)
    ((x @ w.T - y) ** 2).mean().backward()
    assert w.grad.numpy().tolist() == [[-5.0, -0.5]]
    adam.step()
    state = adam.state[w]
    assert np.allclose(w.detach().numpy(), 0.5, atol=1e-7)          # both weights moved by η
    assert np.allclose(state["exp_avg"].numpy(), [[-0.5, -0.05]]) and np.allclose(state["exp_avg_sq"].numpy(), [[0.025, 0.00025]])
    text = narration("adaptive")
    assert "m = (−0.5, −0.05) and v = (0.025, 0.00025)" in text and "exp_avg and exp_avg_sq" in text


def test_lesson_8_two_mirror_minima_and_a_saddle_between_them():
    s = gdstep.open(HERE / "lesson08_minima.toml")
    x, y = s.backend.problem.x[:, 0], np.asarray(s.backend.problem.y)[:, 0]

    def loss(w, v):
        return float(np.mean((v * np.tanh(w * x) - y) ** 2))

    assert loss(1.81, 0.71) == loss(-1.81, -0.71)                     # the mirror image fits alike
    h = 1e-4
    grad = [(loss(h, 0) - loss(-h, 0)) / (2 * h), (loss(0, h) - loss(0, -h)) / (2 * h)]
    assert np.allclose(grad, 0, atol=1e-12)                           # flat at (0, 0) …
    hess = np.array([[loss(h, 0) - 2 * loss(0, 0) + loss(-h, 0), (loss(h, h) - loss(h, -h) - loss(-h, h) + loss(-h, -h)) / 4],
                     [0, loss(0, h) - 2 * loss(0, 0) + loss(0, -h)]]) / h ** 2
    hess[1, 0] = hess[0, 1]
    low, high = np.linalg.eigvalsh(hess)
    assert low < 0 < high                                             # … and a saddle, not a bottom
    assert loss(0.05, 0.05) < loss(0, 0) < loss(0.05, -0.05)          # down along w = v, up along w = −v
    assert abs(loss(0, 0) - float(np.mean(y ** 2))) < 1e-15


# -- lessons 9 to 12 --------------------------------------------------------------------------

def test_lesson_9_no_line_beats_log_2_on_xor():
    import torch
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    y = torch.tensor([[0.0], [1.0], [1.0], [0.0]])
    torch.manual_seed(0)
    line = torch.nn.Linear(2, 1)
    opt = torch.optim.Adam(line.parameters(), lr=0.1)
    for _ in range(1000):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(line(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert math.log(2) - 1e-6 < loss.item() < math.log(2) + 1e-3
    assert math.exp(-4 * 0.01) > 0.96          # a mean below 0.01 over 4 points: each p above 0.96


def test_lesson_10_the_numbers_it_quotes_and_the_gradient_p_minus_one():
    import torch
    assert f"{math.log(3):.4f}" == "1.0986" and f"{-math.log(0.01):.1f}" == "4.6"
    assert f"{math.exp(-0.15):.2f}" == "0.86" and math.exp(-0.05) > 0.95
    scores = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 2, 1, 1, 0])
    torch.nn.functional.cross_entropy(scores, target, reduction="sum").backward()
    p = torch.softmax(scores.detach(), dim=1)
    assert torch.allclose(scores.grad, p - torch.nn.functional.one_hot(target, 3))


def test_lesson_11_a_bare_torch_loop_shows_the_vanishing_gradient_and_the_cure():
    import torch
    from torch.nn import functional as F
    m = runpy.run_path(str(HERE / "lesson11_vanishing.py"))
    model, x, y = m["model"], *m["data"]
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for step in range(150):
        loss = m["loss_fn"](model(x), y)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            norm = {n: p.grad.norm().item() for n, p in model.named_parameters()}
            assert norm["sig.0.weight"] < 1e-3 * norm["sig.12.weight"]
            assert norm["relu.0.weight"] > 0.1 * norm["relu.12.weight"]
            assert [norm[f"sig.{i}.weight"] for i in range(0, 14, 2)] == sorted(norm[f"sig.{i}.weight"] for i in range(0, 14, 2))
        opt.step()
    with torch.no_grad():
        sigmoid_part, relu_part = F.cross_entropy(model.sig(x), y).item(), F.cross_entropy(model.relu(x), y).item()
    assert abs(sigmoid_part - math.log(2)) < 0.005 and relu_part < 0.02
    assert 0.69 < loss.item() < 0.72           # the total the lesson's expect reads at step 150


def test_lesson_12_counts_its_parameters_and_starts_near_log_10():
    import torch
    m = runpy.run_path(str(HERE / "lesson12_high_dimensions.py"))
    sizes = {n: p.numel() for n, p in m["model"].named_parameters()}
    assert sum(sizes.values()) == 352_010 and sizes["0.weight"] == 384 * 784 == 301_056
    x, y = m["data"]
    assert x.shape == (1000, 784)
    with torch.no_grad():
        assert abs(m["loss_fn"](m["model"](x), y).item() - math.log(10)) < 0.2
    text = narration("high-dimensions") + script("high-dimensions")
    assert "352,010" in text and "301,056" in text

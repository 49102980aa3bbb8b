"""The textbook 2-2-2 sigmoid network (scenarios/textbook.toml; Matt Mazur's worked example):
one forward, loss, backward and update checked against numbers worked out here by hand, with
plain Python floats and the chain rule written out — no numpy, no gdstep arithmetic."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gdstep
from gdstep.bundled import scenarios_dir

TOL = 1e-9

X = [0.05, 0.10]
T = [0.01, 0.99]
W1 = [[0.15, 0.20], [0.25, 0.30]]
B1 = [0.35, 0.35]
W2 = [[0.40, 0.45], [0.50, 0.55]]
B2 = [0.60, 0.60]
LR = 0.5


def sigma(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def by_hand() -> dict:
    """Every number of one iteration, computed the way one does it on paper."""
    z1 = [W1[i][0] * X[0] + W1[i][1] * X[1] + B1[i] for i in range(2)]
    a1 = [sigma(z) for z in z1]
    z2 = [W2[i][0] * a1[0] + W2[i][1] * a1[1] + B2[i] for i in range(2)]
    y = [sigma(z) for z in z2]
    loss = sum(0.5 * (T[i] - y[i]) ** 2 for i in range(2))
    dL_dy = [y[i] - T[i] for i in range(2)]                      # ∂(½(t − y)²)/∂y
    d2 = [dL_dy[i] * y[i] * (1 - y[i]) for i in range(2)]         # δ of the output layer's z
    gW2 = [[d2[i] * a1[j] for j in range(2)] for i in range(2)]
    gB2 = list(d2)
    dL_da1 = [sum(d2[i] * W2[i][j] for i in range(2)) for j in range(2)]   # with the OLD W2
    d1 = [dL_da1[j] * a1[j] * (1 - a1[j]) for j in range(2)]
    gW1 = [[d1[i] * X[j] for j in range(2)] for i in range(2)]
    gB1 = list(d1)
    new = {
        "0.weight": [[W1[i][j] - LR * gW1[i][j] for j in range(2)] for i in range(2)],
        "0.bias": [B1[i] - LR * gB1[i] for i in range(2)],
        "2.weight": [[W2[i][j] - LR * gW2[i][j] for j in range(2)] for i in range(2)],
        "2.bias": [B2[i] - LR * gB2[i] for i in range(2)],
    }
    return dict(z1=z1, a1=a1, z2=z2, y=y, loss=loss, dL_dy=dL_dy, d2=d2, dL_da1=dL_da1, d1=d1,
                grads={"0.weight": gW1, "0.bias": gB1, "2.weight": gW2, "2.bias": gB2}, new=new)


@pytest.fixture
def session():
    return gdstep.open(scenarios_dir() / "textbook.toml")


def close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual, dtype=float), np.asarray(expected, dtype=float), rtol=0, atol=TOL)


def test_the_hand_computation_is_the_published_example():
    """Guard the reference itself: Mazur's published values (to his 9 digits)."""
    ref = by_hand()
    assert ref["y"][0] == pytest.approx(0.75136507, abs=1e-8)
    assert ref["y"][1] == pytest.approx(0.772928465, abs=1e-9)
    assert ref["loss"] == pytest.approx(0.298371109, abs=1e-9)
    assert ref["new"]["2.weight"][0][0] == pytest.approx(0.35891648, abs=1e-8)
    assert ref["new"]["0.weight"][0][0] == pytest.approx(0.149780716, abs=1e-9)


def test_scenario_starts_from_the_textbook_values(session):
    p = session.params
    close(p["0.weight"], W1)
    close(p["0.bias"], B1)
    close(p["2.weight"], W2)
    close(p["2.bias"], B2)
    assert session.lr == LR
    assert session.backend.dtype == "float64"


def test_one_iteration_matches_the_hand_computation(session):
    ref = by_hand()
    fwd = session.forward()
    close(fwd.inputs, [X])
    z1, a1, z2, y = fwd.outputs
    close(z1, [ref["z1"]])
    close(a1, [ref["a1"]])
    close(z2, [ref["z2"]])
    close(y, [ref["y"]])

    loss = session.loss()
    assert abs(loss.value - ref["loss"]) < TOL
    close(loss.per_sample, [ref["loss"]])
    close(loss.target, [T])

    bwd = session.backward()
    close(bwd.grad_output, [ref["dL_dy"]])
    d_z1, d_a1, d_z2, d_y = bwd.deltas
    close(d_y, [ref["dL_dy"]])
    close(d_z2, [ref["d2"]])
    close(d_a1, [ref["dL_da1"]])
    close(d_z1, [ref["d1"]])
    for name, g in ref["grads"].items():
        close(bwd.grads[name], g)
        close(session.grads[name], g)
    norm = math.sqrt(sum(v * v for g in ref["grads"].values() for row in g for v in (row if isinstance(row, list) else [row])))
    assert abs(bwd.grad_norm - norm) < TOL

    upd = session.update()
    assert upd.lr == LR
    for name, value in ref["new"].items():
        close(upd.params[name].new, value)
        close(session.params[name], value)


def test_explain_prints_the_textbook_update(session):
    session.step()
    e = session.explain("2.weight", (0, 0))
    assert e.text == "W_new = 0.400000 − 0.5 × 0.082167 = 0.358916"
    ref = by_hand()
    assert abs(e.w_old - 0.40) < TOL
    assert abs(e.grad - ref["grads"]["2.weight"][0][0]) < TOL
    assert abs(e.w_new - ref["new"]["2.weight"][0][0]) < TOL
    assert e.terms[-1].value == pytest.approx(e.w_new, abs=1e-15)


def test_chain_rule_of_the_output_weight(session):
    session.forward(), session.loss(), session.backward()
    ref = by_hand()
    c = session.chain_rule("2.weight", (0, 0))
    assert len(c.products) == 1
    _, delta, a = c.products[0]
    assert abs(delta - ref["d2"][0]) < TOL
    assert abs(a - ref["a1"][0]) < TOL
    assert abs(c.value - ref["d2"][0] * ref["a1"][0]) < TOL


def test_chain_rule_of_a_bias_over_one_sample_names_its_delta_once(session):
    """One sample: ∂L/∂b[0] = Σ_n δ[n,0] is that sample's δ; the lines say so, then its
    value, once (before: the value twice, and b for both the bias and the sample)."""
    session.forward(), session.loss(), session.backward()
    ref = by_hand()
    c = session.chain_rule("2.bias", (0,))
    assert c.lines[0].startswith("∂L/∂b[0] = Σ_n δ[n,0]") and "n: the sample" in c.lines[0]
    assert c.lines[1] == "  = δ[0,0]"
    assert abs(float(c.lines[2].removeprefix("  = ")) - ref["d2"][0]) < 1e-6
    assert sum(line.startswith("  = ") for line in c.lines) == 2


def test_second_iteration_uses_the_updated_weights(session):
    """A second step by hand from the new weights: the update fed the next forward."""
    ref = by_hand()
    session.step()
    new = ref["new"]
    z1 = [new["0.weight"][i][0] * X[0] + new["0.weight"][i][1] * X[1] + new["0.bias"][i] for i in range(2)]
    a1 = [sigma(z) for z in z1]
    y = [sigma(new["2.weight"][i][0] * a1[0] + new["2.weight"][i][1] * a1[1] + new["2.bias"][i]) for i in range(2)]
    loss = sum(0.5 * (T[i] - y[i]) ** 2 for i in range(2))
    session.forward()
    assert abs(session.loss().value - loss) < TOL
    assert loss < ref["loss"]

"""The per-rank view and the combined verdict's wording (no processes: hand-made values),
and the app's ranks screen."""

from __future__ import annotations

import numpy as np
import pytest

import gdstep
from gdstep.distributed.verdict import BREAKPOINT, NONE, NONFINITE, Verdict
from gdstep.distributed.view import RanksView, RankValues


def _view(losses, finite=(True, True, True, True)):
    grads = [np.array([1.0, 2.0]), np.array([3.0, 2.0]), np.array([1.0, 0.0]), np.array([3.0, 4.0])]
    avg = sum(grads) / 4                                   # [2, 2]
    ranks = tuple(RankValues(r, losses[r], 5, float(np.linalg.norm(g)), {"w": float(np.linalg.norm(g))},
                             float(np.linalg.norm(g - avg) / np.linalg.norm(avg)), finite[r], None, {"w": g})
                  for r, g in enumerate(grads))
    return RanksView(ranks, float(np.linalg.norm(avg)), {"w": avg})


def test_a_rank_whose_loss_is_far_from_the_others_stands_out():
    view = _view([1.00, 1.02, 50.0, 0.99])
    assert view.outliers() == (2,)
    text = view.text()
    assert "update 6" in text                          # grads_step 5: the backward before update 6
    row = next(line for line in text.splitlines() if line.strip().startswith("2 "))
    assert "← stands out" in row and "50" in row
    assert "spread (max − min) 49.01" in text


def test_a_rank_with_a_non_finite_value_stands_out_and_says_no():
    view = _view([1.0, float("nan"), 1.0, 1.0], finite=(True, False, True, True))
    assert view.outliers() == (1,)
    assert "NO  ← stands out" in view.text()


def test_each_parameter_shows_every_ranks_local_gradient_beside_the_average():
    text = _view([1.0, 1.0, 1.0, 1.0]).param_text("w")
    lines = text.splitlines()
    assert lines[1].split()[2:] == ["1", "2", "2.236"] and lines[3].split()[2:] == ["1", "0", "1"]    # then ‖g_r‖
    assert lines[-1].split() == ["average", "2", "2"]       # (1+3+1+3)/4, (2+2+0+4)/4


def test_the_verdict_names_the_rank_and_says_when_it_is_every_rank():
    nan = "non-finite value nan in layer 0 during forward"
    one = Verdict((NONE, NONE, NONE, NONFINITE), (None, None, None, nan))
    assert one.hit and one.ranks == (3,) and one.message() == f"{nan} — on rank 3 only"
    every = Verdict((BREAKPOINT, BREAKPOINT), ("breakpoint 1 hit: step == 2", "breakpoint 1 hit: step == 2"))
    assert every.message() == "breakpoint 1 hit: step == 2 — on every rank"
    mixed = Verdict((NONFINITE, BREAKPOINT, NONFINITE), ("a", "b", "c"))
    assert mixed.ranks == (0, 2) and mixed.message() == "on ranks 0, 2: rank 0: a; rank 2: c"
    assert not Verdict((NONE, NONE), (None, None)).hit


async def test_the_ranks_screen_opens_on_R_with_the_table_and_the_local_gradients():
    from gdstep.tui.ranks_view import RanksScreen, make_ranks_app

    app = make_ranks_app(gdstep.open("xor"), _view([1.00, 1.02, 50.0, 0.99]))
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("R")
        await pilot.pause()
        assert isinstance(app.screen, RanksScreen)
        shown = str(app.screen.query_one("#ranks-text").render())
        assert "← stands out" in shown and "average" in shown
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, RanksScreen)


def test_a_parameter_too_large_to_travel_whole_still_shows_each_ranks_first_elements_and_norm():
    """A layer of 80×64 weights (over the 4096 elements that travel whole), as a CNN or MLP
    has: every rank's first elements and norm of its local gradient beside the average's,
    checked against torch on the same tensors."""
    from types import SimpleNamespace

    import torch

    from gdstep.distributed.view import rank_values

    g = torch.Generator().manual_seed(3)
    local = [{"big.weight": torch.randn(80, 64, generator=g), "big.bias": torch.randn(80, generator=g)} for _ in range(2)]
    averaged = {n: (local[0][n] + local[1][n]) / 2 for n in local[0]}
    values = [rank_values(local[r], averaged, 4, SimpleNamespace(loss_value=1.0 + r), r, None) for r in range(2)]
    view = RanksView(tuple(v for v, _ in values), **values[0][1])
    text = view.full_text()
    assert "big.weight (80, 64) · first 6 elements" in text and "big.bias (80,)" in text
    block = view.param_text("big.weight").splitlines()
    for r in range(2):
        cells = block[1 + r].split()
        assert cells[:2] == ["rank", str(r)]
        np.testing.assert_allclose([float(c) for c in cells[2:8]], local[r]["big.weight"].reshape(-1)[:6].numpy(), rtol=5e-4)
        assert float(cells[8]) == pytest.approx(float(torch.linalg.vector_norm(local[r]["big.weight"])), rel=5e-4)
    cells = block[3].split()
    assert cells[0] == "average"
    np.testing.assert_allclose([float(c) for c in cells[1:7]], averaged["big.weight"].reshape(-1)[:6].numpy(), rtol=5e-4)
    assert float(cells[7]) == pytest.approx(float(torch.linalg.vector_norm(averaged["big.weight"])), rel=5e-4)


def test_ranks_whose_deviation_is_nan_leave_the_outliers_to_the_rest_without_warnings():
    """One rank's NaN makes the averaged gradient NaN, so no rank's distance from it is
    finite (inf, as a NaN average made it): the rank with the NaN stands out, and numpy
    says nothing on stderr."""
    import dataclasses
    import warnings

    view = _view([1.0, 1.02, float("nan"), 0.99], finite=(True, True, False, True))
    view = RanksView(tuple(dataclasses.replace(r, deviation=float("inf")) for r in view.ranks),
                     float("nan"), view.averaged)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert view.outliers() == (2,)

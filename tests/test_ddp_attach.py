"""Attach mode under DDP: real multi-process jobs over gloo on localhost (test_ddp_support
launches them, one process per rank, with a time limit so a hang fails). Three jobs in
all, several cases each, to keep the time of process start-up down."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402

from test_ddp_support import finish, launch, start  # noqa: E402

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="torch.distributed with gloo is needed")


def _reports(out, case, world):
    return [json.loads((out / case / f"rank{r}.json").read_text()) for r in range(world)]


def _ok(results):
    for rank, (code, err) in enumerate(results):
        assert code == 0, f"rank {rank} exited {code}:\n{err[-2000:]}"


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp2")
    results, _ = launch("identical+retry+dump+watchnan+nandump+raisestep+raisewatch+clipwatch+unused", 2, out,
                        timeout=160, extra={
        "identical": {"optimizer": "adam"}, "retry": {"breakpoints": ["step == 2"]}, "clipwatch": {"breakpoints": ["step == 2"]},
        "dump": {"breakpoints": ["step == 2"]}, "watchnan": {"bad_rank": 1}, "nandump": {"bad_rank": 1, "steps": 5}})
    return out, results


@pytest.fixture(scope="module")
def four_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp4")
    results, _ = launch("identical+nan", 4, out, timeout=120, extra={
        "identical": {"optimizer": "sgd"}, "nan": {"bad_rank": 3, "dbg_rank": "first_hit"}})
    return out, results


@pytest.mark.parametrize("job, world", [("two_ranks", 2), ("four_ranks", 4)])
def test_dbg_step_gives_the_bare_ddp_loops_parameters_bit_for_bit(request, job, world):
    out, results = request.getfixturevalue(job)
    _ok(results)
    for report in _reports(out, "identical", world):
        assert report["equal_bare"], f"rank {report['rank']} differs from a bare DDP loop"
        assert report["same_everywhere"]
        assert report["pauses"] == []


@pytest.mark.parametrize("case", ["raisestep", "raisewatch"])
def test_a_ddp_loop_that_catches_every_break_trains_as_a_bare_ddp_loop(two_ranks, case):
    """on_break="raise" under DDP, a break after every loss phase, the loop catching each:
    step mode finishes each iteration at the loop's next call (before: its update was lost
    on every rank, silently), watch mode raises after its bookkeeping (before: a rank
    crashed with a false "ran the model forward 2 times")."""
    out, results = two_ranks
    _ok(results)
    for report in _reports(out, case, 2):
        assert report["caught"] == 3 and report["logged"] == 3, report     # (watch mode logged none before)
        assert report["equal_bare"], f"rank {report['rank']} differs from a bare DDP loop"
        assert report["same_everywhere"]


def test_nan_on_one_rank_pauses_every_rank_at_the_same_iteration_and_names_it(four_ranks):
    out, results = four_ranks
    _ok(results)
    reports = _reports(out, "nan", 4)
    for report in reports:
        first = report["held"][0]
        assert first["iteration"] == 2                    # rank 3's batch of iteration 2 had the NaN
        assert first["ranks"] == [3]
        assert "rank 3 only" in first["message"] and "nan" in first["message"]
        assert report["same_everywhere"]
    # dbg_rank="first_hit": rank 3 debugs the first pause; the next (every rank non-finite
    # after the NaN update) goes to the first of them, rank 0; ranks 1 and 2 only follow
    assert [p["step"] for p in reports[3]["pauses"]] == [2]
    assert reports[3]["pauses"][0]["message"].startswith("paused: non-finite")
    assert [p["step"] for p in reports[0]["pauses"]] == [3]
    assert reports[1]["pauses"] == reports[2]["pauses"] == []
    view = reports[0]["view"]
    assert [np.isfinite(v) for v in view["losses"]] == [True, True, True, False]
    assert view["outliers"] == [3] and "← stands out" in view["text"]
    # paused before the backward: the local gradients of that iteration, computed aside,
    # listed (and all-reduced) in the model's order
    assert "update 3" in view["text"]
    assert list(view["averaged"]) == ["module.0.weight", "module.0.bias", "module.2.weight", "module.2.bias"]
    rows = [line for line in view["text"].splitlines() if line[:4].strip().isdigit()]
    assert [row.split()[4] for row in rows] == ["yes", "yes", "yes", "NO"]


def test_rewind_and_set_lr_in_the_pause_run_on_every_rank(two_ranks):
    """At the pause (after update 2) the debugging rank rewinds an iteration, sets lr 0.01
    and steps again; every rank ends equal to a bare DDP loop whose lr was 0.01 from
    iteration 2 on."""
    out, results = two_ranks
    _ok(results)
    reports = _reports(out, "retry", 2)
    assert reports[0]["outcomes"] == [True, True, True]
    # after the loop, gdstep.set_trace() on every rank: back an iteration and step it again
    assert reports[0]["traced"] == ["paused: set_trace — on every rank", True, True]
    assert "traced" not in reports[1]
    # the local gradients (before the all-reduce, kept by the hooks) average to the gradient
    # DDP gave the optimizer, and differ from rank to rank
    view = reports[0]["view"]
    local = [{k: np.array(v) for k, v in view["local"][str(r)].items()} for r in range(2)]
    assert set(view["averaged"]) == {"module.0.weight", "module.0.bias", "module.2.weight", "module.2.bias"}
    for name, avg in view["averaged"].items():
        np.testing.assert_allclose((local[0][name] + local[1][name]) / 2, np.array(avg), rtol=1e-6, atol=1e-7)
        assert not np.allclose(local[0][name], local[1][name])
    for report in reports:
        assert report["held"][0]["iteration"] == 1
        assert report["lr"] == 0.01
        assert report["equal_bare"] and report["same_everywhere"]


def test_the_ranks_view_averages_the_local_gradients_where_the_loop_clipped_them(two_ranks):
    """Watch mode, the loop clipping after watch(), the ranks paused after its step: the
    average beside each rank's local gradient is theirs (before, `.grad` was read, clipped
    by then: the deviations of the two ranks, which must be equal, differed; found running
    pytorch/examples' minGPT-ddp, whose trainer clips)."""
    out, results = two_ranks
    _ok(results)
    view = _reports(out, "clipwatch", 2)[0]["view"]
    local = [{k: np.array(v) for k, v in view["local"][str(r)].items()} for r in range(2)]
    total = 0.0
    for name, avg in view["averaged"].items():
        np.testing.assert_allclose((local[0][name] + local[1][name]) / 2, np.array(avg), rtol=1e-6, atol=1e-7)
        total += float((np.array(avg) ** 2).sum())
    assert len(view["averaged"]) == 4 and total ** 0.5 > 0.01      # unclipped (clipped: ‖ḡ‖ = 0.001)


def test_ranks_whose_backwards_reach_different_parameters_pause_together_and_average_them(two_ranks):
    """find_unused_parameters, rank 0 through branch a, rank 1 through b: the view's
    all-reduce took each rank's own gradients, of other sizes (gloo aborted: "collective
    mismatch"). Every trainable parameter goes in, a branch a rank did not run as zeros, as
    DDP counts it."""
    out, results = two_ranks
    _ok(results)
    reports = _reports(out, "unused", 2)
    for report in reports:
        assert report["paused"] == 1
    view = reports[0]
    local = [{k: np.array(v) for k, v in view["local"][str(r)].items()} for r in range(2)]
    assert sorted(view["averaged"]) == ["module.a.bias", "module.a.weight", "module.b.0.bias", "module.b.0.weight",
                                        "module.b.1.bias", "module.b.1.weight"]
    for name, avg in view["averaged"].items():
        np.testing.assert_allclose((local[0][name] + local[1][name]) / 2, np.array(avg), rtol=1e-6, atol=1e-7)
        unused_by = 1 if name.startswith("module.a") else 0
        assert not local[unused_by][name].any() and local[1 - unused_by][name].any()


def test_without_a_terminal_rank_0_writes_the_break_files_and_every_rank_goes_on(two_ranks):
    out, results = two_ranks
    _ok(results)
    reports = _reports(out, "dump", 2)
    assert len(reports[0]["dumps"]) == 1 and reports[1]["dumps"] == []
    text = next((out / "dump").glob("gdstep-break-*.txt")).read_text()
    assert "step == 2" in text
    assert all(r["same_everywhere"] for r in reports)
    assert "rank 0 debugs" in results[1][1]


def test_watch_mode_pauses_every_rank_on_one_ranks_nan_and_puts_the_loop_back(two_ranks):
    out, results = two_ranks
    _ok(results)
    reports = _reports(out, "watchnan", 2)
    for report in reports:
        assert report["held"][0]["iteration"] == 2 and report["held"][0]["ranks"] == [1]
        assert "rank 1 only" in report["held"][0]["message"]
        assert report["same_everywhere"]
    # one break an iteration on a non-finite value, as in one process: rank 1's NaN in
    # iteration 2's forward, then every rank's (NaN parameters) in iteration 3's; not again
    # for the updates they spoil
    assert [p["step"] for p in reports[0]["pauses"]] == [2, 3] and reports[1]["pauses"] == []


def test_without_a_terminal_non_finite_parameters_stop_the_files_on_every_rank(two_ranks):
    """Rank 1's NaN at iteration 2 of 5 makes every parameter NaN: one break file, then no
    more — the debugging rank's "no more files" is made on every rank, or the others,
    still breaking on NaN, would pause them all again at every iteration."""
    out, results = two_ranks
    _ok(results)
    reports = _reports(out, "nandump", 2)
    assert [h["iteration"] for h in reports[0]["held"]] == [2]
    assert len(reports[0]["dumps"]) == 1 and reports[1]["dumps"] == []
    assert "no more files for non-finite values" in results[0][1]
    assert all(r["same_everywhere"] for r in reports)


def test_a_rank_that_dies_while_others_wait_ends_the_job_with_a_clear_line(tmp_path):
    """The debugging rank dies in the debugger (the other waits), and — in a second job at
    the same time — a waiting rank dies (the debugging rank's next command finds it gone)."""
    args = {"breakpoints": ["step == 2"], "rank_timeout": 2}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    jobs = [start("die", 2, tmp_path / "a", extra={"die": dict(args, dbg_rank=1)}),
            start("followerdies", 2, tmp_path / "b", extra={"followerdies": dict(args, dbg_rank=0)})]
    (waiting, debugging), _ = finish(jobs[0])
    assert debugging[0] == 3                              # died in the debugger
    assert waiting[0] == 1
    assert "rank 1 stopped answering while this rank waited" in waiting[1] and "rank 0 ends the job" in waiting[1]
    assert "Traceback" not in waiting[1]
    (debugging, waiting), seconds = finish(jobs[1])
    assert waiting[0] == 4                                # died as it began to wait
    assert debugging[0] == 1
    assert "rank 1 stopped answering while this rank debugged" in debugging[1]
    assert "rank 0 ends the job" in debugging[1] and "Traceback" not in debugging[1]
    assert seconds < 60


def test_when_the_debugging_rank_ends_the_ranks_that_wait_end_with_it(tmp_path):
    """Three ranks: rank 2 dies as it begins to wait, so rank 0's next command in the pause
    ends rank 0; rank 1, waiting, is told so and ends with one line — released instead, it
    would go on into an all-reduce with ranks that are gone (a gloo traceback, or a hang).
    And torchrun's SIGTERM (sent to every rank when one dies) to the rank in the app ends
    that rank with one line, and the rank waiting on it, instead of the loop going on."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    jobs = [start("followerdies", 3, tmp_path / "a", extra={"followerdies": {
                "breakpoints": ["step == 2"], "rank_timeout": 2, "dbg_rank": 0, "dies": [2]}}),
            start("sigterm", 2, tmp_path / "b", extra={"sigterm": {"breakpoints": ["step == 2"]}})]
    (debugging, waiting, died), seconds = finish(jobs[0])
    assert died[0] == 4 and debugging[0] == 1
    assert "rank 2 stopped answering while this rank debugged" in debugging[1]
    assert waiting[0] == 1, waiting[1][-2000:]
    line = "gdstep: rank 0 ended the job while rank 1 waited (rank 2 stopped answering while this rank debugged"
    assert line in waiting[1] and "rank 1 ends too" in waiting[1]
    assert "Traceback" not in waiting[1] and "Traceback" not in debugging[1]
    (app, waiting), _ = finish(jobs[1])
    assert app[0] == 1, app[1][-2000:]
    assert "gdstep: SIGTERM while this rank debugged" in app[1] and "Traceback" not in app[1]
    assert waiting[0] == 1, waiting[1][-2000:]
    assert "rank 0 ended the job while rank 1 waited (SIGTERM while this rank debugged" in waiting[1]
    assert "Traceback" not in waiting[1]
    assert seconds < 60

"""Lanes: forks that differ in one setting, run in lockstep; each equals, bit for bit, a
separate session brought to the same point and given the lane's settings there."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import gdstep
from gdstep.errors import GdstepError
from gdstep.lanes import parse_lane


SEEDS = '''
name = "seeds"
seed = 0
[data]
kind = "inline"
x = [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
y = [[1.0], [1.0], [0.0], [0.0]]
[model]
layers = [ { linear = 3 }, "tanh", { linear = 1 } ]
[loss]
kind = "mse"
[optimizer]
kind = "sgd"
lr = 0.3
[training]
shuffle = false
'''


def assert_same_training(a, b):
    assert a.cursor == b.cursor and a.step_count == b.step_count
    for name, value in a.params.items():
        assert np.array_equal(value, b.params[name]), name
    for name, state in a.optimizer_state.items():
        for key, value in state.items():
            other = b.optimizer_state[name][key]
            assert (value is None and other is None) or np.array_equal(np.asarray(value), np.asarray(other)), (name, key)
    assert list(a.history.losses) == list(b.history.losses)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_each_lane_equals_a_separate_session_with_its_settings(backend):
    specs = {"sgd lr=0.1": dict(optimizer="sgd", lr=0.1),
             "sgd lr=0.1 momentum=0.9 nesterov=true": dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True),
             "rmsprop lr=0.01 centered=true": dict(optimizer="rmsprop", lr=0.01, centered=True),
             "adagrad": dict(optimizer="adagrad"),
             "adamw lr=0.01 amsgrad=true": dict(optimizer="adamw", lr=0.01, amsgrad=True),
             "batch_size=7 lr=0.2": dict(batch_size=7, lr=0.2)}
    s = gdstep.open("spiral", backend=backend, dtype="float64")
    s.step(6)
    s.forward()                                   # forked mid-iteration: settings start at the next one
    lanes = s.lanes(list(specs))
    lanes.run(23)
    for lane, settings in zip(lanes.lanes, specs.values()):
        separate = gdstep.open("spiral", backend=backend, dtype="float64")
        separate.step(6)
        separate.forward()
        separate.set(**settings)
        separate.step(23)
        assert_same_training(lane.session, separate)
    assert s.step_count == 6 and s.phase_due == "loss"   # the session itself stayed where it was


def test_lanes_run_on_the_same_batches():
    s = gdstep.open("spiral")
    s.step(3)
    lanes = s.lanes(["sgd lr=0.5", "adam lr=0.01", "rmsprop lr=0.01"])
    for _ in range(5):
        lanes.run(1)
        rows = [lane.session.record("forward").indices for lane in lanes.lanes]
        assert all(np.array_equal(rows[0], r) for r in rows)


def test_adopting_a_lane_continues_the_session_from_it():
    s = gdstep.open("spiral")
    s.step(4)
    lanes = s.lanes(["sgd lr=0.5", "adam lr=0.01"])
    lanes.run(10)
    twin = lanes.lane(2).session.fork()           # where lane 2 stands
    lanes.adopt(2)
    assert s.optimizer.kind == "adam" and s.step_count == 14
    s.step(5)
    twin.step(5)
    assert_same_training(s, twin)
    start = gdstep.open("spiral").optimizer
    s.back(iterations=17)                         # the adopted history rewinds exactly, across the fork
    assert s.optimizer == start and s.step_count == 2
    separate = gdstep.open("spiral")
    separate.step(2)
    assert_same_training(s, separate)
    with pytest.raises(GdstepError, match="closed"):
        lanes.run(1)


def test_a_seed_lane_starts_afresh_from_that_seeds_starting_values():
    text = SEEDS
    from gdstep.scenario import parse_scenario

    sc = parse_scenario(text)
    s = gdstep.open(sc)
    s.step(2)
    lanes = s.lanes(["seed=7", "seed=8 lr=0.1"])
    lanes.run(9)
    for lane, seed, lr in zip(lanes.lanes, (7, 8), (None, 0.1)):
        separate = gdstep.open(dataclasses.replace(sc, seed=seed))     # inline data, in order: only the start differs
        if lr is not None:
            separate.set(lr=lr)
        separate.step(9)
        assert_same_training(lane.session, separate)


def test_a_seed_lane_trains_with_the_settings_the_session_has_now():
    from gdstep.scenario import parse_scenario

    sc = parse_scenario(SEEDS)
    s = gdstep.open(sc)
    s.set(lr=0.05, batch_size=2)
    s.step(3)
    s.set(optimizer="sgd", lr=0.2, momentum=0.5)     # from the next iteration: what a fresh start gets
    lanes = s.lanes(["seed=7", "seed=8 lr=0.1"])
    lanes.run(6)
    for lane, seed, lr in zip(lanes.lanes, (7, 8), (0.2, 0.1)):
        separate = gdstep.open(dataclasses.replace(sc, seed=seed))
        separate.set(optimizer="sgd", lr=lr, momentum=0.5, batch_size=2)
        separate.step(6)
        assert_same_training(lane.session, separate)


def test_adopt_keeps_the_sessions_breakpoints_set_since_the_fork():
    s = gdstep.open("spiral")
    scenario_bps = [bp.text for bp in s.breakpoints]
    early = s.add_breakpoint("loss > 100")
    s.step(2)
    lanes = s.lanes(["sgd lr=0.5", "adam lr=0.01"])
    lanes.run(3)
    s.remove_breakpoint(early.id)
    s.add_breakpoint("grad_norm > 50")                # after the fork: the lanes have no copy of it
    lanes.adopt(1)
    assert [bp.text for bp in s.breakpoints] == scenario_bps + ["grad_norm > 50"]
    assert s.step_count == 5 and s.optimizer.kind == "sgd"


def test_lane_specs_are_checked():
    assert parse_lane("adam lr=0.01 betas=0.9,0.99").args == {"lr": 0.01, "betas": (0.9, 0.99)}
    assert parse_lane("batch_size=full").batch_size == "full"
    for bad, message in [("adamm", "unknown optimizer"), ("sgd lr", "NAME=VALUE"), ("seed=-1", "seed"),
                         ("lr=fast", "expected a number"), ("", "empty lane")]:
        with pytest.raises(GdstepError, match=message):
            parse_lane(bad)
    s = gdstep.open("xor")
    with pytest.raises(GdstepError, match="1 to 6"):
        s.lanes(["sgd"] * 7)
    with pytest.raises(GdstepError, match="set optimizer: sgd has no argument 'betas'"):
        s.lanes(["sgd betas=0.9,0.99"])


def test_the_summary_shows_each_lane():
    s = gdstep.open("xor")
    lanes = s.lanes(["sgd lr=0.5", "adam lr=0.05"])
    lanes.run(until="loss < 0.69")
    table = lanes.summary().splitlines()
    assert table[0].split() == ["lane", "settings", "step", "loss", "stopped"]
    assert table[1].startswith("1     sgd lr=0.5") and table[2].startswith("2     adam lr=0.05")
    for lane in lanes.lanes:
        assert lane.result.reason in ("until", "epochs")
        if lane.result.reason == "until":
            assert lane.session.loss_value < 0.69


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_fork_continues_exactly_as_the_session_would(backend):
    s = gdstep.open("spiral", backend=backend, history_budget=200_000)   # few checkpoints: forks recompute
    s.step(40)
    s.set(lr=0.003, batch_size=9)
    s.step(37)
    s.back(iterations=5)
    s.forward()
    s.loss()
    twin = s.fork()
    assert twin.position == s.position and twin.checkpoint_budget == s.checkpoint_budget
    assert list(twin.history.losses) == list(s.history.losses)
    s.step(12)
    twin.step(12)
    assert_same_training(s, twin)
    twin.back(iterations=50)                      # rewinding a fork before the fork point is exact too
    s.back(iterations=50)
    assert_same_training(s, twin)


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_a_fork_at_an_earlier_point_is_the_session_rewound_there(backend):
    s = gdstep.open("spiral", backend=backend, history_budget=200_000)
    s.step(30)
    s.set(lr=0.003)
    s.step(20)
    s.forward()
    here = s.position
    twin = s.fork(4 * 35 + 2)                     # after step 35's loss, the lr changed at 30
    assert s.position == here and twin.position == 4 * 35 + 2
    later = s.fork(here + 100)                    # never beyond the session
    assert later.position == here
    s.seek(4 * 35 + 2)
    assert_same_training(s, twin)
    s.step(15)
    twin.step(15)
    assert_same_training(s, twin)


def test_a_fork_has_the_records_a_rewind_to_its_point_has():
    """A checkpoint right at the fork's step must not leave out the update before it: a
    fork starts before the iteration before, as a rewind does."""
    s = gdstep.open("spiral")
    s.step(20)
    s.seek(4 * 10)                                # a look back: checkpoints at 9, 10, …
    for position in (4 * 10, 4 * 10 + 1, 4 * 20):
        s.seek(4 * 20)
        twin = s.fork(position)
        s.seek(position)
        assert (twin.record("update") is None) == (s.record("update") is None), position
        assert twin.grad_norm(None) == s.grad_norm(None) and len(twin.grads) == len(s.grads), position


def test_lanes_from_a_script_and_their_recording_replays_to_the_same_state():
    from gdstep.script import Runner

    s = gdstep.open("spiral")
    runner = Runner(s)
    for line in ["step 5", "lanes sgd lr=0.1 | sgd lr=0.1 momentum=0.9 | adam lr=0.01", "lanes run 40",
                 "expect lane(2).loss < lane(1).loss", "lanes adopt 2", "step 3", "landscape random", "line"]:
        outcome = runner.execute_line(line)
        assert outcome.ok, (line, outcome.message)
    assert "landscape random" not in runner.lines and "line" not in runner.lines      # they only look
    fresh = gdstep.open("spiral")
    replay = Runner(fresh)
    for line in runner.lines:
        assert replay.execute_line(line).ok, line
    assert_same_training(s, fresh)
    assert fresh.optimizer.momentum == 0.9 and fresh.step_count == 48


def test_lane_commands_are_checked_as_they_are_parsed():
    from gdstep.errors import ScriptError
    from gdstep.script import parse_command
    from gdstep.script import Runner

    for line, message in [("lanes sgd | ", "empty lane"), ("lanes adamm", "unknown optimizer"), ("lanes run", "count or a condition"),
                          ("lanes adopt", "lane's number"), ("lanes run until", "condition"), ("landscape sideways", "pca|random|gradient"),
                          ("line 3", "no arguments"), ("expect lane(x).loss < 1", "lane's number")]:
        with pytest.raises(ScriptError, match=message):
            parse_command(line)
    outcome = Runner(gdstep.open("xor")).execute_line("expect lane(1).loss < 1")
    assert not outcome.ok and outcome.failed_expect and "lane(1).loss = none" in outcome.message


def test_two_starts_end_in_mirror_image_minima_and_the_landscape_holds_both():
    """y = v·tanh(w·x): (w, v) and (−w, −v) fit alike. Two seeds, two valleys, one surface."""
    s = gdstep.open("two_minima")
    lanes = s.lanes(["seed=0", "seed=1"])
    lanes.run(300)
    ends = [lane.session.params for lane in lanes.lanes]
    assert ends[0]["0.weight"][0, 0] < -1 < 1 < ends[1]["0.weight"][0, 0]
    assert ends[0]["2.weight"][0, 0] == pytest.approx(-ends[1]["2.weight"][0, 0], abs=1e-3)
    land = s.landscape(path=300)
    assert land.directions == "parameters" and len(land.lane_paths) == 2
    for lane, path in zip(lanes.lanes, land.lane_paths):
        assert tuple(path[-1]) == (lane.session.params["0.weight"][0, 0], lane.session.params["2.weight"][0, 0])
        assert land.alphas[0] <= path[:, 0].min() and path[:, 0].max() <= land.alphas[-1]
    x, y = s.backend.x, s.backend.y
    for i, j in [(0, 0), (13, 27), (39, 39)]:                   # the true surface, by hand
        w, v = land.alphas[j], land.betas[i]
        assert land.loss[i, j] == pytest.approx(float(((v * np.tanh(w * x) - y) ** 2).mean()), rel=1e-12)
    assert s.landscape().project(ends[1]) == pytest.approx(tuple(land.lane_paths[1][-1]), abs=1e-12)


def test_a_breakpoint_on_a_lane_that_is_not_there_reads_none_and_never_fires():
    """lane(K) without open lanes (or in a lane itself, which has none) is a value that does
    not exist: comparisons are false, so runs go on, in the session and in its lanes."""
    from gdstep.script import Runner

    s = gdstep.open("spiral")
    runner = Runner(s)
    for line in ["break lane(1).loss < 100", "break lane(9).loss < 100", "step 3",
                 "lanes sgd lr=0.1 | adam lr=0.01", "lanes run 4"]:
        assert runner.execute_line(line).ok, line
    assert s.step_count == 3 and all(lane.session.step_count == 7 for lane in s.open_lanes.lanes)
    result = s.step()                              # now lane 1 exists: its loss is < 100, so the breakpoint fires
    assert result.reason == "breakpoint" and "lane(1).loss" in result.message
    s.open_lanes.close()
    assert s.step().reason == "done"
    with pytest.raises(GdstepError, match="each lane's own values"):
        s.lanes(["sgd lr=0.1", "adam lr=0.01"]).run(until="lane(1).loss < 1")


def test_an_edit_after_set_optimizer_in_the_same_iteration_goes_into_the_fresh_optimizer():
    s = gdstep.open("spiral")
    s.step(4)
    s.set(optimizer="rmsprop", lr=0.01)
    s.set(momentum=0.9)                            # the fresh rmsprop has no state to keep: allowed
    s.step()
    ref = gdstep.open("spiral")
    ref.step(4)
    ref.set(optimizer="rmsprop", lr=0.01, momentum=0.9)
    ref.step()
    assert_same_training(s, ref)
    assert s.optimizer_state["0.weight"]["momentum_buffer"] is not None

"""Lesson mode without the app: the catalogue, the steps a script is played in, and coming
back to the lesson after exploring — equal to the bit to a session that only ran the lesson."""

from __future__ import annotations

import numpy as np
import pytest

import gdstep
from gdstep import lessons
from gdstep.errors import GdstepError, ScenarioError
from gdstep.script import Runner, parse_script
from gdstep.script.lesson import LessonPlayer, split_steps

LESSON = """\
# a lesson on the line fit
say "The model starts at w = {0.weight[0,0]}."
watch 0.bias[0]
step 3
say "After three steps the loss is {loss:.4f}."
set lr 0.1
break loss > 100
run max 20
say "With lr {lr} it went on to step {step}."
lanes sgd lr=0.05 | adam lr=0.1 | sgd lr=0.3 batch_size=8
lanes run 5
say "Lane 2 (adam) reached {lane(2).loss:.4f}."
next 2
expect phase == "loss"
say "Half an iteration: {phase} ran."
set optimizer adam lr=0.02
step 4
expect step == 27
"""

EXPLORE = [
    "step 5", "set lr 0.9", "back 2 iterations", "set optimizer adam lr=0.5", "step 3", "break loss > 1",
    "unbreak all", "set batch_size 4", "step 2", "watch loss", "lanes sgd lr=1 | sgd momentum=0.9",
    "lanes run 3", "lanes adopt 2", "step 4", "set stop_when loss < 0.5", "set epochs 3", "back 40", "next 3",
]
BRANCH = ["back 3 iterations", "set lr 0.9", "step 8", "back 1"]     # a new branch that passes the lesson's point
SHORTER = ["back 10 iterations"]                                    # the loss history shorter than the checkpoints


def _fingerprint(session) -> dict:
    """Everything a learner could see or a later command could depend on, as bytes."""
    s = session
    out = {
        "cursor": s.cursor, "position": s.position, "step": s.step_count,
        "params": {k: v.tobytes() for k, v in s.params.items()},
        "state": {k: {n: (np.asarray(v).tobytes() if v is not None else None) for n, v in st.items()}
                  for k, st in s.optimizer_state.items()},
        "optimizer": s.optimizer, "batch_size": s.batch_size,
        "losses": np.asarray(s.history.losses).tobytes(),
        "norms": [sorted(row.items()) for row in s.history.grad_norms],
        "settings": {k: dict(v) for k, v in s._settings._log.items()},
        "breakpoints": [(bp.id, bp.text, bp.hits) for bp in s.breakpoints],
        "stop_when": s.stop_when.text if s.stop_when else None, "epochs": s.epochs,
        "records": {phase: _record_bytes(s.record(phase)) for phase in ("forward", "loss", "backward", "update")
                    if s._records.get(phase) is not None},
    }
    lanes = getattr(s, "_open_lanes", None)
    if lanes is not None:
        out["lanes"] = (lanes.closed, [(lane.spec.text, lane.result, _fingerprint(lane.session)) for lane in lanes.lanes])
    return out


def _record_bytes(record) -> bytes:
    if hasattr(record, "value") and not hasattr(record, "grads"):
        return np.float64(record.value).tobytes()
    if hasattr(record, "outputs"):
        return b"".join(np.asarray(o).tobytes() for o in record.outputs)
    if hasattr(record, "grads"):
        return b"".join(np.asarray(g).tobytes() for g in record.grads.values())
    return b"".join(np.asarray(u.new).tobytes() for u in record.params.values()) + repr(record.optimizer).encode()


def _reference(commands, upto_step: int):
    """A fresh session that ran only the lesson's first `upto_step` steps."""
    runner = Runner(gdstep.open("linear"))
    for step in split_steps(commands)[:upto_step]:
        for command in step:
            assert runner.execute(command).ok
    return runner


def test_split_steps_end_at_each_say():
    commands = parse_script(LESSON)
    steps = split_steps(commands)
    assert [[c.name for c in step] for step in steps] == [
        ["say"], ["watch", "step", "say"], ["set", "break", "run", "say"], ["lanes", "lanes", "say"],
        ["next", "expect", "say"], ["set", "step", "expect"]]
    plain = parse_script("step\nrun max 3\nexpect step > 1\n")
    assert [len(step) for step in split_steps(plain)] == [1, 1, 1]


def test_lesson_plays_step_by_step_and_says_where_it_is():
    runner = Runner(gdstep.open("linear"))
    player = LessonPlayer(runner, parse_script(LESSON))
    assert (player.where, player.finished) == ("0 of 6", False)
    first = player.advance()
    assert first.narration == "The model starts at w = 0." and player.where == "1 of 6"
    second = player.advance()
    assert second.narration == f"After three steps the loss is {runner.session.loss_value:.4f}."
    for _ in range(4):
        advance = player.advance()
        assert not advance.problems, [o.message for o in advance.problems]
    assert player.finished and player.where == "6 of 6"
    assert player.narration == "Half an iteration: loss ran."
    assert player.advance().outcomes == ()              # past the end: nothing runs


@pytest.mark.parametrize("explore", [EXPLORE, BRANCH, SHORTER], ids=["explore", "branch", "shorter"])
@pytest.mark.parametrize("explore_after", [1, 2, 3, 4, 5])
def test_resume_after_exploring_is_exact(explore_after, explore):
    commands = parse_script(LESSON)
    runner = Runner(gdstep.open("linear"))
    player = LessonPlayer(runner, commands)
    for _ in range(explore_after):
        player.advance()
    lines, watches = list(runner.lines), [w.text for w in runner.watches]
    for text in explore:
        assert runner.execute_line(text).ok
        player.leave()
    if explore_after > 1:
        assert _fingerprint(runner.session) != _fingerprint(_reference(commands, explore_after).session)
    resumed = player.advance()
    assert resumed.resumed and resumed.outcomes == () and player.where == f"{explore_after} of 6"
    reference = _reference(commands, explore_after)
    assert _fingerprint(runner.session) == _fingerprint(reference.session)
    assert runner.lines == lines == reference.lines and [w.text for w in runner.watches] == watches
    # and the lesson goes on exactly as if nobody had touched it
    player.advance()
    assert _fingerprint(runner.session) == _fingerprint(_reference(commands, explore_after + 1).session)


def test_a_paused_run_undoes_its_step_and_runs_it_again():
    commands = parse_script(LESSON)
    runner = Runner(gdstep.open("linear"))
    player = LessonPlayer(runner, commands)
    player.advance()
    player.advance()
    calls = []
    paused = player.advance(on_phase=lambda: calls.append(1) or len(calls) > 6)     # pause within the run
    assert paused.interrupted and player.where == "2 of 6"
    again = player.advance()
    assert not again.resumed and player.where == "3 of 6"
    assert _fingerprint(runner.session) == _fingerprint(_reference(commands, 3).session)


def test_catalogue_lists_and_finds(tmp_path):
    catalogue = lessons.load()
    assert [lesson.number for lesson in catalogue] == list(range(1, len(catalogue) + 1))
    for lesson in catalogue:
        assert lesson.scenario.is_file() and lesson.script.is_file()
        assert lessons.find(str(lesson.number), catalogue) == lesson == lessons.find(lesson.name, catalogue)
        parse_script(lesson.script.read_text(), str(lesson.script))
    with pytest.raises(GdstepError, match=f"numbered 1 to {len(catalogue)}"):
        lessons.find(str(len(catalogue) + 1), catalogue)
    name = catalogue[0].name
    with pytest.raises(GdstepError, match=f"did you mean {name!r}"):
        lessons.find(name[:-1] + "x" if len(name) > 3 else name + "x", catalogue)


@pytest.mark.parametrize("body, where, message", [
    ("", "lesson", "missing"),
    ("[[lesson]]\ntitle = 't'\nscenario = 'a.toml'\nscript = 'a.gds'\n", "lesson[0].name", "missing"),
    ("[[lesson]]\nname = '3'\ntitle = 't'\nscenario = 'a.toml'\nscript = 'a.gds'\n", "lesson[0].name", "bare number"),
    ("[[lesson]]\nname = 'a'\ntitle = 't'\nscenario = 'b.toml'\nscript = 'a.gds'\n", "lesson[0].scenario", "no such file"),
    ("[[lesson]]\nname = 'a'\ntitle = 't'\nscenario = 'a.toml'\nscript = 'a.txt'\n", "lesson[0].script", ".gds"),
    ("[[lesson]]\nname = 'a'\ntitle = 't'\nscenario = 'a.toml'\nscript = 'a.gds'\nlevel = 2\n", "lesson[0].level", "unknown key"),
    ("[[lesson]]\nname = 'a'\ntitle = 't'\nscenario = 'a.toml'\nscript = 'a.gds'\n" * 2, "lesson[1].name", "earlier lesson"),
    ("[[lesson]\n", "line 1", "invalid TOML"),
])
def test_bad_catalogue_is_one_line(tmp_path, body, where, message):
    (tmp_path / "a.toml").write_text("")
    (tmp_path / "a.gds").write_text("")
    path = tmp_path / "lessons.toml"
    path.write_text(body)
    with pytest.raises(ScenarioError) as e:
        lessons.load(path)
    assert e.value.where.startswith(where) and message in e.value.message and "\n" not in str(e.value)


def test_exploring_after_an_interrupted_step_comes_back_first():
    commands = parse_script(LESSON)
    runner = Runner(gdstep.open("linear"))
    player = LessonPlayer(runner, commands)
    player.advance()
    player.advance()
    calls = []
    assert player.advance(on_phase=lambda: calls.append(1) or len(calls) > 6).interrupted
    runner.execute_line("step 7")
    player.leave()
    back = player.advance()
    assert back.resumed and back.outcomes == () and player.where == "2 of 6"
    assert _fingerprint(runner.session) == _fingerprint(_reference(commands, 2).session)
    player.advance()
    assert _fingerprint(runner.session) == _fingerprint(_reference(commands, 3).session)


def test_command_line_lists_lessons_and_refuses_bad_ones_in_one_line(capsys, tmp_path):
    from gdstep.cli import main
    catalogue = lessons.load()
    assert main(["lesson"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == lessons.listing(catalogue) and len(out) == len(catalogue)
    assert out[0].split()[:2] == ["1", catalogue[0].name]
    for bad, message in ((str(len(catalogue) + 1), f"numbered 1 to {len(catalogue)}"),
                         (catalogue[0].name + "x", f"did you mean {catalogue[0].name!r}")):
        assert main(["lesson", bad]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert main(["serve", "nope"]) == 2 and "no lesson named 'nope'" in capsys.readouterr().err
    script = tmp_path / "bad.gds"
    script.write_text('say "w = {0.weight[9,9]}"\n')
    assert main(["linear", "--script", str(script)]) == 2       # refused before the app opens
    assert f"{script}:1:11: index [9, 9] is out of range" in capsys.readouterr().err


def test_resume_is_exact_on_the_torch_backend():
    pytest.importorskip("torch")
    commands = parse_script(LESSON)

    def fresh():
        return Runner(gdstep.open("linear", backend="torch", dtype="float64"))
    runner = fresh()
    player = LessonPlayer(runner, commands)
    for _ in range(3):
        player.advance()
    for text in BRANCH + ["set optimizer adam lr=0.3", "step 4"]:
        assert runner.execute_line(text).ok
        player.leave()
    assert player.advance().resumed
    reference = fresh()
    for step in split_steps(commands)[:3]:
        for command in step:
            assert reference.execute(command).ok
    assert _fingerprint(runner.session) == _fingerprint(reference.session)

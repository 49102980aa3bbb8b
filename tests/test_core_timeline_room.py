"""A run makes room in the timeline before it takes a checkpoint: the checkpoints held and
the one being taken together stay within the history budget (peak memory: budget, not
budget + one checkpoint)."""

from __future__ import annotations

from gdstep.timeline import Checkpoint, Timeline

SIZE = 100


def checkpoint(step: int) -> Checkpoint:
    return Checkpoint(step, 1, step + 1, 0, None, {"step": step})


def test_make_room_keeps_the_held_checkpoints_and_the_next_within_the_budget():
    timeline = Timeline(lambda backend: SIZE, budget=350, recent=1, interval=16)
    timeline.save(checkpoint(0))
    worst = 0
    for step in range(16, 16 * 40, 16):
        if step % timeline.interval:
            continue
        timeline.make_room()
        worst = max(worst, timeline.nbytes + SIZE)     # held while the next one is being taken
        timeline.save(checkpoint(step))
        assert timeline.nbytes <= timeline.budget
    assert worst <= 350
    # what is kept still serves rewinds: the start, and a checkpoint at or before each step
    assert timeline.at_or_before(0).step == 0
    assert timeline.at_or_before(16 * 39).step in timeline.steps and timeline.interval > 16


def test_without_room_made_the_next_checkpoint_would_go_past_the_budget():
    timeline = Timeline(lambda backend: SIZE, budget=350, recent=1, interval=16)
    held = []
    for step in range(0, 16 * 40, 16):
        if step % timeline.interval == 0:
            held.append(timeline.nbytes + SIZE)
            timeline.save(checkpoint(step))
    assert max(held) > 350          # what make_room prevents


def test_make_room_does_nothing_while_there_is_room():
    timeline = Timeline(lambda backend: SIZE, budget=1000, recent=1, interval=16)
    for step in (0, 16, 32):
        timeline.save(checkpoint(step))
    timeline.make_room()
    assert timeline.steps == [0, 16, 32] and timeline.nbytes == 300 and timeline.interval == 16

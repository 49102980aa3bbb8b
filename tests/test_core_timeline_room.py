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


def _param_bytes(session) -> int:
    return sum(v.numel() * v.element_size() for v in session.backend.params().values())


def test_the_history_budget_holds_the_checkpoints_and_what_measuring_the_updates_keeps():
    """torch: ‖ΔW‖ is measured against a copy of the parameters kept from one update to the
    next. Checkpoints and that copy share the budget: together they stay within it."""
    import gdstep

    probe = gdstep.open("spiral", backend="torch")
    probe.step(3)                                    # the optimizer's state made: full-size checkpoints
    per_checkpoint = probe.backend.checkpoint_nbytes(probe._checkpoint().backend)
    copy = _param_bytes(probe)
    budget = copy + 5 * per_checkpoint
    s = gdstep.open("spiral", backend="torch", history_budget=budget)
    s.run(max_steps=300)
    buffers = s.backend._old_params                 # made by the run's measured updates
    held = sum(b.numel() * b.element_size() for b in buffers)
    assert held == copy == s.backend.update_norms_nbytes
    assert s._timeline.nbytes + held <= budget
    assert s._timeline.budget == budget - copy and s.checkpoint_budget == budget
    assert s.fork()._timeline.budget == budget - copy      # a fork: the same budget, shared alike


def test_numpy_keeps_no_copy_for_the_update_norms_its_checkpoints_have_the_whole_budget():
    import gdstep

    s = gdstep.open("spiral", history_budget=123_456)
    assert s._timeline.budget == 123_456 == s.checkpoint_budget

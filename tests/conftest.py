"""Pilot helpers shared by the app's tests (and the snapshot tests): wait for the driver's
jobs instead of sleeping, type into the prompt, select a parameter, read the log."""

from __future__ import annotations

import asyncio

SIZE = (120, 36)


async def settle(pilot) -> None:
    """Wait until every queued job has run and the screen has caught up (a redraw may queue
    another: a new size after the first frame)."""
    for _ in range(2):
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()


async def until(condition, timeout: float = 10.0) -> None:
    """Yield to the app until `condition()` holds (a run in a worker thread has no message to wait for)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not condition():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.005)


async def press(pilot, *keys: str) -> None:
    """Press keys one by one, each one's jobs done before the next."""
    for key in keys:
        await pilot.press(key)
        await settle(pilot)


async def select(pilot, name: str) -> None:
    """Select a parameter in the model tree, and wait for its frame."""
    from gdstep.tui.model_tree import ModelTree

    pilot.app.query_one(ModelTree).select_parameter(name)
    await pilot.pause()
    assert pilot.app.selection.name == name
    await settle(pilot)


async def command(pilot, text: str) -> None:
    """Open the prompt with `:`, enter a line (set at once: typing it key by key is slow)."""
    await pilot.press("colon")
    pilot.app.query_one("#prompt").value = text
    await pilot.press("enter")


def log_text(app) -> str:
    from gdstep.tui.event_log import EventLog

    return "\n".join(message for _, message in app.query_one(EventLog).messages)


def log_kinds(app) -> list[str]:
    from gdstep.tui.event_log import EventLog

    return [kind for kind, _ in app.query_one(EventLog).messages]

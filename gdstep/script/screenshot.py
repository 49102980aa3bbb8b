"""`screenshot FILE.svg` without a terminal: render the app headless and save its screen."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gdstep.errors import GdstepError


def headless_screenshot(session, path: str | Path, runner=None, size: tuple[int, int] = (120, 36)) -> Path:
    """Open the TUI on `session` off-screen, let it draw, and save an SVG of it."""
    from gdstep.files import atomic_write
    from gdstep.tui.app import make_app

    path = Path(path)
    app = make_app(session, runner=runner) if runner is not None else make_app(session)

    async def shoot() -> str:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            await pilot.pause()
            return app.export_screenshot(title=f"gdstep — {session.scenario.name}")

    try:
        svg = asyncio.run(shoot())
    except RuntimeError as e:
        raise GdstepError(f"screenshot {path}: {e}") from None
    return atomic_write(path, svg)

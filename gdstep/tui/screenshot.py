"""`screenshot FILE.svg` without a terminal: open the app headless on the session, let it
draw, save its screen. The command line hands this to the Runner (`gdstep replay`).

Importing this module does not import Textual; shooting does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gdstep.errors import GdstepError


def headless_screenshot(session, path: str | Path, size: tuple[int, int] = (120, 36)) -> Path:
    """Open the app on `session` off-screen, wait until it has drawn, and save an SVG of it."""
    from gdstep.files import atomic_write
    from gdstep.tui.app import make_app

    path = Path(path)
    app = make_app(session)

    async def shoot() -> str:
        async with app.run_test(size=size) as pilot:
            for _ in range(2):                      # a redraw may queue another (new sizes)
                await app.workers.wait_for_complete()
                await pilot.pause()
            return app.export_screenshot(title=f"gdstep — {session.scenario.name}")

    try:
        svg = asyncio.run(shoot())
    except RuntimeError as e:
        raise GdstepError(f"screenshot {path}: {e}") from None
    return atomic_write(path, svg)

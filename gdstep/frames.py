"""Who called gdstep: the first frame on the stack outside gdstep's own code (or outside
some of its files), for the checks that tell the loop's own calls from gdstep's."""

from __future__ import annotations

import sys
from pathlib import Path

GDSTEP = str(Path(__file__).parent)
"""gdstep's folder: a frame whose file starts with it is gdstep's."""


def first_outside(depth: int, inside) -> object | None:
    """The first frame, from `depth` frames above the caller's, whose file `inside(filename)`
    says is not among the files skipped (None: the stack ends first)."""
    frame = sys._getframe(depth + 1)
    while frame is not None and inside(frame.f_code.co_filename):
        frame = frame.f_back
    return frame


def gdsteps(filename: str) -> bool:
    return filename.startswith(GDSTEP)

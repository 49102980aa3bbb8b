"""Text from strangers made safe to print: control characters stripped, excerpts short.

Scenario names, descriptions, csv headers and unknown keys are cleaned where they are read,
so every printer downstream (the command line, the app, recordings, exports) is safe: no
terminal escape, no line break that plants a command in a recording.
"""

from __future__ import annotations

import re
import unicodedata

# C0 and C1 controls, DEL, and the characters that break or reorder lines and text
# (U+2028/2029 line and paragraph separators, bidirectional overrides and isolates).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")


def unsafe_character(text: str) -> int | None:
    """The index of the first control character in `text` (a tab is allowed), else None."""
    for m in _UNSAFE.finditer(text):
        if m.group() != "\t":
            return m.start()
    return None


def clean(text: str) -> str:
    """`text` without control characters: tabs and line breaks become spaces, the rest go."""
    return _UNSAFE.sub(lambda m: " " if m.group() in "\t\n\r\u2028\u2029" else "", text)


def excerpt(text: str, limit: int = 24) -> str:
    """A short, escaped quotation of file contents for an error message."""
    shown = text[:limit] + ("…" if len(text) > limit else "")
    return repr(shown)


def char_name(ch: str) -> str:
    return f"U+{ord(ch):04X}" + (f" {unicodedata.name(ch)}" if unicodedata.name(ch, "") else "")

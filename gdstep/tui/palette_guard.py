"""A guard for the pinned Textual (8.2.8): PageUp/PageDown pressed in the command palette
before its list has been laid out raise `KeyError: 0` (OptionList._move_page reads the
line of the highlighted option, which a list of zero height has not computed yet). The
guarded version moves nothing until the lines exist."""

from __future__ import annotations

from textual.command import CommandList

_move_page = CommandList._move_page


def _guarded_move_page(self: CommandList, direction) -> None:
    self._update_lines()
    if (self.highlighted or 0) not in self._index_to_line or not self._lines:
        return
    _move_page(self, direction)


def guard_command_list() -> None:
    """Install the guard (idempotent)."""
    CommandList._move_page = _guarded_move_page

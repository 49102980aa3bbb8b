"""Textual's Footer, rebuilt only when the keys it shows change, and fitted to the terminal:
the stock footer where all its keys fit; else the compact style with the keys that fit, the
most needed first (every key stays bound; `?` lists them all). Textual shrinks a footer too
wide for the terminal by squeezing the space out of its keys ("to ends step"), so the width
is planned here rather than left to the layout.

The stock Footer recomposes all its keys whenever the focused widget changes, even when
the keys shown stay the same (opening the `:` prompt); that costs a tenth of a second.
"""

from __future__ import annotations

from itertools import groupby

from textual.app import ComposeResult
from textual.reactive import reactive
from textual.widgets import Footer
from textual.widgets._footer import FooterKey, FooterLabel, KeyGroup

# binding ids, the most needed first; keys not named here come last
PRIORITY = ("lesson", "next", "step", "run", "back", "help", "prompt", "quit", "dismiss", "epoch",
            "to-forward", "save", "gradcheck")
PALETTE_WIDTH = 13             # "▏^p palette ", docked right


def item_width(keys: list[str], description: str, compact: bool) -> int:
    """Columns one footer item takes: a key and its description, or a group's keys and its label."""
    if len(keys) > 1:                                   # " f l b u " then "to end "
        return sum(len(k) for k in keys) + len(keys) + 1 + len(description) + 1
    return len(keys[0]) + len(description) + (2 if compact else 3)


def plan(items: list[tuple[str, list[str], str]], width: int) -> tuple[bool, list[int], bool]:
    """(compact, the items shown by index, the palette shown) for a footer `width` wide; items
    are (binding id, key displays, description). The stock style if everything fits, else the
    compact one with the items that fit, taken in PRIORITY order."""
    full = sum(item_width(keys, text, False) for _, keys, text in items) + PALETTE_WIDTH
    if full <= width:
        return False, list(range(len(items))), True
    rank = {name: k for k, name in enumerate(PRIORITY)}
    order = sorted(range(len(items)), key=lambda i: (rank.get(items[i][0], len(PRIORITY)), i))
    kept, used = [], 0
    for i in order:
        w = item_width(items[i][1], items[i][2], True)
        if used + w <= width:
            kept.append(i)
            used += w
    palette = len(kept) == len(items) and used + PALETTE_WIDTH <= width
    return True, sorted(kept), palette


class KeyFooter(Footer):
    DEFAULT_CSS = """
    KeyFooter.-compact FooterLabel { margin: 0 1 0 0; }
    """
    _shown: tuple | None = None
    _planned: tuple | None = None
    room: reactive[int] = reactive(0)          # the terminal's width, set by the app

    def bindings_changed(self, screen) -> None:
        shown = tuple((binding.key, binding.action, binding.description, enabled)
                      for (_, binding, enabled, _) in screen.active_bindings.values() if binding.show)
        if shown == self._shown and self._bindings_ready:
            return
        self._shown = shown
        super().bindings_changed(screen)

    def watch_room(self) -> None:
        if self._bindings_ready and self.is_attached and self._plan() != self._planned:
            self.call_after_refresh(self.recompose)

    def _items(self) -> list[list[tuple]]:
        """The shown bindings as the stock footer groups them: one list per item."""
        by_action: dict[str, tuple] = {}
        for _, binding, enabled, tooltip in self.screen.active_bindings.values():
            if binding.show and binding.action not in by_action:
                by_action[binding.action] = (binding, enabled, tooltip)
        items = []
        for group, members in groupby(by_action.values(), lambda m: m[0].group):
            members = list(members)
            if group is not None and len(members) > 1:
                items.append(members)
            else:
                items.extend([m] for m in members)
        return items

    def _plan(self):
        items = self._items()
        described = [(members[0][0].id, [self.app.get_key_display(b) for b, _, _ in members],
                      members[0][0].group.description if len(members) > 1 else members[0][0].description)
                     for members in items]
        return (*plan(described, self.room or self.app.size.width), tuple(d[0] for d in described))

    def compose(self) -> ComposeResult:
        if not self._bindings_ready:
            return
        self._planned = self._plan()
        compact, kept, palette = self._planned[:3]
        self.compact = compact
        if not compact:
            yield from super().compose()
            return
        items = self._items()
        for i in kept:
            members = items[i]
            if len(members) > 1:
                with KeyGroup():
                    for binding, enabled, tooltip in members:
                        yield FooterKey(binding.key, self.app.get_key_display(binding), "", binding.action,
                                        disabled=not enabled, tooltip=tooltip or binding.description,
                                        classes="-grouped").data_bind(compact=Footer.compact)
                yield FooterLabel(members[0][0].group.description)
                continue
            binding, enabled, tooltip = members[0]
            yield FooterKey(binding.key, self.app.get_key_display(binding), binding.description, binding.action,
                            disabled=not enabled, tooltip=tooltip or binding.description).data_bind(compact=Footer.compact)
        if palette:
            yield from self._palette_key()

    def _palette_key(self) -> ComposeResult:
        try:
            _, binding, enabled, tooltip = self.screen.active_bindings[self.app.COMMAND_PALETTE_BINDING]
        except KeyError:
            return
        yield FooterKey(binding.key, self.app.get_key_display(binding), binding.description, binding.action,
                        classes="-command-palette", disabled=not enabled,
                        tooltip=binding.tooltip or binding.description)

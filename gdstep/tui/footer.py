"""Textual's Footer, rebuilt only when the keys it shows change, and trimmed to the keys
that fit when the terminal is narrow (every key stays bound; `?` lists them all).

The stock Footer recomposes all its keys whenever the focused widget changes, even when
the keys shown stay the same (opening the `:` prompt); that costs a tenth of a second.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.reactive import reactive
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

NARROW_KEYS = ("lesson", "next", "step", "epoch", "run", "back", "prompt", "help", "quit")  # binding ids


class KeyFooter(Footer):
    _shown: tuple | None = None
    narrow: reactive[bool] = reactive(False, recompose=True)

    def bindings_changed(self, screen) -> None:
        shown = tuple((binding.key, binding.action, binding.description, enabled)
                      for (_, binding, enabled, _) in screen.active_bindings.values() if binding.show)
        if shown == self._shown and self._bindings_ready:
            return
        self._shown = shown
        super().bindings_changed(screen)

    def compose(self) -> ComposeResult:
        if not self.narrow:
            yield from super().compose()
            return
        if not self._bindings_ready:
            return
        keys = []
        for _, binding, enabled, tooltip in self.screen.active_bindings.values():
            if binding.show and binding.id in NARROW_KEYS and binding.action not in {k[0].action for k in keys}:
                keys.append((binding, enabled, tooltip))
        self.styles.grid_size_columns = len(keys)
        for binding, enabled, tooltip in keys:
            yield FooterKey(binding.key, self.app.get_key_display(binding), binding.description, binding.action,
                            disabled=not enabled, tooltip=tooltip or binding.description).data_bind(compact=Footer.compact)

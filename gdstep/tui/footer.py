"""Textual's Footer, rebuilt only when the keys it shows change.

The stock Footer recomposes all its keys whenever the focused widget changes, even when
the keys shown stay the same (opening the `:` prompt); that costs a tenth of a second.
"""

from __future__ import annotations

from textual.widgets import Footer


class KeyFooter(Footer):
    _shown: tuple | None = None

    def bindings_changed(self, screen) -> None:
        shown = tuple((binding.key, binding.action, binding.description, enabled)
                      for (_, binding, enabled, _) in screen.active_bindings.values() if binding.show)
        if shown == self._shown and self._bindings_ready:
            return
        self._shown = shown
        super().bindings_changed(screen)

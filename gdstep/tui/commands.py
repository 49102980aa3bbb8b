"""The command palette (Ctrl+P): every key's action by name, plus "set learning rate…"
and "switch optimizer…"; all of them go through the app like the keys do."""

from __future__ import annotations

import re
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from gdstep.optim import OPTIMIZERS

NUMBER = re.compile(r"(?:lr|learning rate)\D*?(\d+(?:\.\d*)?(?:e-?\d+)?|\.\d+(?:e-?\d+)?)", re.IGNORECASE)


class GdstepCommands(Provider):
    def _commands(self) -> list[tuple[str, object, str]]:
        app = self.app
        out = []
        for binding in app.BINDINGS:
            if binding.action.startswith(("move_element", "quit")) or not binding.tooltip:
                continue
            key = binding.key.split(",")[0]
            out.append((binding.tooltip[0].upper() + binding.tooltip[1:],
                        partial(app.run_action, binding.action), f"key {app.get_key_display(binding.with_key(key))}"))
        out.append(("Set learning rate…", partial(app.open_prompt, "set lr "), "set lr X, from the next iteration"))
        out.append(("Switch optimizer…", partial(app.open_prompt, "set optimizer "),
                    "set optimizer KIND, then hyperparameters as name=value (Tab lists the kinds)"))
        current = app.frame.optimizer if app.frame is not None else ""
        for kind in OPTIMIZERS:
            if kind != current:
                out.append((f"Switch optimizer to {kind}", partial(app.run_command, f"set optimizer {kind}"),
                            f"set optimizer {kind}: fresh optimizer state, the same lr"))
        out.append(("Save the recording as a script…", partial(app.open_prompt, "save "),
                    "save FILE.gds: replays to this state with gdstep replay"))
        out.append(("Show or hide the plots", app.action_toggle_plots, "key p (for narrow terminals)"))
        return out

    async def discover(self) -> Hits:
        for name, callback, help in self._commands():
            yield DiscoveryHit(name, callback, help=help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        found = NUMBER.search(query)
        if found:
            value = repr(float(found.group(1)))
            yield Hit(1.0, f"Set learning rate to {value}", partial(self.app.run_command, f"set lr {value}"),
                      help="from the next iteration")
        for name, callback, help in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help)

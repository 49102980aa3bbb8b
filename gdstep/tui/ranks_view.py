"""The ranks of a paused DDP job in the app: each rank's loss, local gradient (before the
all-reduce) and its distance from the average, who stands out, and each parameter's local
gradients beside the averaged one. It opens over the app when a distributed pause begins;
`R` shows it again. The numbers come from gdstep.distributed.view (the core)."""

from __future__ import annotations

import signal

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class RanksScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    RanksScreen { align: center middle; }
    #ranks-body { width: 90%; height: 80%; border: round $accent; background: $surface; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,R,q", "dismiss", "Close", show=False)]

    def __init__(self, view) -> None:
        super().__init__()
        self.view = view

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="ranks-body") as body:
            body.border_title = f"ranks · {len(self.view.ranks)}"
            body.border_subtitle = "escape closes · R opens again"
            yield Static(self.view.full_text(), id="ranks-text", markup=False)


def make_ranks_app(session, view):
    """The app on the (mirrored) session, with the ranks screen open and on `R`."""
    from gdstep.tui.app import make_app

    app = make_app(session)
    app.bind("R", "show_ranks", description="ranks")
    app.action_show_ranks = lambda: app.push_screen(RanksScreen(view))
    return app


def run_tui_ranks(session, view) -> int:
    """The app until `q`. A SIGTERM (torchrun ends every rank when one dies) ends this rank
    too, with one line: going on would all-reduce with ranks that are gone."""
    from gdstep.distributed.channel import RankLost

    app = make_ranks_app(session, view)
    app.call_later(app.quit_on_sigterm)
    app.call_later(app.action_show_ranks)
    app.run()
    if 128 + signal.SIGTERM in (app.return_code, app.return_value):      # quit_on_sigterm's exit(143)
        raise RankLost("gdstep: SIGTERM while this rank debugged (the launcher ends the job, as when a rank "
                       "has died); this rank ends")
    return app.return_code or 0

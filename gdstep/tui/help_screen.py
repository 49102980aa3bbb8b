"""The `?` screen: what each panel shows, in one line each, and every key the app answers
to, read from the bindings themselves so the list can never fall behind them."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

EXTRA_KEYS = [
    ("↑ ↓", "model tree: choose a parameter"),
    ("click", "a cell of the tensor view selects that element"),
    ("ctrl+p", "command palette: the actions above, set learning rate…, switch optimizer…"),
    ("tab / shift+tab", "move the focus between panels"),
    ("prompt ↑ ↓", "the commands entered before"),
    ("prompt tab", "complete a command, a parameter, a setting or a condition"),
    ("prompt escape", "close the prompt"),
]

PANELS = [
    ("phase bar", "top: forward → loss → backward → update, the next phase lit; where training is (epoch, "
                  "iteration, step), the loss and its change, lr, optimizer, backend"),
    ("model", "left: the layers and their parameters (weight, bias); choose one to see its numbers"),
    ("tensor", "the chosen parameter: W, its gradient ∇W and W_new side by side, coloured by sign and size"),
    ("update / batch", "below it: the update of the chosen element in the optimizer's own terms with the real "
                       "numbers (W_new = W − η·∇W …), or a layer's values for each sample of the batch"),
    ("plots", "right (p below 100 columns): the loss per iteration; v switches the lower one: decision boundary, "
              "loss landscape with the path, loss along the next update, gradient norm per layer"),
    ("events", "bottom: what happened — breakpoints, settings changed, rewinds, commands and their output"),
    ("lesson", "lesson mode: what the lesson says now, and how far it is (3 of 9); space or → goes on"),
]


def key_rows(bindings: list[Binding], describe_key) -> list[tuple[str, str]]:
    """(keys, what they do) for every binding; bindings that share a description (the
    shift+arrow keys) share a row."""
    rows: dict[str, list[str]] = {}
    for b in bindings:
        description = b.tooltip or b.description
        if not description:
            continue
        keys = [describe_key(Binding(k.strip(), "")) for k in b.key.split(",")]
        rows.setdefault(description, []).extend(keys)
    return [(" ".join(dict.fromkeys(keys)), description) for description, keys in rows.items()]


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape,question_mark,q", "dismiss", "Close help", show=False),
    ]

    def __init__(self, bindings: list[Binding]) -> None:
        super().__init__()
        self._keys = bindings

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        self.rows = key_rows(self._keys, self.app.get_key_display) + EXTRA_KEYS
        for keys, description in self.rows[:-len(EXTRA_KEYS)]:
            table.add_row(keys, description)
        table.add_row("", "")
        for keys, description in EXTRA_KEYS:
            table.add_row(keys, description)
        panels = Table.grid(padding=(0, 2))
        panels.add_column(style="bold", no_wrap=True)
        panels.add_column()
        lesson = getattr(self.app, "lesson", None) is not None
        self.panels = [(name, what) for name, what in PANELS if name != "lesson" or lesson]
        for name, description in self.panels:
            panels.add_row(name, description)
        with VerticalScroll(id="help-body") as body:
            body.border_title = "gdstep: the panels and the keys"
            yield Static(panels, id="help-panels")
            body.border_subtitle = "escape closes"
            yield Static(table, id="help-table")
            yield Static(
                "A phase runs forward → loss → backward → update; an iteration is all four on one mini-batch. "
                "Every key that changes the training goes through the script language, so `:save FILE.gds` "
                "replays to the same state (`gdstep replay SCENARIO FILE.gds`).",
                id="help-note",
            )

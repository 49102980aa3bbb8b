"""The batch of the iteration in progress, shown after forward and loss: one column per
sample, read top to bottom through the network (inputs, each layer's output, each tensor
of a model that returns several, the target and the per-sample loss)."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from gdstep.tui import cells
from gdstep.tui.frame import BatchPanel

LABEL = 8


def batch_capacity(width: int) -> int:
    """How many samples fit across."""
    return max(1, (width - LABEL) // (cells.WIDTH + 1))


class BatchView(Static):
    COMPONENT_CLASSES = {
        "batch-view--label",
        "batch-view--input",
        "batch-view--affine",
        "batch-view--activation",
        "batch-view--target",
        "batch-view--loss",
        "batch-view--output",
    }

    panel: reactive[BatchPanel | None] = reactive(None)
    _height = -1

    def watch_panel(self, panel: BatchPanel | None) -> None:
        height = len(panel.rows) + len(panel.notes) if panel else 0
        if height != self._height:
            self._height = height
            self.refresh(layout=True)

    def render(self) -> Text:
        panel = self.panel
        out = Text(no_wrap=True, overflow="crop")
        if panel is None:
            return out
        label = self.get_component_rich_style("batch-view--label")
        if len(panel.samples) == 1:
            self._vectors(panel, out, label)
        else:
            self._columns(panel, out, label)
        for note in panel.notes:
            out.append(f"({note})\n", style=label)
        out.rstrip()
        return out

    def _columns(self, panel: BatchPanel, out: Text, label) -> None:
        """A column per sample: read each one top to bottom through the network."""
        width = max(LABEL, 1 + max((len(row.label) for row in panel.rows), default=0))     # "logvar[0]"
        out.append("sample".ljust(width), style=label)
        out.append("".join(f"#{int(i)}".rjust(cells.WIDTH) + " " for i in panel.samples), style=label)
        out.append("\n")
        group = None
        for row in panel.rows:
            if group is not None and row.group != group:
                out.append("\n")
            group = row.group
            out.append(row.label.ljust(width), style=self.get_component_rich_style(f"batch-view--{row.group}"))
            out.append("".join(text.rjust(cells.WIDTH) + " " for text in cells.row(row.values)))
            out.append("\n")

    def _vectors(self, panel: BatchPanel, out: Text, label) -> None:
        """One sample: a line per layer, its vector across (the textbook's way)."""
        out.append(f"sample #{int(panel.samples[0])}: each line one layer's vector\n", style=label)
        vectors: dict[str, tuple[str, list[float]]] = {}
        for row in panel.rows:
            symbol = row.label.split("[")[0]
            vectors.setdefault(symbol, (row.group, []))[1].append(float(row.values[0]))
        for symbol, (group, values) in vectors.items():
            out.append(symbol.ljust(LABEL), style=self.get_component_rich_style(f"batch-view--{group}"))
            out.append("".join(text.rjust(cells.WIDTH) + " " for text in cells.row(values)))
            out.append("\n")

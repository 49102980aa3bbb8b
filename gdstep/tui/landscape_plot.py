"""The landscape plot: the loss around the weights as a half-block heatmap with contour
bands, a colour bar with the level values, the session's path (• and ◆ now) and each open
lane's path in the lane's colour; the axes and the directions' note below."""

from __future__ import annotations

from rich.console import Group
from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from gdstep.tui.descent_data import LandscapePicture
from gdstep.tui.heatmap import Mark, Scale, colour_bar, picture
from gdstep.tui.plots import _hex, _short, lane_colour, title_fits

PATH_COLOUR = (255, 255, 255)
NOW_COLOUR = (214, 39, 40)
MIN_LINES = 6


class LandscapePlot(Widget):
    picture: reactive[LandscapePicture | None] = reactive(None)
    lanes_in_title = False

    def watch_picture(self, p: LandscapePicture | None) -> None:
        self._title()
        self.border_subtitle = "d: directions · v: next plot" + ("" if p is None or p.fine else " · coarse…")

    def on_resize(self) -> None:
        self._title()

    def _title(self) -> None:
        """The kind of slice and the marks' key; the lanes' numbers too where the whole title
        fits on the border, else they go on a line of their own below the picture."""
        p = self.picture
        if p is None or p.landscape is None:
            self.border_title = "landscape"
            return
        kind = p.landscape.directions
        title = ("loss surface" if kind == "parameters" else f"landscape {kind}") + \
            f" [{_hex(PATH_COLOUR)}]•[/]path [{_hex(NOW_COLOUR)}]◆[/]now"
        lanes = "".join(f" [{_hex(lane_colour(lane.number))}]◆[/]{lane.number}" for lane in p.lanes)
        self.lanes_in_title = bool(lanes) and title_fits(title + lanes, self.size.width)
        self.border_title = title + (lanes if self.lanes_in_title else "")

    def render(self) -> Group | Text:
        p = self.picture
        if p is None:
            return Text("computing the landscape…", style="italic")
        if p.landscape is None:
            return Text(p.error, style="italic")
        ls = p.landscape
        width, height = self.content_size
        width = max(8, width)
        scale = Scale.of(ls.loss)
        bar = colour_bar(scale, width - 5)
        bar.append(" log" if scale.log else "", style="dim")
        axes = [Text(axis_text(arrow, name, v[0], v[-1], width), style="dim", no_wrap=True, overflow="ellipsis")
                for arrow, name, v in (("→", ls.axes[0], ls.alphas), ("↑", ls.axes[1], ls.betas))]
        notes = [ls.note] + ([f"({p.fallback} needs 3 steps: random directions until then)"] if p.fallback else [])
        notes = [Text(note, style="dim italic") for note in notes]
        if ls.off_plot:                   # before the notes: the path left the plot (a diverged run)
            notes.insert(0, Text(ls.off_plot, style="bold"))
        legends = []
        for lane in p.lanes:
            legend = Text.from_markup(f"[{_hex(lane_colour(lane.number))}]◆[/] {lane.label}")
            legend.no_wrap, legend.overflow = True, "ellipsis"
            legends.append(legend)

        def rows(texts) -> int:
            return sum(1 if t.no_wrap else -(-len(t.plain) // width) for t in texts)

        # Room for the heatmap first (6 lines at least), then the lanes' key (their settings,
        # else only their numbers: "lanes ◆1 ◆2 ◆3"), then notes: in full, else cut, else
        # left out while lanes need their key; the key too where the heatmap would have 3 lines.
        if height - rows(axes + [bar] + notes + legends) < MIN_LINES:
            legends = [lane_key(p.lanes)] if p.lanes and not self.lanes_in_title else []
        if height - rows(axes + [bar] + legends + notes) < MIN_LINES:
            for note in notes:
                note.no_wrap, note.overflow = True, "ellipsis"
        while legends and notes and height - rows(axes + [bar] + legends + notes) < MIN_LINES:
            notes.pop()
        if height - rows(axes + [bar] + legends + notes) < 3:
            legends = []
        below = axes + [bar] + legends + notes
        lines = max(2, height - rows(below))
        marks = tuple(Mark(lane.points, lane_colour(lane.number), "·", "◆") for lane in p.lanes)
        marks += (Mark(ls.path, PATH_COLOUR, "•", "◆", NOW_COLOUR),)
        heat = picture(ls.loss, ls.alphas, ls.betas, lines, width, scale, marks)
        return Group(heat, *below)


def lane_key(lanes) -> Text:
    """Each lane's mark in its colour with its number, on one line (the loss plot's legend
    has their settings, in the same colours)."""
    key = Text("lanes", style="dim", no_wrap=True, overflow="ellipsis")
    for lane in lanes:
        key.append(" ◆", style=_hex(lane_colour(lane.number)))
        key.append(str(lane.number))
    return key


def axis_text(arrow: str, name: str, lo: float, hi: float, width: int) -> str:
    """"→ w[0] -1.2 … 3.4"; the range before the name where both do not fit (the name is cut, not the numbers)."""
    text = f"{arrow} {name} {_short(lo)} … {_short(hi)}"
    return text if len(text) <= width else f"{arrow} {_short(lo)} … {_short(hi)} {name}"

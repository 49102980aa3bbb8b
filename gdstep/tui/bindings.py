"""The app's keys, each with a description (the footer, the `?` screen, the palette) and
an id. The actions they name are the app's."""

from __future__ import annotations

from textual.binding import Binding

RUN_TO = Binding.Group("to end")
ELEMENT = Binding.Group("element")

BINDINGS = [
    Binding("n,space", "next_phase", "next", key_display="n", id="next", tooltip="run the next phase"),
    Binding("f", "run_to('forward')", "fwd", group=RUN_TO, id="to-forward", tooltip="run to the end of forward"),
    Binding("l", "run_to('loss')", "loss", group=RUN_TO, id="to-loss", tooltip="run to the end of loss"),
    Binding("b", "run_to('backward')", "bwd", group=RUN_TO, id="to-backward", tooltip="run to the end of backward"),
    Binding("u", "run_to('update')", "upd", group=RUN_TO, id="to-update", tooltip="run to the end of update"),
    Binding("s", "step", "step", id="step", tooltip="one iteration (step)"),
    Binding("e", "epoch", "epoch", id="epoch", tooltip="one epoch"),
    Binding("r", "run_pause", "run", id="run", tooltip="run on until a breakpoint, or pause the run"),
    Binding("left", "back", "back", id="back", tooltip="back one phase (rewind)"),
    Binding("question_mark", "help", "help", id="help", tooltip="help: every key"),
    Binding("colon", "prompt", "cmd", id="prompt", tooltip="command prompt (the script language)"),
    Binding("g", "gradcheck", "gradcheck", id="gradcheck", tooltip="gradient check of the selected element"),
    Binding("x", "dismiss", "mute", id="dismiss",
            tooltip="attach mode, at a pause: break no more on what paused here (that breakpoint, or non-finite "
                    "values); on a scenario, :unbreak N disables breakpoint N"),
    Binding("w", "save_recording", "save", id="save", tooltip="save the session so far as a script (opens the prompt)"),
    Binding("q", "quit", "quit", id="quit", tooltip="quit"),
    Binding("shift+up", "move_element(-1, 0)", "↑", group=ELEMENT, id="element-up", show=False,
            tooltip="move the selected element (shift + arrows)"),
    Binding("shift+down", "move_element(1, 0)", "↓", group=ELEMENT, id="element-down", show=False,
            tooltip="move the selected element (shift + arrows)"),
    Binding("shift+left", "move_element(0, -1)", "←", group=ELEMENT, id="element-left", show=False,
            tooltip="move the selected element (shift + arrows)"),
    Binding("shift+right", "move_element(0, 1)", "→", group=ELEMENT, id="element-right", show=False,
            tooltip="move the selected element (shift + arrows)"),
    Binding("v", "next_plot", "plot", id="next-plot", show=False,
            tooltip="next plot: decision boundary / landscape / loss along the update / health (‖ΔW‖/‖W‖, ‖∇W‖, histograms)"),
    Binding("d", "cycle_directions", "directions", id="directions", show=False,
            tooltip="the landscape's directions: pca / random / gradient"),
    Binding("p", "toggle_plots", "plots", id="plots", show=False, tooltip="show or hide the plots (narrow terminals)"),
]

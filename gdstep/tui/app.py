"""The gdstep app: one screen that draws Frames, keys that ask the driver for jobs.

The app holds no training state and never reads the session: the SessionDriver
(driver.py) runs every job on its worker, through the script Runner (so `:save FILE.gds`
replays to the same state), and posts the Frames this app draws (FrameReady, JobDone).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any, Callable

from textual import on
from textual.app import App, ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import var
from textual.widgets import ContentSwitcher, Input
from textual.worker import Worker, WorkerState

from gdstep.breakpoints import dismiss_last_break
from gdstep.fmt import index_text
from gdstep.tui.arithmetic_view import ArithmeticView, GradcheckView
from gdstep.tui.batch_view import BatchView
from gdstep.tui.bindings import BINDINGS
from gdstep.tui.commands import GdstepCommands
from gdstep.tui.descent_data import lower_plots
from gdstep.tui.drawing import draw, measure
from gdstep.tui.driver import SessionDriver
from gdstep.tui.event_log import EventLog
from gdstep.tui.footer import KeyFooter
from gdstep.tui.frame import Frame, Selection
from gdstep.tui.help_screen import HelpScreen
from gdstep.tui.messages import FrameReady, Job, JobDone, JobStarted, Running
from gdstep.tui.model_tree import ModelTree
from gdstep.tui.palette_guard import guard_command_list
from gdstep.tui.phase_bar import PhaseBar
from gdstep.landscape import DIRECTIONS
from gdstep.tui.landscape_plot import LandscapePlot
from gdstep.tui.health_plot import HealthPlot
from gdstep.tui.plots import BoundaryPlot, LinePlot, LossPlot
from gdstep.tui.prompt import CommandPrompt, CompletionList, PromptFirst
from gdstep.tui.tensor_view import TensorView

guard_command_list()

LAYER_SHAPE = (10**6, 10**6)        # a layer's output is measured as a large tensor: the view fills


class GdstepApp(PromptFirst, App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "gdstep"
    COMMANDS = App.COMMANDS | {GdstepCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide"), (160, "-huge")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (44, "-tall")]
    ENABLE_COMMAND_PALETTE = True
    BINDINGS = BINDINGS

    running: var[bool] = var(False)      # jobs asked for by the user are not all done yet
    selection: var[Selection] = var(Selection)
    show_plots: var[bool] = var(False)

    def __init__(self, session, runner=None, *, timestamps: bool = True, frame_interval: float = 0.25,
                 plot_interval: float = 1.0) -> None:
        super().__init__()
        self.driver = SessionDriver(self, session, runner, frame_interval=frame_interval, plot_interval=plot_interval)
        self.model = self.driver.model
        self.timestamps = timestamps
        self.frame: Frame | None = None
        self._measured: tuple[int, ...] | None = None      # the shape the views were last measured for
        self._saved_lines = 0                 # the recording's length at the last save
        self._quit_asked = False
        self._plot_ids = lower_plots(session, self.model.boundary)

    @property
    def runner(self):
        """The script Runner every key goes through; its `lines` are the recording."""
        return self.driver.runner

    def compose(self) -> ComposeResult:
        yield PhaseBar(id="phase-bar")
        with Horizontal(id="main"):
            tree = ModelTree(self.model, id="tree")
            tree.border_title = "model"
            yield tree
            with Vertical(id="center"):
                yield TensorView(id="tensor")
                with ContentSwitcher(initial="arithmetic-box", id="details"):
                    with VerticalScroll(id="arithmetic-box", classes="box"):
                        yield ArithmeticView(id="arithmetic")
                    with VerticalScroll(id="batch-box", classes="box"):
                        yield BatchView(id="batch")
            with Vertical(id="plots"):
                yield LossPlot(id="loss-plot", classes="plot")
                with ContentSwitcher(initial=self._plot_ids[0], id="plot-switcher"):
                    if self.model.boundary:
                        yield BoundaryPlot(id="boundary-plot", classes="plot")
                    yield LandscapePlot(id="landscape-plot", classes="plot")
                    yield LinePlot(id="line-plot", classes="plot")
                    yield HealthPlot(id="health-plot", classes="plot")
        log = EventLog(timestamps=self.timestamps, id="log")
        log.border_title = "events"
        yield log
        yield CompletionList(id="completions")
        yield CommandPrompt(self.driver.complete, id="prompt")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.title = f"gdstep — {self.model.scenario}"
        tree = self.query_one(ModelTree)
        tree.focus()
        if self.model.first_parameter is not None:
            self.selection = Selection(self.model.first_parameter)
            tree.select_parameter(self.model.first_parameter)
        self.driver.selection = self.selection
        self.driver.wanted = self._pictures_shown()
        self._size_views(redraw=False)
        self.draw(self.driver.start())
        self.call_after_refresh(self._layout_changed)
        description = self.model.description
        self.query_one(EventLog).add("info", f"{self.model.scenario}" + (f" — {description}" if description else ""))

    # -- what the driver says -------------------------------------------------------------------

    def on_frame_ready(self, message: FrameReady) -> None:
        self.draw(message.frame)
        self.call_after_refresh(self.driver.drawn)

    def on_running(self, message: Running) -> None:
        self.running = message.running

    def on_job_started(self, message: JobStarted) -> None:
        self.query_one(EventLog).add("command", f"› {message.job.text}", when=message.when)

    def on_job_done(self, message: JobDone) -> None:
        job, outcome = message.job, message.outcome
        log = self.query_one(EventLog)
        if message.frame is not None:
            self.draw(message.frame)
        if message.error is not None:
            self.log_error(f"{job.text}: {message.error}")
        elif outcome is not None:
            log.add_outcome(job.text, outcome, echo=job.echo, run=job.kind == "run")
            if outcome.ok and job.text.lstrip(":").split(" ", 1)[0] == "save":
                self._saved_lines, self._quit_asked = len(self.runner.lines), False
            if not outcome.ok:
                self.bell()
            if outcome.gradcheck is not None and message.frame is not None:
                self.query_one(ArithmeticView).gradcheck = GradcheckView.of(outcome.gradcheck, message.frame.position)
        self.driver.reported(job)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """A worker that failed (a job's own failure comes in its JobDone): the log says so."""
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.log_error(f"{event.worker.name}: {type(error).__name__}: {error}")

    def log_error(self, message: str) -> None:
        self.query_one(EventLog).add("error", message)
        self.notify(message.splitlines()[-1][:200], title="error", severity="error")

    # -- drawing ----------------------------------------------------------------------------------

    def draw(self, frame: Frame, running: bool | None = None) -> None:
        """Hand a Frame to the widgets (`running`: what the phase bar says, else whether
        the user's jobs are all done)."""
        self.frame = frame
        draw(self, frame, self.running if running is None else running)
        panel = frame.tensor
        if self.selection.layer is not None and panel is not None and panel.fitted != self._measured:
            self.call_after_refresh(self._size_views)        # a layer's batch: measured now it is known

    def watch_running(self, running: bool) -> None:
        for bar in self.query(PhaseBar).results():
            bar.running = running

    def watch_show_plots(self, show: bool) -> None:
        self.screen.set_class(show, "-show-plots")

    def watch_selection(self, old: Selection, new: Selection) -> None:
        if not self.is_mounted or self.frame is None:
            return
        if (old.name, old.layer) != (new.name, new.layer):
            self._size_views(redraw=False)
        arithmetic = self.query_one(ArithmeticView)
        if arithmetic.gradcheck is not None and old != new:
            arithmetic.gradcheck = None              # it was of the element selected before
        self.driver.show(new)

    def _size_views(self, redraw: bool = True) -> None:
        """Tell the driver how much the views show (drawing.py: `measure`)."""
        shape = self.model.shapes.get(self.selection.name)
        if self.selection.layer is not None:     # the batch's shape, once a frame has shown it
            panel = self.frame.tensor if self.frame is not None else None
            shape = panel.fitted if panel is not None and panel.name == f"layer {self.selection.layer}" \
                else LAYER_SHAPE
        self._measured = shape
        self._fit_tensor_height(shape)
        layout = measure(self, shape, self.driver.layout)
        if redraw:
            self.driver.resize(layout)
        else:
            self.driver.layout = layout

    def _fit_tensor_height(self, shape: tuple[int, ...] | None) -> None:
        """The tensor view as tall as its tensor needs, up to 3/5 of the centre column (the
        arithmetic or the batch below gets the rest): no empty lines, no wasted rows."""
        center = self.query_one("#center").size.height
        if shape is None or center <= 0:
            return
        tensor = self.query_one(TensorView)
        height = tensor.wanted_height(shape, max(8, center * 3 // 5))
        if tensor.styles.height is None or tensor.styles.height.value != height:
            tensor.styles.height = height

    @on(TensorView.Resized)
    def _layout_changed(self) -> None:
        if self.frame is not None:
            self._size_views()

    def on_resize(self, event) -> None:
        footer = self.query_one(KeyFooter)
        footer.room = event.size.width                   # the keys that fit; `?` lists every key
        if self.frame is not None:
            self.call_after_refresh(self._layout_changed)

    # -- selection ------------------------------------------------------------------------------

    @on(ModelTree.ParameterSelected)
    def _parameter_selected(self, event: ModelTree.ParameterSelected) -> None:
        if event.name != self.selection.name:
            self.selection = Selection(event.name)

    @on(ModelTree.LayerSelected)
    def _layer_selected(self, event: ModelTree.LayerSelected) -> None:
        if event.layer != self.selection.layer:
            self.selection = Selection(layer=event.layer)

    @on(TensorView.CellClicked)
    def _cell_clicked(self, event: TensorView.CellClicked) -> None:
        self.selection = Selection(self.selection.name, event.row, event.col, self.selection.layer)

    def action_move_element(self, drow: int, dcol: int) -> None:
        sel = self.selection
        if sel.name is not None:
            self.selection = self.model.clamp(Selection(sel.name, sel.row + drow, sel.col + dcol))
        elif sel.layer is not None:              # the builder clamps to the batch it shows
            panel = self.frame.tensor if self.frame is not None else None
            rows, cols = panel.shape[:2] if panel is not None and len(panel.shape) >= 2 else (1, 1)
            self.selection = Selection(None, min(max(sel.row + drow, 0), rows - 1),
                                       min(max(sel.col + dcol, 0), cols - 1), sel.layer)

    # -- actions: everything that changes the session is a job for the driver -------------------

    def _unless_running(self, job: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        """Ask the driver for a job, unless a run is going: r pauses it first."""
        if self.driver.running_a_run:
            self.notify("A run is going: press r to pause it first.", title="running", timeout=2)
        else:
            job(*args, **kwargs)

    def run_command(self, text: str, echo: bool = True) -> None:
        """Run one line of the script language (the `:` prompt, the palette). `landscape
        DIRECTIONS` also draws the landscape plot with those directions."""
        words = text.split()
        if words[:1] == ["landscape"] and not self.driver.running_a_run:
            chosen = next((w for w in words[1:] if w in DIRECTIONS), None)
            if chosen is not None and chosen != self.driver.directions:
                self.driver.want(self.driver.wanted, chosen)
        self._unless_running(self.driver.execute, text, echo=echo)

    def action_cycle_directions(self) -> None:
        """The landscape's directions: pca → random → gradient → pca."""
        directions = DIRECTIONS[(DIRECTIONS.index(self.driver.directions) + 1) % len(DIRECTIONS)]
        self.driver.want(self.driver.wanted, directions)
        self.notify(f"landscape directions: {directions}", title="landscape", timeout=2)

    def _pictures_shown(self) -> frozenset[str]:
        """The descent picture in the plot switcher now, which the driver keeps computed."""
        current = self.query_one("#plot-switcher", ContentSwitcher).current
        return frozenset({"landscape-plot": {"landscape"}, "line-plot": {"line"}}.get(current or "", set()))

    def action_next_phase(self) -> None:
        self._unless_running(self.driver.execute, "next", kind="command")

    def action_run_to(self, phase: str) -> None:
        self._unless_running(self.driver.run_to, phase)

    def action_step(self) -> None:
        self._unless_running(self.driver.execute, "step")

    def action_epoch(self) -> None:
        self._unless_running(self.driver.execute, "epoch")

    def action_back(self) -> None:
        self._unless_running(self.driver.execute, "back")

    def action_run_pause(self) -> None:
        if self.driver.running:
            self.driver.pause()
        else:
            self.driver.run()

    def action_gradcheck(self) -> None:
        selected = self.model.element(self.selection)
        if selected is None:
            self.notify("Select a parameter first.", timeout=2)
            return
        name, index = selected
        self.run_command(f"gradcheck {name}{index_text(index)}", echo=False)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """`x` (break no more) answers a training loop's pauses: attach mode only."""
        return (action != "dismiss" or self.driver.session.attached) and super().check_action(action, parameters)

    def action_dismiss(self) -> None:
        """Break no more on what caused this pause; the event log says what was dismissed."""
        session = self.driver.session
        self._unless_running(self.driver.submit, Job("dismiss", lambda on_phase: dismiss_last_break(session)))

    def action_prompt(self) -> None:
        self.open_prompt("")

    def action_save_recording(self) -> None:
        """The prompt, filled with a save command to edit or confirm with enter."""
        self.open_prompt(f"save {Path(self.model.file).stem or 'session'}-session.gds")

    def open_prompt(self, text: str = "") -> None:
        self.query_one(CommandPrompt).open(text)

    @on(CommandPrompt.Closed)
    def _prompt_closed(self) -> None:
        self.query_one(CommandPrompt).close()
        self.query_one(ModelTree).focus()

    @on(CommandPrompt.Choices)
    def _choices(self, event: CommandPrompt.Choices) -> None:
        self.query_one(CompletionList).show(event.choices, event.current)

    @on(Input.Submitted, "#prompt")
    def _prompt_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        prompt = self.query_one(CommandPrompt)
        prompt.history.add(text)
        if not prompt.is_open:                    # not reopened by keys typed since
            self._prompt_closed()
        if text:
            self.run_command(text.lstrip(":"))

    def action_help(self) -> None:
        self.push_screen(HelpScreen(list(self.BINDINGS)))

    def action_next_plot(self) -> None:
        switcher = self.query_one("#plot-switcher", ContentSwitcher)
        ids = self._plot_ids
        switcher.current = ids[(ids.index(switcher.current) + 1) % len(ids)] if switcher.current in ids else ids[0]
        self.driver.want(self._pictures_shown())
        self.call_after_refresh(self._layout_changed)

    def action_toggle_plots(self) -> None:
        if self.size.width >= 100:               # the plots are on screen already: say so
            self.notify("The plots are already shown beside the centre (p swaps them in below 100 columns); "
                        "v switches the lower plot.", title="plots", timeout=4)
            return
        self.show_plots = not self.show_plots
        self.call_after_refresh(self._layout_changed)

    def quit_on_sigterm(self) -> None:
        """SIGTERM quits as `q` does, so the terminal leaves the alternate screen and mouse
        tracking (the event loop's own handler: it wakes the loop, a plain one would not),
        with exit code 143 as the command line's own SIGTERM."""
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: self.exit(return_code=128 + signal.SIGTERM))

    async def action_quit(self) -> None:
        """Quit; once, when the recording has commands not saved, say so first (q again quits)."""
        unsaved = len(self.runner.lines) - self._saved_lines
        if unsaved > 0 and not self._quit_asked:
            self._quit_asked = True
            message = (f"{unsaved} command{'s' if unsaved != 1 else ''} not saved: w saves the session as a "
                       "script; q again quits without saving" + (" and lets your loop go on"
                                                                 if self.driver.session.attached else ""))
            self.query_one(EventLog).add("info", message)
            self.notify(message, title="quit?", severity="warning", timeout=6)
            return
        self.driver.pause()
        self.exit(0)


def make_app(session, runner=None, *, timestamps: bool = True, **options: Any) -> GdstepApp:
    """The app on a Session: the one factory for the command line, tests and screenshots."""
    return GdstepApp(session, runner, timestamps=timestamps, **options)


def run_tui(session) -> int:
    """Run the app in the terminal; the exit code (0 on a clean quit)."""
    app = make_app(session)
    app.call_later(app.quit_on_sigterm)
    app.run()
    return app.return_code or 0

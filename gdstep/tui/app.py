"""The gdstep app: one screen that renders the Session, keys that drive it.

The app holds no training state. Every key that changes the session goes through the
script Runner (so `:save FILE.gds` replays to the same state), on one thread worker that
runs jobs in order; while a job runs, the worker sends a Snapshot a few times a second and
the widgets draw it. Only the worker touches the session while it runs; when nothing runs,
the UI thread may take a Snapshot itself (moving the element cursor).
"""

from __future__ import annotations

import threading
import traceback
from collections import deque
from pathlib import Path
from time import monotonic
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import var
from textual.widgets import ContentSwitcher, Input
from textual.worker import Worker, WorkerState, get_current_worker

from gdstep.fmt import index_text
from gdstep.tui.arithmetic_view import ArithmeticView, GradcheckView
from gdstep.tui.batch_view import BatchView, batch_capacity
from gdstep.tui.commands import GdstepCommands
from gdstep.tui.event_log import EventLog
from gdstep.tui.footer import KeyFooter
from gdstep.tui.help_screen import HelpScreen
from gdstep.tui.messages import Frame, Job, JobDone
from gdstep.tui.model_tree import ModelTree
from gdstep.tui.phase_bar import PhaseBar
from gdstep.tui.plot_data import BoundaryMaker, SurfaceMaker, two_numbers
from gdstep.tui.plots import BoundaryPlot, GradNormPlot, LossPlot, SurfacePlot
from gdstep.tui.prompt import CommandPrompt
from gdstep.tui.snapshot import Selection, Snapshot, Snapshotter, clamp_selection, element_index
from gdstep.tui.tensor_view import TensorView

RUN_TO = Binding.Group("to end")
ELEMENT = Binding.Group("element")
LONG_COMMANDS = ("run", "step", "epoch", "next")


class GdstepApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "gdstep"
    COMMANDS = App.COMMANDS | {GdstepCommands}
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    ENABLE_COMMAND_PALETTE = True

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
                tooltip="next plot: decision boundary / loss surface / ‖∇W‖"),
        Binding("p", "toggle_plots", "plots", id="plots", show=False, tooltip="show or hide the plots (narrow terminals)"),
    ]

    running: var[bool] = var(False)      # jobs asked for by the user are not all done yet
    selection: var[Selection] = var(Selection)
    show_plots: var[bool] = var(False)

    def __init__(self, session, runner=None, *, timestamps: bool = True, frame_interval: float = 0.25,
                 plot_interval: float = 1.0) -> None:
        super().__init__()
        from gdstep.script import Runner

        self.session = session
        self.runner = runner if runner is not None else Runner(session, screenshot=self.screenshot)
        self.timestamps = timestamps
        self.frame_interval = frame_interval
        self.plot_interval = plot_interval
        self.snapshotter = Snapshotter(session)
        self.boundary_maker = BoundaryMaker(session) if BoundaryMaker.supported(session) else None
        self.surface_maker = SurfaceMaker(session, two_numbers(session)) if SurfaceMaker.supported(session) else None
        self.snapshot: Snapshot | None = None
        self._plot_ids = [plot_id for plot_id, maker in (("boundary-plot", self.boundary_maker),
                                                          ("surface-plot", self.surface_maker)) if maker] + ["grad-plot"]
        self._jobs: deque[Job] = deque()
        self._lock = threading.Lock()
        self._draining = False           # the worker is touching the session
        self._open_jobs = 0              # user jobs submitted and not yet reported
        self._current: Job | None = None
        self._pause = threading.Event()
        self._frame_drawn = threading.Event()
        self._dirty = False
        self._next_frame = 0.0
        self._next_plot = 0.0
        self._worker: Worker | None = None
        self._ui_thread = threading.get_ident()
        self._boundary_grid = (64, 32)

    # -- layout ---------------------------------------------------------------------------------

    # -- keys typed ahead of the prompt ------------------------------------------------------
    # Keys arrive in a burst: `:` opens the prompt and moves the focus while the keys after it
    # already wait in the old widget's queue, then bubble up here. While the prompt is open the
    # app's single-key bindings are off, so they cannot step or run; a printable key that gets
    # here was typed for the prompt (the prompt takes printable keys itself, so none of its own
    # arrive), and enter and backspace find the prompt's own bindings, the focus being there.

    def _prompt_is_open(self) -> bool:
        try:
            return self.query_one(CommandPrompt).has_class("-open")
        except Exception:
            return False

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if len(action) and action not in ("quit", "command_palette") and self._prompt_is_open():
            binding_actions = {b.action.split("(")[0] for b in self.BINDINGS if isinstance(b, Binding)}
            if action in binding_actions:
                return False
        return True

    async def on_key(self, event) -> None:
        if not self._prompt_is_open():
            return
        prompt = self.query_one(CommandPrompt)
        if event.is_printable:
            event.stop()
            prompt.insert_text_at_cursor(event.character)
        elif self.focused is not prompt and event.key in ("enter", "backspace"):
            event.stop()                 # the prompt's bindings, before its focus arrived
            if event.key == "enter":
                await prompt.action_submit()
            else:
                prompt.action_delete_left()

    def compose(self) -> ComposeResult:
        yield PhaseBar(id="phase-bar")
        with Horizontal(id="main"):
            tree = ModelTree(self.session, id="tree")
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
                    if self.boundary_maker is not None:
                        yield BoundaryPlot(id="boundary-plot", classes="plot")
                    if self.surface_maker is not None:
                        yield SurfacePlot(id="surface-plot", classes="plot")
                    yield GradNormPlot(id="grad-plot", classes="plot")
        log = EventLog(timestamps=self.timestamps, id="log")
        log.border_title = "events"
        yield log
        yield CommandPrompt(self.complete, id="prompt")
        yield KeyFooter()

    def on_mount(self) -> None:
        self._ui_thread = threading.get_ident()
        self.title = f"gdstep — {self.session.scenario.name}"
        tree = self.query_one(ModelTree)
        tree.focus()
        if tree.first_parameter is not None:
            self.selection = Selection(tree.first_parameter)
            tree.select_parameter(tree.first_parameter)
        self._size_views()
        self._apply(self.snapshotter.take(self.selection))
        self._submit(Job("refresh", lambda on_phase: None, kind="refresh"))
        self.call_after_refresh(self._layout_changed)

    # -- the session worker ---------------------------------------------------------------------

    def _submit(self, job: Job) -> None:
        if job.kind != "refresh":
            self._pause.clear()
            self._open_jobs += 1
            self.running = True
        with self._lock:
            self._jobs.append(job)
        self._start_worker()

    def _start_worker(self) -> None:
        """Start the worker for the queued jobs, unless one is running, or still finishing
        (exclusive would cancel it: its StateChanged starts the next instead)."""
        with self._lock:
            if self._draining or not self._jobs or (self._worker is not None and not self._worker.is_finished):
                return
            self._draining = True
        self._worker = self._drain()

    @work(thread=True, exclusive=True, group="session", exit_on_error=False, name="session")
    def _drain(self) -> None:
        """Run the queued jobs in order; after each, send its outcome and a Snapshot."""
        worker = get_current_worker()
        try:
            while not worker.is_cancelled:
                with self._lock:
                    if not self._jobs:
                        self._draining = False
                        return
                    job = self._jobs.popleft()
                self._current = job
                self._next_frame = monotonic() + self.frame_interval
                outcome = error = None
                try:
                    outcome = job.call(self._on_phase)
                except Exception:          # a bug, not a user mistake: report it, keep going
                    error = traceback.format_exc(limit=-3).strip()
                if job.kind != "run":
                    self.snapshotter.invalidate()
                snapshot = self._take(plots=True)
                self._next_plot = monotonic() + self.plot_interval
                self.post_message(JobDone(job, outcome, error, snapshot, self.session.position))
        finally:
            self._current = None
            with self._lock:
                self._draining = False

    def _on_phase(self) -> bool:
        """Called by the session after every phase of a job, on the worker thread: True pauses."""
        if self._pause.is_set() or (self._worker is not None and self._worker.is_cancelled):
            return True
        if self.surface_maker is not None and self.session.phase_due == "forward":
            self.surface_maker.observe()     # the path, one point per step
        now = monotonic()
        # Frames at iteration boundaries, so a run shows whole iterations (the update and
        # its arithmetic) rather than flickering through the phases; a slow iteration
        # still gets a frame now and then.
        boundary = self.session.phase_due == "forward"
        if self._dirty or (now >= self._next_frame and boundary) or now >= self._next_frame + 4 * self.frame_interval:
            self._dirty = False
            self._next_frame = now + self.frame_interval
            plots = now >= self._next_plot
            if plots:
                self._next_plot = now + self.plot_interval
            # Wait while the UI draws the frame: the two threads share one interpreter lock,
            # and a key pressed meanwhile is answered sooner than if they took turns.
            self._frame_drawn.clear()
            self.post_message(Frame(self._take(plots=plots)))
            self._frame_drawn.wait(timeout=0.25)
        return False

    def _take(self, plots: bool) -> Snapshot:
        """A Snapshot, on whichever thread may touch the session now."""
        boundary = surface = None
        if plots and self.boundary_maker is not None:
            boundary = self.boundary_maker.compute(*self._boundary_grid)
        if plots and self.surface_maker is not None:
            surface = self.surface_maker.compute()
        return self.snapshotter.take(self.selection, plots=plots, boundary=boundary, surface=surface)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Failures of any worker land here, in the log; the app stays usable."""
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.log_error(f"{event.worker.name}: {type(error).__name__}: {error}")
        if event.worker.group == "session" and event.worker.is_finished:
            if event.state != WorkerState.SUCCESS:       # its job never reported: count what is left
                with self._lock:
                    self._open_jobs = sum(job.kind != "refresh" for job in self._jobs)
                self.running = self._open_jobs > 0
            self._start_worker()
            if self._dirty or event.state == WorkerState.ERROR:
                self._refresh_view()

    def on_frame(self, message: Frame) -> None:
        self._apply(message.snapshot)
        self.call_after_refresh(self._frame_drawn.set)

    def on_job_done(self, message: JobDone) -> None:
        job, outcome = message.job, message.outcome
        log = self.query_one(EventLog)
        if job.echo:
            log.add("command", f"› {job.text}")
        if message.snapshot is not None:
            self._apply(message.snapshot)
        if message.error is not None:
            self.log_error(f"{job.text}: {message.error}")
        elif outcome is not None:
            if not outcome.ok:
                kind = "expect" if outcome.failed_expect else "error"
                log.add(kind, outcome.message)
                self.bell()
            elif job.echo:
                # set, back, break, unbreak and gradcheck log a session event that says it already
                said = job.text.lstrip(":").split(" ", 1)[0] in ("set", "back", "break", "unbreak", "gradcheck")
                for line in outcome.lines[1:] if said else outcome.lines:
                    log.add("output", line)
            elif job.kind == "run" and outcome.result is not None and \
                    outcome.result.reason in ("paused", "epochs", "max_steps"):
                log.add("info", outcome.lines[0])
            if job.gradcheck and outcome.ok:
                ok = next((v for k, v in outcome.values.items() if k.endswith(" ok")), "MISMATCH" not in outcome.message)
                self.query_one(ArithmeticView).gradcheck = GradcheckView.from_values(
                    job.gradcheck, dict(outcome.values), ok, message.position)
        if job.kind != "refresh":
            self._open_jobs -= 1
        self.running = self._open_jobs > 0

    def log_error(self, message: str) -> None:
        self.query_one(EventLog).add("error", message)
        self.notify(message.splitlines()[-1][:200], title="error", severity="error")

    # -- drawing ----------------------------------------------------------------------------------

    def _apply(self, snapshot: Snapshot) -> None:
        """Hand a Snapshot to the widgets (UI thread)."""
        self.snapshot = snapshot
        bar = self.query_one(PhaseBar)
        bar.snapshot = snapshot
        bar.running = self.running
        self.query_one(TensorView).panel = snapshot.tensor
        arithmetic = self.query_one(ArithmeticView)
        arithmetic.arithmetic = snapshot.arithmetic
        self.query_one("#arithmetic-box").border_title = snapshot.arithmetic.title
        if arithmetic.gradcheck is not None and arithmetic.gradcheck.step != snapshot.position:
            arithmetic.gradcheck = None
        self.query_one(BatchView).panel = snapshot.batch
        if snapshot.batch is not None:
            self.query_one("#batch-box").border_title = snapshot.batch.title
        self.query_one("#details", ContentSwitcher).current = "batch-box" if snapshot.batch is not None \
            else "arithmetic-box"
        curves = snapshot.curves
        if curves is not None:
            for plot in self.query(LossPlot).results():
                if plot.curves is None or plot.curves.n != curves.n or plot.curves != curves:
                    plot.curves = curves
            for plot in self.query(GradNormPlot).results():
                if plot.curves is None or plot.curves.grad_norms != curves.grad_norms:
                    plot.curves = curves
        if snapshot.boundary is not None:
            for plot in self.query(BoundaryPlot).results():
                plot.boundary = snapshot.boundary        # the same object again is no change
        if snapshot.surface is not None:
            for plot in self.query(SurfacePlot).results():
                plot.surface = snapshot.surface
        log = self.query_one(EventLog)
        for event in snapshot.events:
            log.add_event(event)

    def watch_running(self, running: bool) -> None:
        for bar in self.query(PhaseBar).results():
            bar.running = running

    def watch_show_plots(self, show: bool) -> None:
        self.screen.set_class(show, "-show-plots")

    def watch_selection(self, old: Selection, new: Selection) -> None:
        if not self.is_mounted or self.snapshot is None:
            return
        if old.name != new.name:
            self._size_views()
        self._refresh_view()

    def _refresh_view(self) -> None:
        """Redraw after a change of selection or size: at once when the worker is idle, else
        with its next frame (or when it finishes)."""
        if self._draining:
            self._dirty = True
        else:
            self._dirty = False
            self._apply(self.snapshotter.take(self.selection))

    def _size_views(self) -> None:
        """Tell the Snapshotter how much the views show: the tensor window, the samples of
        the batch, the grids of the boundary and the surface (one point per cell or finer)."""
        layout = self.snapshotter.layout
        name = self.selection.name
        if name in self.session.backend.param_shapes:
            fit = self.query_one(TensorView).capacity(tuple(self.session.backend.param_shapes[name]))
            layout.tensor_rows, layout.tensor_cols = fit.rows, fit.cols
        details = self.query_one("#details")
        layout.batch_samples = batch_capacity(max(details.size.width - 5, 20))
        layout.batch_units = 4
        for plot in self.query(BoundaryPlot).results():
            width, height = plot.content_size
            self._boundary_grid = (max(48, 3 * width), max(24, 3 * height))
        for plot in self.query(SurfacePlot).results():
            width, height = plot.content_size
            self.surface_maker.resize(max(24, int(1.5 * width)), max(12, int(1.5 * height)))

    @on(TensorView.Resized)
    def _layout_changed(self) -> None:
        """A new size: new windows now, new plot grids from the worker."""
        if self.snapshot is not None:
            self._size_views()
            self._refresh_view()
            if self.boundary_maker is not None or self.surface_maker is not None:
                self._submit(Job("refresh", lambda on_phase: None, kind="refresh"))

    def on_resize(self, event) -> None:
        footer = self.query_one(KeyFooter)
        footer.compact = event.size.width < 110
        footer.narrow = event.size.width < 100           # the essential keys only; `?` lists every key
        if self.snapshot is not None:
            self.call_after_refresh(self._layout_changed)

    # -- selection ------------------------------------------------------------------------------

    @on(ModelTree.ParameterSelected)
    def _parameter_selected(self, event: ModelTree.ParameterSelected) -> None:
        if event.name != self.selection.name:
            self.selection = Selection(event.name)

    @on(TensorView.CellClicked)
    def _cell_clicked(self, event: TensorView.CellClicked) -> None:
        self.selection = Selection(self.selection.name, event.row, event.col)

    def action_move_element(self, drow: int, dcol: int) -> None:
        sel = self.selection
        if sel.name is None:
            return
        moved = Selection(sel.name, sel.row + drow, sel.col + dcol)
        self.selection = clamp_selection(moved, dict(self.session.backend.param_shapes))

    def selected_element(self) -> tuple[str, tuple[int, ...]] | None:
        sel = self.selection
        shapes = self.session.backend.param_shapes
        if sel.name not in shapes:
            return None
        return sel.name, element_index(tuple(shapes[sel.name]), sel.row, sel.col)

    # -- actions: everything that changes the session goes through the Runner ------------------

    def _busy_with_run(self) -> bool:
        current = self._current
        if self.running and current is not None and current.kind == "run":
            self.notify("A run is going: press r to pause it first.", title="running", timeout=2)
            return True
        return False

    def run_command(self, text: str, echo: bool = True) -> None:
        """Run one line of the script language (the `:` prompt, the palette)."""
        if self._busy_with_run():
            return
        word = text.split()[0] if text.split() else ""
        kind = "run" if word in LONG_COMMANDS else "command"
        gradcheck = text.split(None, 1)[1].strip() if word == "gradcheck" and len(text.split()) > 1 else None
        self._submit(Job(text, lambda on_phase: self.runner.execute_line(text, on_phase), kind, echo, gradcheck))

    def action_next_phase(self) -> None:
        if not self._busy_with_run():
            self._submit(Job("next", lambda on_phase: self.runner.execute_line("next", on_phase)))

    def action_run_to(self, phase: str) -> None:
        if not self._busy_with_run():
            self._submit(Job(f"run to {phase}", lambda on_phase: self.runner.run_to(phase, on_phase), "run"))

    def action_step(self) -> None:
        if not self._busy_with_run():
            self._submit(Job("step", lambda on_phase: self.runner.execute_line("step", on_phase), "run"))

    def action_epoch(self) -> None:
        if not self._busy_with_run():
            self._submit(Job("epoch", lambda on_phase: self.runner.execute_line("epoch", on_phase), "run"))

    def action_run_pause(self) -> None:
        if self.running:
            self.pause()
            return
        self._submit(Job("run", lambda on_phase: self.runner.run(on_phase), "run"))

    def pause(self) -> None:
        """Pause what runs now (within one phase) and drop what was queued behind it."""
        with self._lock:
            self._open_jobs -= sum(job.kind != "refresh" for job in self._jobs)
            self._jobs.clear()
        self._pause.set()

    def action_back(self) -> None:
        if not self._busy_with_run():
            self._submit(Job("back", lambda on_phase: self.runner.execute_line("back", on_phase)))

    def action_gradcheck(self) -> None:
        selected = self.selected_element()
        if selected is None:
            self.notify("Select a parameter first.", timeout=2)
            return
        name, index = selected
        self.run_command(f"gradcheck {name}{index_text(index)}", echo=False)

    def action_prompt(self) -> None:
        self.open_prompt("")

    def action_save_recording(self) -> None:
        """The prompt, filled with a save command to edit or confirm with enter."""
        stem = Path(str(self.session.scenario.file)).stem or "session"
        self.open_prompt(f"save {stem}-session.gds")

    def open_prompt(self, text: str = "") -> None:
        prompt = self.query_one(CommandPrompt)
        prompt.add_class("-open")
        prompt.value = text
        prompt.cursor_position = len(text)
        prompt.focus()

    def _close_prompt(self) -> None:
        prompt = self.query_one(CommandPrompt)
        prompt.remove_class("-open")
        self.query_one(ModelTree).focus()

    @on(CommandPrompt.Closed)
    def _prompt_closed(self) -> None:
        self._close_prompt()

    @on(Input.Submitted, "#prompt")
    def _prompt_submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        prompt = self.query_one(CommandPrompt)
        prompt.history.add(text)
        if not prompt.has_class("-open"):          # not reopened by keys typed since
            self._close_prompt()
        if text:
            self.run_command(text.lstrip(":"))

    def complete(self, text: str) -> list[str]:
        from gdstep.script import completions
        return completions(self.session, text)

    def action_help(self) -> None:
        self.push_screen(HelpScreen(list(self.BINDINGS)))

    def action_next_plot(self) -> None:
        switcher = self.query_one("#plot-switcher", ContentSwitcher)
        ids = self._plot_ids
        switcher.current = ids[(ids.index(switcher.current) + 1) % len(ids)] if switcher.current in ids else ids[0]
        self.call_after_refresh(self._layout_changed)

    def action_toggle_plots(self) -> None:
        self.show_plots = not self.show_plots
        self.call_after_refresh(self._layout_changed)

    async def action_quit(self) -> None:
        self.pause()
        self.exit(0)

    # -- screenshots ------------------------------------------------------------------------------

    def screenshot(self, path: str | Path) -> Path:
        """Save an SVG of the screen as it is now (the Runner's `screenshot FILE.svg`)."""
        path = Path(path)
        if threading.get_ident() == self._ui_thread:
            self._save_svg(path)
            return path
        snapshot = self._take(plots=True)
        done = threading.Event()

        def save() -> None:
            try:
                self._save_svg(path)
            finally:
                done.set()

        def apply() -> None:
            self._apply(snapshot)
            self.call_after_refresh(save)

        self.call_from_thread(apply)
        done.wait(timeout=30)
        return path

    def _save_svg(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.export_screenshot(title=self.title), encoding="utf-8")


def make_app(session, runner=None, *, timestamps: bool = True, **options: Any) -> GdstepApp:
    """The app on a Session: the one factory for the command line, tests and screenshots."""
    return GdstepApp(session, runner, timestamps=timestamps, **options)


def run_tui(session) -> int:
    """Run the app in the terminal; the exit code (0 on a clean quit)."""
    app = make_app(session)
    app.run()
    return app.return_code or 0

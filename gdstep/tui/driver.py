"""The SessionDriver owns the Session while the app runs; the app only draws.

Everything that touches the session runs as a Job on one thread worker, in the order asked
for: the keys' and the prompt's commands (through the script Runner, so the recording
replays), and redraws (a new selection, a new size). While a job runs, the worker builds a
Frame a few times a second and posts FrameReady; after each job it posts JobDone with the
frame after it; whenever the count of the user's open jobs crosses zero it posts Running.
The UI thread reads the session only to build the first frame, before any worker exists
(`start()`), and for the prompt's completions (`complete()`: names a run does not change).

One worker at a time, by the driver's own bookkeeping: the UI thread starts one only when
none is draining the queue, and the worker stops only when the queue is empty, both under
one lock, so no job is left behind and none waits on a restart.

The descent pictures (the landscape, the line) are a background job: the worker computes
one only when the queue is empty, a landscape first coarse (16×16) and then fine (40×40).
A job asked for while a landscape computes gives it up at the next grid point (about a
millisecond; it is computed again when the queue is empty), so the user's jobs do not wait
for it. Keys are answered meanwhile: the UI thread never computes.
"""

from __future__ import annotations

import threading
import traceback
from collections import deque
from pathlib import Path
from time import monotonic, time

from textual.app import App
from textual.message import Message
from textual.worker import Worker, get_current_worker

from gdstep.errors import Abandoned, GdstepError
from gdstep.files import atomic_write
from gdstep.tui.frame import Frame, Layout, Selection
from gdstep.tui.frame_builder import FrameBuilder
from gdstep.tui.messages import FrameReady, Job, JobDone, JobStarted, Running

LONG_COMMANDS = ("run", "step", "epoch", "next")
REDRAW = Job("redraw", lambda on_phase: None, kind="redraw")


class SessionDriver:
    """Runs jobs on `session` for `app` (the worker's host, where the messages go)."""

    def __init__(self, app: App, session, runner=None, *, frame_interval: float = 0.25,
                 plot_interval: float = 1.0) -> None:
        from gdstep.script import Runner, WritePolicy

        self.app = app
        self.session = session
        # At the prompt the user types the path: any folder, and an existing file only with --force.
        self.runner = runner if runner is not None else Runner(session, writes=WritePolicy.anywhere())
        if self.runner.screenshot is None:        # in the app, `screenshot FILE.svg` is of the app
            self.runner.screenshot = self.screenshot
        self.frames = FrameBuilder(session)
        self.model = self.frames.model
        self.frame_interval = frame_interval
        self.plot_interval = plot_interval
        self.selection = Selection()          # set on the UI thread, read by the worker
        self.layout = Layout()                # likewise, replaced whole
        self.current: Job | None = None       # the job the worker is running
        self._jobs: deque[Job] = deque()
        self._lock = threading.Lock()
        self._draining = False                # a worker owns the session
        self._dirty = False                   # a redraw was asked for while it did
        self._open = 0                        # the user's jobs not yet reported (UI thread)
        self._pause = threading.Event()
        self._drawn = threading.Event()
        self._next_frame = self._next_plot = 0.0
        self._worker: Worker | None = None
        self._ui_thread = threading.get_ident()
        self.wanted: frozenset[str] = frozenset()     # the pictures on screen: "landscape", "line"
        self.directions = "pca"                       # the landscape's directions

    # -- the UI thread ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Jobs the user asked for are not all done yet."""
        return self._open > 0

    @property
    def running_a_run(self) -> bool:
        """A long job (a run, a step, an epoch) is going: other keys wait until it is paused."""
        current = self.current
        return self.running and current is not None and current.kind == "run"

    def start(self) -> Frame:
        """The first frame, built here while no worker exists; the plots follow from the worker."""
        self._ui_thread = threading.get_ident()
        frame = self.frames.build(self.selection, self.layout, plots=False)
        self.submit(REDRAW)
        return frame

    def execute(self, text: str, *, kind: str | None = None, echo: bool = False) -> None:
        """One line of the script language, through the Runner."""
        words = text.split()
        kind = kind or ("run" if words and words[0] in LONG_COMMANDS else "command")
        self.submit(Job(text, lambda on_phase: self.runner.execute_line(text, on_phase), kind, echo))

    def run_to(self, phase: str) -> None:
        self.submit(Job(f"run to {phase}", lambda on_phase: self.runner.run_to(phase, on_phase), "run"))

    def run(self) -> None:
        self.submit(Job("run", lambda on_phase: self.runner.run(on_phase), "run"))

    def show(self, selection: Selection) -> None:
        self.selection = selection
        self.redraw()

    def resize(self, layout: Layout) -> None:
        self.layout = layout
        self.redraw()

    def want(self, pictures: frozenset[str], directions: str | None = None) -> None:
        """The descent pictures on screen, and the landscape's directions: computed when due."""
        self.wanted = frozenset(pictures)
        if directions is not None:
            self.directions = directions
        self.redraw()

    def redraw(self) -> None:
        """A new frame: with the next one of the job that runs, else from a redraw job."""
        with self._lock:
            if self._draining:
                self._dirty = True
                return
        self.submit(REDRAW)

    def submit(self, job: Job) -> None:
        if job.user:
            self._pause.clear()
            self._count(+1)
        with self._lock:
            if job.user or not self._jobs or self._jobs[-1].user:     # redraws queued back to back are one
                self._jobs.append(job)
            if self._draining:
                return
            self._draining = True
        self.app.run_worker(self._drain, name="session", group="session", thread=True, exclusive=False,
                            exit_on_error=False)
        # exclusive=False: a new worker starts only after the last one left its loop; exclusive
        # would cancel that one while it reports, and its waiters would see it cancelled.

    def reported(self, job: Job) -> None:
        """The app has drawn a job's outcome."""
        if job.user:
            self._count(-1)

    def pause(self) -> None:
        """Pause what runs now (within one phase) and drop what was queued behind it."""
        with self._lock:
            dropped = sum(job.user for job in self._jobs)
            self._jobs.clear()
        self._pause.set()
        self._count(-dropped)

    def drawn(self) -> None:
        """The app has drawn the last frame posted: the worker goes on."""
        self._drawn.set()

    def complete(self, text: str) -> list[str]:
        """Completions for the prompt. They read names (parameters, breakpoints, the
        optimizer's fields) that no job changes while a run goes."""
        from gdstep.script import completions
        return completions(self.session, text)

    def _count(self, change: int) -> None:
        before = self.running
        self._open = max(0, self._open + change)
        if self.running != before:
            self._post(Running(self.running))

    # -- the worker ------------------------------------------------------------------------------

    def _drain(self) -> None:
        """Run the queued jobs in order; after each, post its outcome and a frame."""
        worker = self._worker = get_current_worker()
        while True:
            with self._lock:
                picture = None
                if not worker.is_cancelled and not (self._jobs or self._dirty):
                    picture = self.frames.picture_due(self.wanted, self.directions)
                if worker.is_cancelled or not (self._jobs or self._dirty or picture):
                    self._draining = False
                    self.current = None
                    return
                job = self._jobs.popleft() if self._jobs else REDRAW if self._dirty or not picture \
                    else self._picture_job(picture)
                self._dirty = False
                self.current = job
            try:
                self._run(job)
            except BaseException:            # not an Exception (those _run reports): give up the session
                with self._lock:
                    self._draining = False
                    self.current = None
                raise

    def _picture_job(self, kind: str) -> Job:
        directions = self.directions

        def call(on_phase):
            try:
                self.frames.make_picture(kind, directions, stop=self._wanted_elsewhere)
            except Abandoned:
                return Abandoned
            return None
        return Job(f"draw the {kind}", call, kind="picture")

    def _wanted_elsewhere(self) -> bool:
        """The worker is wanted for something else: a job, a redraw, the app's end."""
        worker = self._worker
        return bool(self._jobs) or self._dirty or (worker is not None and worker.is_cancelled)

    def _run(self, job: Job) -> None:
        """Every failure of a job, or of the frame after it, ends here: JobDone carries it."""
        self._next_frame = monotonic() + self.frame_interval
        outcome = error = frame = None
        if job.echo:
            self._post(JobStarted(job, time()))
        try:
            outcome = job.call(self._on_phase)
        except Exception:                   # a bug, not a user mistake: report it, keep going
            error = traceback.format_exc(limit=-3).strip()
        if outcome is Abandoned:            # a picture given up for a job: nothing new to draw
            return
        try:
            if job.kind == "command":              # a rewind or a new setting may rewrite the history
                self.frames.invalidate()
            frame = self.frames.build(self.selection, self.layout, plots=True)
            self._next_plot = monotonic() + self.plot_interval
        except Exception:
            error = error or traceback.format_exc(limit=-3).strip()
        if job.kind == "picture" and error is None:
            self._post(FrameReady(frame))
        else:
            self._post(JobDone(job, outcome, error, frame))

    def _on_phase(self) -> bool:
        """Called by the session after every phase of a job, on the worker: True pauses."""
        if self._pause.is_set() or (self._worker is not None and self._worker.is_cancelled):
            return True
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
            self._drawn.clear()
            self._post(FrameReady(self.frames.build(self.selection, self.layout, plots=plots)))
            self._drawn.wait(timeout=0.25)
        return False

    def _post(self, message: Message) -> None:
        self.app.post_message(message)

    # -- screenshots (the Runner's `screenshot FILE.svg`) ----------------------------------------

    def screenshot(self, session, path: str | Path) -> Path:
        """Save an SVG of the app as it draws `session` now. On the worker (a command), the
        frame is built here and drawn first; on the UI thread the screen is saved as it is."""
        path = Path(path)
        if threading.get_ident() == self._ui_thread:
            self._save(path)
            return path
        frame = self.frames.build(self.selection, self.layout, plots=True)
        done = threading.Event()
        failed: list[GdstepError] = []

        def save() -> None:
            try:
                self._save(path)
            except GdstepError as e:          # reported by the command, on the worker: one line in the log
                failed.append(e)
            finally:
                done.set()

        def draw() -> None:
            # The screenshot is itself the job that runs: the session stands still for it.
            self.app.draw(frame, running=False)
            self.app.call_after_refresh(lambda: self.app.call_after_refresh(save))

        self.app.call_from_thread(draw)
        done.wait(timeout=30)
        if failed:
            raise failed[0]
        return path

    def _save(self, path: Path) -> None:
        """The SVG, written whole or not at all (a full disk, a read-only folder: GdstepError)."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise GdstepError(f"screenshot {path}: cannot make the folder {path.parent}: {e.strerror or e}") from None
        atomic_write(path, self.app.export_screenshot(title=self.app.title))

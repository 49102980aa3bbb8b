"""Lesson mode: the app playing a script one step at a time (gdstep.script.lesson).

Space or → asks for the next step: the driver's worker runs it (`LessonPlayer.advance`),
so keys are answered while a long step trains. Every other key works as in the plain app;
the first one that changes the session tells the player, on the worker and in order with
the jobs, that the learner left the lesson, and the next space brings the lesson back to
where it was, exactly, before the one after runs the next step. The narration pane shows
the latest `say`, where the lesson is, and what space will do.
"""

from __future__ import annotations

from typing import Any, Callable

from textual.binding import Binding
from textual.widgets import ContentSwitcher

from gdstep.script.lesson import Advance, LessonPlayer
from gdstep.tui.app import GdstepApp
from gdstep.tui.bindings import BINDINGS
from gdstep.tui.event_log import EventLog
from gdstep.tui.messages import Job, JobDone
from gdstep.tui.narration import Narration, NarrationState

STEP_JOB = "lesson: next step"
PICTURES = {"line": "line-plot", "landscape": "landscape-plot"}    # a step that draws one shows it below
READ_ONLY = ("print", "gradcheck", "save", "export", "screenshot", "say")    # they leave the lesson as it is


def _lesson_bindings() -> list[Binding]:
    """The app's keys, with space and → for the lesson (n is still the next phase)."""
    out = [Binding("space,right", "lesson_advance", "lesson", key_display="space", id="lesson",
                   tooltip="lesson: the next step (or back to the lesson after exploring)", priority=False),
           Binding("h", "lesson_earlier", "said", id="lesson-earlier", show=False,
                   tooltip="lesson: read the narration before (h again goes further back; space returns)")]
    for binding in BINDINGS:
        if binding.id == "next":
            binding = Binding("n", binding.action, binding.description, id=binding.id, tooltip=binding.tooltip)
        out.append(binding)
    return out


class LessonApp(GdstepApp, inherit_bindings=False):
    CSS_PATH = ["app.tcss", "lesson.tcss"]
    BINDINGS = _lesson_bindings()

    def __init__(self, session, player: LessonPlayer, **options: Any) -> None:
        super().__init__(session, player.runner, **options)
        self.lesson = player
        self._away = False                  # the lesson is not where it was: the pane says so
        self._left = False                  # the learner acted since the last lesson job (the player knows)
        self._busy = False
        self._leaves = 0                    # leave jobs asked for; a step asked before the last one is not the news
        self._leaves_at_step = 0
        self._problems: tuple[str, ...] = ()
        self._earlier = 0                   # h: the pane shows the say this many steps back

    def compose(self):
        for widget in super().compose():
            if widget.id == "log":
                yield Narration(id="narration")
            yield widget

    def on_mount(self) -> None:
        self._show()
        self.call_later(self.action_lesson_advance)         # after the app's own first frame

    # -- the lesson's steps ---------------------------------------------------------------------

    def action_lesson_earlier(self) -> None:
        """Show the narration one step further back; past the first, the latest again."""
        said = self.lesson.said
        self._earlier += 1
        while self._earlier < len(said) and said[-1 - self._earlier] == said[-self._earlier]:
            self._earlier += 1                           # a step without a say said nothing new
        if self._earlier >= len(said):
            self._earlier = 0
        self._show()

    def action_lesson_advance(self) -> None:
        if self._busy:
            return
        if self._earlier:                                # reading back: space returns to the latest
            self._earlier = 0
            self._show()
            return
        if self.driver.running_a_run:
            self.notify("A run is going: press r to pause it first.", title="running", timeout=2)
            return
        player = self.lesson
        if player.finished and not self._away:
            self.notify("The lesson is over: explore on, or q to quit.", title="lesson", timeout=3)
            return
        frames = self.driver.frames

        def call(on_phase) -> Advance:
            frames.invalidate()
            advance = player.advance(on_phase)
            frames.invalidate()                          # a resume or a step may rewrite the history
            return advance
        self._busy = True
        self._leaves_at_step = self._leaves
        self._show()
        self.driver.submit(Job(STEP_JOB, call, kind="run" if player.long() else "command"))

    def on_job_done(self, message: JobDone) -> None:
        """A step's outcomes go to the pane and the log (the app's own handler does the rest)."""
        if message.job.text != STEP_JOB:
            return
        message.prevent_default()
        log = self.query_one(EventLog)
        advance = message.outcome
        if message.error is None and advance is not None and not advance.resumed:
            self._echo(log, advance)                     # the commands, then the events they made (the frame's)
        if message.frame is not None:
            self.draw(message.frame)
        if message.error is None and advance is not None and not advance.resumed:
            self._show_picture(advance)
            log.call_after_refresh(log.show_latest_from_its_start)     # a one-line log: how its news begins
        self._busy = False
        self._earlier = 0
        current = self._leaves == self._leaves_at_step          # no key left the lesson since space
        if message.error is not None or advance is None:
            self.log_error(f"lesson: {message.error}")
        elif advance.resumed:
            self._problems = ()
            if current:
                self._away = self._left = False
            self.notify(f"Back to the lesson at step {advance.step} of {advance.total}.", title="lesson", timeout=3)
        else:
            if current:
                self._away = self._left = False
            self._log_step(log, advance)
        self._show()
        self.driver.reported(message.job)

    @staticmethod
    def _echo(log: EventLog, advance: Advance) -> None:
        for outcome in advance.outcomes:
            if outcome.command.startswith("say ") and outcome.ok:
                continue                                 # the pane shows it; the log keeps the events
            log.add("command", f"› {outcome.command}")
            log.add_outcome(outcome.command, outcome, echo=True, run=False)

    def _show_picture(self, advance: Advance) -> None:
        """The lower plot switched to the picture the step's last `line` or `landscape` drew,
        which the narration then talks about (the learner need not find it with v)."""
        drawn = [PICTURES[o.command.split(" ", 1)[0]] for o in advance.outcomes
                 if o.ok and o.command.split(" ", 1)[0] in PICTURES]
        switcher = self.query_one("#plot-switcher", ContentSwitcher)
        if not drawn or drawn[-1] not in self._plot_ids:
            return
        if switcher.current != drawn[-1]:
            switcher.current = drawn[-1]
            self.driver.want(self._pictures_shown())
            self.call_after_refresh(self._layout_changed)
        if self.size.width < 100 and not self.show_plots:       # narrow: the plots take the centre's place
            self.show_plots = True
            self.call_after_refresh(self._layout_changed)
            self.notify("The plots are shown in place of the centre panels: p swaps them back.",
                        title="lesson", timeout=5)

    def _log_step(self, log: EventLog, advance: Advance) -> None:
        self._problems = tuple(f"line {o.line}: {o.message}" for o in advance.problems)
        if self._problems:
            self.bell()
        if advance.interrupted:
            self._away = True
            log.add("info", "the step was interrupted: space runs it again from its start")
        elif advance.step >= advance.total:
            log.add("info", f"end of the lesson ({advance.total} steps)")
            self.notify("End of the lesson.", title="lesson", timeout=4)

    def _show(self) -> None:
        player = self.lesson
        pane = self.query_one(Narration)
        text = player.said[-1 - self._earlier] if self._earlier else player.narration
        opening = self.model.description if player.done <= 1 and not self._earlier else ""
        pane.state = NarrationState(player.title, text, player.done, player.total, self._away, self._busy,
                                    self._problems, self._earlier, opening)

    # -- the learner's own keys: leave the lesson first --------------------------------------------

    def _leave(self) -> None:
        if self._left:
            return
        self._away = self._left = True
        self._leaves += 1
        player = self.lesson
        self.driver.submit(Job("explore", lambda on_phase: player.leave(), kind="command"))
        self._show()

    def _unless_running(self, job: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        if not self.driver.running_a_run:
            text = args[0] if job == self.driver.execute and args and isinstance(args[0], str) else None
            if text is None or text.lstrip(":").split(" ", 1)[0] not in READ_ONLY:
                self._leave()
        super()._unless_running(job, *args, **kwargs)

    def action_run_pause(self) -> None:
        if not self.driver.running:
            self._leave()
        super().action_run_pause()


def make_lesson_app(session, commands, title: str, writes=None, **options: Any) -> LessonApp:
    """The app on `session`, playing `commands` (a parsed script) as a lesson called `title`.
    The script's own files (screenshot, export, save: how lessons are illustrated) are not
    written when it plays in the app; the learner's `:save` writes as `writes` allows."""
    from gdstep.script import Runner, WritePolicy
    runner = Runner(session, writes=writes or WritePolicy.anywhere())
    played = [c for c in commands if c.name not in ("screenshot", "export", "save")]
    return LessonApp(session, LessonPlayer(runner, played, title), **options)


def served_writes():
    """In a browser the learner is not at this computer: files go to a temporary folder only."""
    import tempfile
    from pathlib import Path
    from gdstep.script import WritePolicy
    return WritePolicy(Path(tempfile.mkdtemp(prefix="gdstep-served-")))


def run_lesson(session, commands, title: str, served: bool = False) -> int:
    return _run(make_lesson_app(session, commands, title, writes=served_writes() if served else None))


def run_served(session) -> int:
    """The plain app, as `gdstep serve` serves it (writes only to a temporary folder)."""
    from gdstep.script import Runner
    from gdstep.tui.app import make_app
    return _run(make_app(session, Runner(session, writes=served_writes())))


def _run(app) -> int:
    app.call_later(app.quit_on_sigterm)
    app.run()
    return app.return_code or 0

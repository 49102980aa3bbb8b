"""One command language for `.gds` scripts, the TUI's `:` prompt and recordings."""

from gdstep.script.complete import completions
from gdstep.script.outcome import Outcome
from gdstep.script.parser import COMMANDS, Command, parse_command, parse_script
from gdstep.script.runner import Runner
from gdstep.script.writes import WritePolicy

__all__ = ["COMMANDS", "Command", "Outcome", "Runner", "WritePolicy", "completions", "parse_command", "parse_script"]

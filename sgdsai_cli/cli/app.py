"""The Typer application and what every command shares: errors to exit codes, consoles, progress.

The library raises ``SgdsaiError`` subclasses carrying the field that was wrong; ``handle_errors``
prints one line on stderr, with the field shown as its flag, and exits with the error's code
(2 bad input, 3 environment, 1 regression; Ctrl-C 130, SIGTERM 143: see ``signals``). Click's usage
errors (an unknown option, a missing value, a bad choice) are one ``error:`` line too (``Group``).
Nothing a user can cause prints a traceback.
"""

from __future__ import annotations

import functools
import re
import sys
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from typer._click import exceptions as click_errors
from typer.core import TyperGroup

from sgdsai_cli.cli import signals
from sgdsai_cli.errors import SgdsaiError
from sgdsai_cli.version import __version__


def usage_message(e: click_errors.ClickException) -> str:
    """A Click usage error as one line: ``no such option '--stepz' (did you mean '--steps'?)``."""
    if isinstance(e, click_errors.NoSuchOption):
        close = [p for p in (e.possibilities or []) if p != "--help"]  # closest first (difflib)
        return f"no such option {e.option_name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    if isinstance(e, click_errors.BadOptionUsage) and "requires an argument" in e.message:
        return f"option {e.option_name!r} needs a value"
    text = " ".join(e.format_message().split()).rstrip(".")
    return text[:1].lower() + text[1:]


PATH_OPTIONS = ("--out", "--json", "--baseline", "-b", "--data", "--profile")


def empty_path_option(args: list[str]) -> str | None:
    """The first path option given an empty value (``--out ''``, ``--json=``), or None.

    Click turns ``''`` into ``Path('.')``, the working folder, so this is checked on the raw words.
    """
    for i, word in enumerate(args):
        if word == "--":
            return None
        flag, eq, value = word.partition("=")
        if flag in PATH_OPTIONS and ((eq and value == "") or (not eq and i + 1 < len(args) and args[i + 1] == "")):
            return flag
    return None


class Group(TyperGroup):
    """The command group: usage errors are one ``error:`` line (exit 2); Ctrl-C outside a command 130."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        words = list(sys.argv[1:] if args is None else args)
        empty = empty_path_option(words)
        if empty is not None:
            error(f"{empty} '': the path is empty (give a file or folder name)")
            if standalone_mode:
                sys.exit(2)
            return 2
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, **extra)
            code = rv if isinstance(rv, int) and not isinstance(rv, bool) else 0
        except click_errors.NoArgsIsHelpError as e:
            e.show()
            code = e.exit_code
        except click_errors.ClickException as e:
            error(usage_message(e))
            code = e.exit_code
        except typer.Abort:  # end of input at a prompt, or Ctrl-C outside a command
            code = 130
        if signals.received() is not None:  # stopped by a signal, whatever came after it
            code = signals.exit_code()
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    cls=Group,
    name="sgdsai",
    help="Memory and performance profiler for the SGD-SaI optimizer against AdamW.",
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)

# library field -> command-line flag, for error messages
FLAGS = {
    "model": "--model", "precision": "--precision", "device": "--device", "optimizer": "--optimizer",
    "optimizers": "--optimizer", "batch_size": "--batch-size", "seq_len": "--seq-len", "warmup": "--warmup",
    "steps": "--steps", "sample_interval_ms": "--sample-interval-ms", "tolerance": "--tolerance",
    "tolerance_latency": "--tolerance-latency", "budget": "--budget", "gpu": "--gpu", "lr": "--lr",
    "seed": "--seed", "data": "--data", "layers": "--layers", "context": "--context", "name": "--name",
    "activation_checkpointing": "--activation-checkpointing", "lora": "--lora", "threads": "--threads",
}


def _version(value: bool) -> None:
    if value:
        print(f"sgdsai {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Memory and performance profiler for the SGD-SaI optimizer against AdamW."""


class TableConsole(Console):
    """A console that never draws a table narrower than its longest words.

    Rich squeezes a table into a narrow terminal by folding cells; below the width of the longest word
    in each column (``COLUMNS=40``) every column is cut to a few letters and the last ones (the
    verdict) are unreadable. Such a table is printed at its natural width instead: the terminal wraps
    the lines, nothing is cut. Between the two, rich's folding is kept.
    """

    def print(self, *objects, **kwargs):
        from rich.table import Table

        from sgdsai_cli.render.tables import PIPE_WIDTH

        if kwargs.get("width") is not None:
            return super().print(*objects, **kwargs)
        tables = [o for o in objects if isinstance(o, Table)]
        if not tables or all(word_width(t) <= self.width for t in tables):
            return super().print(*objects, **kwargs)
        from rich.measure import Measurement

        need = max(Measurement.get(self, self.options.update(max_width=PIPE_WIDTH), t).maximum for t in tables)
        width = self.width
        self.width = need
        try:
            return super().print(*objects, **kwargs)
        finally:
            self.width = width


def word_width(table) -> int:
    """The narrowest a rich Table can be drawn with no word split: each column as wide as its longest
    word (header or cell) plus padding, plus the borders."""
    from rich.text import Text

    def longest(cell) -> int:
        text = cell.plain if isinstance(cell, Text) else Text.from_markup(cell).plain if isinstance(cell, str) else ""
        return max((len(w) for w in text.split()), default=0)

    pad = table.padding[1] + table.padding[3] if table.padding else 0
    widths = [max([longest(c.header), *(longest(cell) for cell in c._cells)]) + pad for c in table.columns]
    return sum(widths) + len(widths) + 1 if table.box else sum(widths)


def stdout() -> Console:
    """The console for results: as wide as the terminal (never narrower than a table's words), and wide
    enough for any table when piped."""
    from sgdsai_cli.render.tables import PIPE_WIDTH

    console = TableConsole(soft_wrap=False)
    if not console.is_terminal:
        console.width = max(console.width, PIPE_WIDTH)
    return console


def stderr() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False)


def say(message: str) -> None:
    """A progress or notes line on stderr (user values are not read as markup)."""
    print(message, file=sys.stderr)


def error(message: str) -> None:
    """Print one error line on stderr."""
    print(f"error: {message}", file=sys.stderr)


def interrupted() -> None:
    """The one 'interrupted' line, however many signals came."""
    signals.seen()
    if signals.tell_once():
        error(f"interrupted ({signals.name()})")


def flag_message(e: SgdsaiError) -> str:
    """The error's message with its field shown as the flag (``batch_size`` -> ``--batch-size``)."""
    message = str(e)
    flag = FLAGS.get(e.field or "")
    if flag is None:
        return message
    return re.sub(rf"(?<![\w-]){re.escape(e.field)}(?![\w-])", flag, message, count=1)


created_folders: list[Path] = []  # output folders this command created (``options.prepare_out``)


def _remove_empty_created() -> None:
    """A command that failed leaves no empty output folder it created (innermost first)."""
    while created_folders:
        folder = created_folders.pop()
        try:
            folder.rmdir()  # only an empty folder
        except OSError:
            pass


def handle_errors(func):
    """Translate library errors into a message and an exit code; Ctrl-C exits 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        created_folders.clear()
        try:
            return func(*args, **kwargs)
        except BaseException:
            _remove_empty_created()
            raise
        finally:
            created_folders.clear()

    return _errors_to_exit(wrapper)


def _errors_to_exit(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except SgdsaiError as e:
            error(flag_message(e))
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            interrupted()
            raise typer.Exit(signals.exit_code()) from None

    return wrapper


@contextmanager
def progress_bar(quiet: bool):
    """A ProgressCallback drawing a rich progress bar per task on stderr; nothing when quiet or not a terminal."""
    console = Console(stderr=True)
    if quiet or not console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[stage]}"), TimeElapsedColumn(), console=console, transient=False)
    tasks: dict[str, int] = {}

    def draw(p) -> None:
        if p.task not in tasks:
            tasks[p.task] = bar.add_task(p.task, total=p.total, stage=p.stage)
        bar.update(tasks[p.task], completed=p.completed or 0, total=p.total, stage=p.stage)

    with bar:
        yield draw

"""``monitor``: run passes, read results, manage the database.

Every command imports what it needs when it runs, so ``monitor --help`` stays
fast. Errors raised on purpose (``ScoutError`` and subclasses) print as one line
and exit 1; ``MONITOR_DEBUG=1`` shows the traceback instead. A bad command line
exits 64, never 2: exit 2 means an alert and nothing else.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from monitor.commands import alerts as alerts_command
from monitor.commands import baseline as baseline_command
from monitor.commands import compare as compare_command
from monitor.commands import rescore as rescore_command
from monitor.commands import run as run_command
from monitor.commands import sources as sources_command
from monitor.commands import status as status_command

EXIT_OK, EXIT_FAILED, EXIT_ALERT, EXIT_USAGE = 0, 1, 2, 64

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Continuous evaluation of the Scout agent: replay, grade, store, alert.",
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(no_args_is_help=True, help="Manage the results database.")
app.add_typer(db_app, name="db")
app.add_typer(sources_command.app, name="sources")
app.add_typer(alerts_command.app, name="alerts")
app.add_typer(baseline_command.app, name="baseline")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]

# Each command's flags live beside its code in monitor/commands/; importing
# those modules is cheap because they import their heavy libraries lazily.
app.command()(run_command.run)
app.command()(compare_command.compare)
app.command()(rescore_command.rescore)
app.command()(status_command.status)


@app.command()
def history(
    limit: Annotated[int, typer.Option("--last", "-n", min=1, help="Runs shown.")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """The score timeline, newest first, with a marker where a version changes."""
    from monitor.commands.read import history_command

    raise typer.Exit(history_command(limit=limit, as_json=as_json))


@app.command()
def show(
    run_id: Annotated[str, typer.Argument(help="Run id (see `monitor history`).")],
    as_json: JsonFlag = False,
) -> None:
    """Per question of one run: checks, scores, rationales, usage, trace id."""
    from monitor.commands.read import show_command

    raise typer.Exit(show_command(run_id, as_json=as_json))


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate the results database to the schema this code needs."""
    from monitor.commands.read import db_upgrade_command

    raise typer.Exit(db_upgrade_command())


def _print_error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: maps errors to one line and the documented exit codes."""
    from typer.exceptions import Abort, TyperException

    from scout.errors import ScoutError

    debug = os.environ.get("MONITOR_DEBUG") == "1"
    try:
        result: Any = app(args=argv, standalone_mode=False, prog_name="monitor")
    except TyperException as error:  # a bad command line (typer's UsageError)
        context = getattr(error, "ctx", None)
        hint = f" (see `{context.command_path} --help`)" if context else ""
        _print_error(f"{error.format_message()}{hint}")
        sys.exit(EXIT_USAGE)
    except Abort:
        _print_error("interrupted")
        sys.exit(130)
    except ScoutError as error:
        if debug:
            raise
        _print_error(str(error))
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        _print_error("interrupted")
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else EXIT_OK)

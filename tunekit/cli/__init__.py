"""The `tunekit` command: a Typer app and the one error boundary.

    $ tunekit --help
    $ tunekit sft recipes/quickstart.yaml training.max_steps=50

Modules here parse arguments, call library code and print. A `UserError` prints one line and exits
2; anything unexpected exits 1; TUNEKIT_DEBUG=1 shows the traceback. Nothing here imports torch at
module level, so `--help`, `validate` and `recipes` start fast.
"""

from __future__ import annotations

import os
import sys

import typer

from tunekit import __version__
from tunekit.cli import doctor, estimate, recipes, report, score, tiny, train, use, validate
from tunekit.errors import UserError
from tunekit.quiet import quiet_libraries
from tunekit.train import launch  # launch: no torch at import

app = typer.Typer(
    name="tunekit",
    help="Fine-tune and align transformer language models from strict YAML recipes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tunekit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Fine-tune and align transformer language models from strict YAML recipes."""


train.register(app)
validate.register(app)
recipes.register(app)
tiny.register(app)
use.register(app)
score.register(app)
estimate.register(app)
doctor.register(app)
report.register(app)


def main(argv: list[str] | None = None) -> None:
    """Run the command; in rank 0 of a tunekit relaunch also record the exit code for the parent."""
    code: object = 1
    try:
        _run(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code
        raise
    finally:
        launch.record_exit(code)


def _run(argv: list[str] | None) -> None:
    debug = bool(os.environ.get("TUNEKIT_DEBUG"))
    quiet_libraries()  # before any command imports a library that talks
    # In launched processes every rank meets the same mistake: rank 0 alone says so.
    echo = launch.on_main(typer.echo)
    try:
        app(args=argv, prog_name="tunekit")
    except UserError as err:
        if debug:
            raise
        echo(f"error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        echo("interrupted", err=True)
        sys.exit(130)
    except Exception as err:  # the boundary: anything else is our bug or the environment's
        if debug:
            raise
        echo(f"unexpected error: {type(err).__name__}: {err}", err=True)
        echo("run again with TUNEKIT_DEBUG=1 for the traceback, and report it if it is a tunekit bug", err=True)
        sys.exit(1)

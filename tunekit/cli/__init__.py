"""The `tunekit` command: a Typer app and the one error boundary.

    $ tunekit --help
    $ tunekit sft recipes/quickstart.yaml training.max_steps=50

Modules here parse arguments, call library code and print. A `UserError` prints one line and exits
2, and so does a command-line mistake Typer finds (an unknown option, a missing argument, a bad value)
and an OS error on a path the user named (permission, read-only, name too long); anything unexpected
exits 1; TUNEKIT_DEBUG=1 shows the traceback. Nothing here imports torch at module level, so `--help`,
`validate` and `recipes` start fast.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable

import typer

from tunekit import __version__
from tunekit.cli import doctor, estimate, preprocess, recipes, report, score, tiny, train, use, validate
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
preprocess.register(app)
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


# OS errors that name a path the user gave and can fix: exit 2 with the path, not "a tunekit bug".
USER_PATH_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG, errno.ENOSPC, errno.EDQUOT})


def _run(argv: list[str] | None) -> None:
    debug = bool(os.environ.get("TUNEKIT_DEBUG"))
    quiet_libraries()  # before any command imports a library that talks
    # In launched processes every rank meets the same mistake: rank 0 alone says so.
    echo = launch.on_main(typer.echo)
    try:
        # standalone_mode=False: Typer's usage errors come here (typer.TyperException) instead of being
        # printed as a usage block; typer.Exit comes back as the exit code.
        code = app(args=argv, prog_name="tunekit", standalone_mode=False)
    except UserError as err:
        if debug:
            raise
        echo(f"error: {err}", err=True)
        sys.exit(2)
    except typer.TyperException as err:  # click's UsageError and its kin, as typer 0.29 re-exports them
        if debug:
            raise
        shown = _usage(err)
        echo(shown.lstrip("\n") if shown.startswith("\n") else f"error: {shown}", err=True)
        sys.exit(getattr(err, "exit_code", 2))
    except typer.Abort:
        echo("aborted", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        echo("interrupted", err=True)
        sys.exit(130)
    except OSError as err:
        if debug or err.errno not in USER_PATH_ERRNOS or err.filename is None:
            _unexpected(err, debug, echo)
        from tunekit.folders import describe_os_error

        echo(f"error: {describe_os_error(err, err.filename)}", err=True)
        sys.exit(2)
    except Exception as err:  # the boundary: anything else is our bug or the environment's
        _unexpected(err, debug, echo)
    if isinstance(code, int) and code:
        sys.exit(code)


def _usage(err: typer.TyperException) -> str:
    """Typer's usage error as one line, with the command whose --help explains it; a group called without
    a command (`tunekit`, `tunekit recipes`) shows its help, as Typer does."""
    context = getattr(err, "ctx", None)
    if context is not None and err.format_message() == context.get_help():
        return "\n" + err.format_message()
    message = " ".join(err.format_message().split())
    command = getattr(context, "command_path", None) or "tunekit"
    return f"{message} (see `{command} --help`)"


def _unexpected(err: BaseException, debug: bool, echo: Callable[..., None]) -> None:
    if debug:
        raise err
    echo(f"unexpected error: {type(err).__name__}: {err}", err=True)
    echo("run again with TUNEKIT_DEBUG=1 for the traceback, and report it if it is a tunekit bug", err=True)
    sys.exit(1)

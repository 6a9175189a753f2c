"""`tunekit report RUN [RUN ...]` (one self-contained HTML page) and `tunekit runs DIR` (one line per run).

    $ tunekit report runs/quickstart                       # writes runs/quickstart/report.html
    $ tunekit report runs/a runs/b -o compare.html         # curves overlaid, recipe keys that differ
    $ tunekit runs runs/

Torch-free: both read the run folder's files (tunekit.report).
"""

from __future__ import annotations

from pathlib import Path

import typer

from tunekit.errors import UserError

RUNS = typer.Argument(..., help="Run folders (output_dir of a training command).", show_default=False)
OUTPUT = typer.Option(
    None,
    "--output",
    "-o",
    show_default=False,
    help="HTML file to write; default: RUN/report.html for one run, report.html here for several.",
)


def report(runs: list[Path] = RUNS, output: Path | None = OUTPUT) -> None:
    """Write one self-contained HTML page: curves of every logged figure, before/after, samples, recipe."""
    from tunekit.report.html import write_report
    from tunekit.report.runs import read_run

    if len({path.resolve() for path in runs}) != len(runs):
        raise UserError("a run folder is named twice")
    folders = [read_run(path) for path in runs]
    target = output or (runs[0] / "report.html" if len(runs) == 1 else Path("report.html"))
    if target.is_dir():
        raise UserError(f"--output {target} is a folder; name the HTML file to write")
    write_report(folders, target)
    typer.echo(f"wrote {target} ({len(folders)} run{'s' if len(folders) != 1 else ''})")


def runs(folder: Path = typer.Argument(..., help="A folder of run folders, e.g. runs/.", show_default=False)) -> None:
    """One line per run folder: method, adapter, steps, held-out figures before -> after, training time."""
    from tunekit.report.runs import find_runs, runs_table

    found = find_runs(folder)
    if not found:
        raise UserError(f"{folder}: no run folders in it (a run folder holds recipe.yaml)")
    typer.echo(runs_table(found))


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("runs")(runs)

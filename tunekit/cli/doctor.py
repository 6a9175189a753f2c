"""`tunekit doctor [--json]`: Python, torch, GPUs and library versions, and what to fix.

    $ tunekit doctor
    $ tunekit doctor --json > environment.json     # attach to a bug report

A report, so it exits 0 whatever it finds; `problem:` lines say what to do.
"""

from __future__ import annotations

import json
from typing import Any

import typer

GIB = 2**30


def register(app: typer.Typer) -> None:
    @app.command()
    def doctor(
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object (for bug reports) and nothing else."),
    ) -> None:
        """Check this machine: versions against tunekit's tested ranges, torch build and GPUs, bitsandbytes."""
        from tunekit.doctor import diagnose

        report = diagnose()
        if as_json:
            typer.echo(json.dumps(report, indent=2))
            return
        for line in render(report):
            typer.echo(line)


def render(report: dict[str, Any]) -> list[str]:
    py = report["python"]
    lines = [
        f"python            {py['version']} ({py['implementation']}, {py['executable']})",
        f"platform          {report['platform']}",
        f"tunekit           {report['tunekit']}",
        *_torch_lines(report["torch"]),
        *_bitsandbytes_lines(report["bitsandbytes"]),
    ]
    versions = {**report["packages"], **report["optional"]}
    versions.pop("torch", None)
    versions.pop("bitsandbytes", None)
    lines += [f"{name:<17} {version or 'not installed'}" for name, version in versions.items()]
    checks = report["requirements"]
    if checks is not None:
        outside = sum(not c["ok"] for c in checks)
        lines.append(
            f"requirements      {len(checks)} declared by tunekit, "
            + (f"{outside} not met" if outside else "all installed inside the tested ranges")
        )
    lines += [f"note: {note}" for note in report["notes"]]
    lines += [f"problem: {problem}" for problem in report["problems"]]
    count = len(report["problems"])
    lines.append(f"{count} problem{'s' if count != 1 else ''} found" if count else "no problems found")
    return lines


def _torch_lines(torch: dict[str, Any]) -> list[str]:
    if "error" in torch:
        state = f"{torch['version']} (does not import)" if torch["version"] else "not installed"
        return [f"torch             {state}"]
    lines = [f"torch             {torch['version']} ({torch['build']} build), MPS {'yes' if torch['mps'] else 'no'}"]
    lines += [f"GPU {i:<13} {gpu['name']}, {gpu['memory_bytes'] / GIB:.1f} GiB" for i, gpu in enumerate(torch["gpus"])]
    return lines


def _bitsandbytes_lines(bnb: dict[str, Any]) -> list[str]:
    if bnb["version"] is None:
        return ["bitsandbytes    not installed"]
    if "error" in bnb:
        return [f"bitsandbytes      {bnb['version']} (does not import)"]
    return [f"bitsandbytes      {bnb['version']}, backends here: {', '.join(bnb['backends']) or 'none'}"]

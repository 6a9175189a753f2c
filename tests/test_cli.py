"""The command line: help for every command, version, the error boundary, and a fast start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _commands() -> list[list[str]]:
    import typer.main

    from tunekit.cli import app

    group = typer.main.get_command(app)
    found = []
    for name, command in group.commands.items():
        found.append([name])
        for sub in getattr(command, "commands", {}):
            found.append([name, sub])
    return found


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c))
def test_every_command_has_help(cli, command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.code == 0
    assert "Usage:" in result.out


def test_top_level_help_lists_commands(cli) -> None:
    result = cli("--help")
    assert result.code == 0
    for name in ("sft", "validate", "recipes", "tiny-model"):
        assert name in result.out


def test_version(cli) -> None:
    from tunekit import __version__

    result = cli("--version")
    assert result.code == 0 and result.out.strip() == f"tunekit {__version__}"


PROBE = """
import sys
from tunekit.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "transformers", "trl", "peft") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["validate", "recipes/quickstart.yaml"],
        ["recipes", "list"],
        ["tiny-model", "--help"],
        ["sft", "--help"],
        ["runs", "--help"],
        ["report", "--help"],
    ],
    ids=lambda a: " ".join(a),
)
def test_light_commands_do_not_import_torch(args: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "HEAVY=\n" in proc.stderr, proc.stderr


def test_user_error_is_one_line_exit_2(cli, tmp_path: Path) -> None:
    result = cli("validate", str(tmp_path / "missing.yaml"))
    assert result.code == 2
    assert result.err.strip() == f"error: recipe not found: {tmp_path / 'missing.yaml'}"
    assert "Traceback" not in result.err


def test_usage_error_exits_2(cli) -> None:
    assert cli("sft").code == 2
    assert cli("no-such-command").code == 2


def test_unexpected_failure_exits_1_without_traceback(cli, monkeypatch, tmp_path: Path) -> None:
    import tunekit.train.validate

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(tunekit.train.validate, "check_recipe", broken)
    result = cli("validate", str(ROOT / "recipes" / "quickstart.yaml"))
    assert result.code == 1
    assert "unexpected error: RuntimeError: boom" in result.err
    assert "TUNEKIT_DEBUG=1" in result.err and "Traceback" not in result.err


def test_debug_shows_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tunekit", "validate", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "TUNEKIT_DEBUG": "1"},
        timeout=120,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "RecipeError" in proc.stderr


def test_console_script_runs_recipe_list() -> None:
    exe = Path(sys.executable).parent / "tunekit"
    proc = subprocess.run([str(exe), "recipes", "list"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "quickstart" in proc.stdout


def test_bad_override_exits_2_before_anything_is_written(cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = cli("sft", str(ROOT / "recipes" / "quickstart.yaml"), f"output_dir={out}", "training.max_steps=0")
    assert result.code == 2
    assert "training.max_steps" in result.err
    assert not out.exists()


def test_the_quickstart_ends_with_its_samples(tmp_path: Path) -> None:
    """A newcomer's first command, shortened: it ends by showing three held-out prompts answered before and
    after training, and no library prints a warning on the way (a fresh process, as a user runs it)."""
    out = tmp_path / "quickstart"
    command = [sys.executable, "-m", "tunekit", "sft", str(ROOT / "recipes" / "quickstart.yaml")]
    command += [f"output_dir={out}", "training.max_steps=10", "training.logging_steps=5"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.rstrip().splitlines()
    start = lines.index("samples (greedy, 3 prompts):")
    assert lines[start - 1] == f"saved {out / 'final'}"
    block = lines[start + 1 :]
    assert len(block) == 3 * 4  # prompt, expected, before, after
    assert [line.split()[0] for line in block] == ["Reverse", "expected", "before", "after"] * 3
    assert "warn" not in proc.stderr.lower(), proc.stderr

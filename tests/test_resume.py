"""Checkpoints and `--resume`: sealed atomically and rotated, refused across recipes unless --force,
saved on SIGTERM/SIGINT, and a run killed with SIGKILL twice (once after a checkpoint, once while the
next is being written) resumes to the same step and loss as a run never interrupted.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import chat_rows, reversal_pairs, write_jsonl, write_recipe
from tunekit.train import checkpoints

STEPS = 12
TOLERANCE = 1e-4  # same data order, optimizer and RNG: only float summation order may differ


def make_recipe(folder: Path, run: Path, data: Path | None = None) -> Path:
    """The recipe, in `folder`; `data` is another run's data file (the recipe hash covers data paths)."""
    data = data or write_jsonl(folder / "pairs.jsonl", chat_rows(reversal_pairs(32, seed=5)))
    return write_recipe(
        folder / "recipe.yaml",
        method="sft",
        model={"name_or_path": "tiny:llama"},
        adapter={"type": "none"},
        data={"train": str(data), "eval": str(data), "max_length": 48},
        training={
            "learning_rate": 3e-3,
            "max_steps": STEPS,
            "batch_size": 4,
            "logging_steps": 1,
            "save_steps": 4,
            "save_total_limit": 2,
            "seed": 0,
        },
        output_dir=str(run),
    )


def run_cli(*args: str) -> int:
    from tunekit.cli import main

    try:
        main(list(args))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted run: the recipe's folder, with the run in `run/`."""
    folder = tmp_path_factory.mktemp("reference")
    recipe = make_recipe(folder, folder / "run")
    assert run_cli("sft", str(recipe)) == 0
    return folder


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def last_loss(run: Path) -> float:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r.get("step") == STEPS and "loss" in r][-1]


def copy_run(reference: Path, tmp_path: Path) -> tuple[Path, Path]:
    run = tmp_path / "run"
    shutil.copytree(reference / "run", run)
    return make_recipe(tmp_path, run, data=reference / "pairs.jsonl"), run


def assert_matches_reference(run: Path, reference: Path) -> None:
    got, want = summary(run), summary(reference / "run")
    assert got["steps"] == want["steps"] == STEPS
    assert abs(got["eval_loss_after"] - want["eval_loss_after"]) < TOLERANCE
    assert abs(last_loss(run) - last_loss(reference / "run")) < TOLERANCE


def test_checkpoints_are_sealed_renamed_and_rotated(reference: Path) -> None:
    from tunekit.config import load_recipe

    root = reference / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-12", "checkpoint-8"]  # limit 2, no .partial
    fields = checkpoints.recipe_fields(load_recipe(reference / "recipe.yaml"))
    for path in root.iterdir():
        manifest = json.loads((path / checkpoints.MANIFEST).read_text())
        assert manifest["recipe_hash"] == checkpoints.recipe_hash(fields)
        assert manifest["step"] == checkpoints.step_of(path)
        assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"} <= set(manifest["files"])
        assert checkpoints.problem(path) is None
    assert checkpoints.latest(root).path == root / "checkpoint-12"
    assert summary(reference / "run")["global_batch_size"] == 4


def test_a_damaged_checkpoint_is_never_taken_as_the_latest(reference: Path, tmp_path: Path, cli) -> None:
    recipe, run = copy_run(reference, tmp_path)
    root = run / "checkpoints"
    weights = root / "checkpoint-12" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # cut short, as a crash mid-write would leave it
    shutil.copytree(root / "checkpoint-8", root / "checkpoint-16")
    (root / "checkpoint-16" / checkpoints.MANIFEST).unlink()  # never sealed
    found = checkpoints.latest(root)
    assert found.path == root / "checkpoint-8"
    assert [name for name, _ in found.skipped] == ["checkpoint-16", "checkpoint-12"]
    assert "model.safetensors has 1000 bytes" in found.skipped[1][1]

    result = cli("sft", str(recipe), "--resume")
    assert result.code == 0, result.err
    assert "skipping checkpoint-12: model.safetensors has 1000 bytes" in result.out
    assert (
        f"resuming from {root / 'checkpoint-8'} (step 8 of {STEPS}): restored model (model.safetensors)" in result.out
    )
    assert "optimizer, scheduler, RNG" in result.out
    assert_matches_reference(run, reference)
    assert summary(run)["resumed_from"] == "checkpoint-8"
    assert checkpoints.problem(root / "checkpoint-12") is None  # rewritten whole


def test_resume_refuses_another_recipe_unless_forced(reference: Path, tmp_path: Path, cli) -> None:
    recipe, run = copy_run(reference, tmp_path)
    refused = cli("sft", str(recipe), "--resume", "training.learning_rate=0.01")
    assert refused.code == 2
    assert "different recipe (training.learning_rate: 0.003 -> 0.01)" in refused.err and "--force" in refused.err
    # Keys that only say how often to log or save do not count: this one passes the hash check, and then
    # meets the finished run (its newest checkpoint is the last step), which has nothing left to train.
    finished = cli("sft", str(recipe), "--resume", "training.logging_steps=3")
    assert finished.code == 2 and f"at step {STEPS}, the end of training.max_steps={STEPS}" in finished.err
    assert checkpoints.step_of(checkpoints.latest(run / "checkpoints").path) == STEPS  # no step past the end
    forced = cli("sft", str(recipe), "--resume", "--force", "training.max_steps=14")
    assert forced.code == 0, forced.err
    assert f"resuming from {run / 'checkpoints' / f'checkpoint-{STEPS}'} (step {STEPS} of 14)" in forced.out
    assert summary(run)["steps"] == 14
    # Tokens per second count the 2 steps this run trained, not the 12 before it.
    assert summary(run)["train_tokens"] < summary(reference / "run")["train_tokens"] / 3
    assert cli("sft", str(recipe), "--force").code == 2  # --force without --resume


def test_resume_without_a_checkpoint_never_replaces_a_finished_run(reference: Path, tmp_path: Path, cli) -> None:
    recipe, run = copy_run(reference, tmp_path)
    shutil.rmtree(run / "checkpoints")
    before = (run / "summary.json").read_text()
    refused = cli("sft", str(recipe), "--resume")
    assert refused.code == 2 and "holds a finished run" in refused.err and "--overwrite" in refused.err
    assert (run / "summary.json").read_text() == before


def test_a_metrics_line_cut_short_by_a_kill_is_dropped(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    checkpoints.trim_metrics(tmp_path, 2)
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n'


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_saves_a_checkpoint_and_resume_finishes_the_run(
    reference: Path, tmp_path: Path, cli, monkeypatch: pytest.MonkeyPatch, signum: int
) -> None:
    seal = checkpoints.finalize

    def finalize_then_signal(staged: Path, *args: object, **kwargs: object) -> Path:
        sealed = seal(staged, *args, **kwargs)
        if checkpoints.step_of(staged) == 4:
            os.kill(os.getpid(), signum)  # arrives mid-run, after checkpoint-4, as from `kill` or Ctrl-C
        return sealed

    monkeypatch.setattr(checkpoints, "finalize", finalize_then_signal)
    recipe = make_recipe(tmp_path, tmp_path / "run")
    stopped = cli("sft", str(recipe))
    assert stopped.code == 128 + signum
    root = tmp_path / "run" / "checkpoints"
    assert (
        f"stopped by {signal.Signals(signum).name}: saved {root / 'checkpoint-5'}; resume with --resume" in stopped.err
    )
    assert checkpoints.latest(root).path == root / "checkpoint-5"
    assert not (tmp_path / "run" / "summary.json").exists()
    monkeypatch.setattr(checkpoints, "finalize", seal)

    resumed = cli("sft", str(recipe), "--resume")
    assert resumed.code == 0, resumed.err
    assert "(step 5 of 12)" in resumed.out
    assert_matches_reference(tmp_path / "run", reference)


HARNESS = """
import sys, time
from pathlib import Path
import tunekit.train.checkpoints as checkpoints

pause_before, pause_after, marker = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
seal = checkpoints.finalize

def finalize(staged, *args, **kwargs):
    # Hold still where the test wants to SIGKILL: with checkpoint-N written but not yet sealed
    # (pause_before), or just after it was sealed (pause_after).
    step = checkpoints.step_of(staged)
    if step == pause_before:
        marker.write_text(f"writing {step}")
        time.sleep(600)
    sealed = seal(staged, *args, **kwargs)
    if step == pause_after:
        marker.write_text(f"saved {step}")
        time.sleep(600)
    return sealed

checkpoints.finalize = finalize
from tunekit.cli import main
main(sys.argv[4:])
"""


def kill_when(tmp_path: Path, pause_before: int, pause_after: int, *args: str) -> str:
    """Run `tunekit ARGS` in a subprocess, SIGKILL it at the pause, return its output."""
    harness = tmp_path / "harness.py"
    harness.write_text(HARNESS)
    marker = tmp_path / f"marker-{pause_before}-{pause_after}"
    process = subprocess.Popen(
        [sys.executable, str(harness), str(pause_before), str(pause_after), str(marker), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists(), f"the run never reached its pause (exit {process.poll()})"
    process.send_signal(signal.SIGKILL)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    return output


def test_sigkill_after_a_checkpoint_and_during_the_next_then_resume_matches(
    reference: Path, tmp_path: Path, cli
) -> None:
    recipe = make_recipe(tmp_path, tmp_path / "run")
    root = tmp_path / "run" / "checkpoints"

    kill_when(tmp_path, 0, 4, "sft", str(recipe))  # killed just after checkpoint-4 was sealed
    assert checkpoints.latest(root).path == root / "checkpoint-4"
    assert not (tmp_path / "run" / "summary.json").exists()

    output = kill_when(tmp_path, 8, 0, "sft", str(recipe), "--resume")  # killed while writing checkpoint-8
    assert f"resuming from {root / 'checkpoint-4'} (step 4 of 12)" in output
    assert (root / checkpoints.STAGING / "checkpoint-8" / "model.safetensors").exists()
    assert not (root / "checkpoint-8").exists()
    assert checkpoints.latest(root).path == root / "checkpoint-4"

    resumed = cli("sft", str(recipe), "--resume")
    assert resumed.code == 0, resumed.err
    assert f"resuming from {root / 'checkpoint-4'} (step 4 of 12)" in resumed.out
    assert not (root / checkpoints.STAGING).exists()  # the half-written one was cleared
    assert_matches_reference(tmp_path / "run", reference)

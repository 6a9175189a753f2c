"""The run folder is never wiped: --overwrite writes the new run beside it and swaps it in when the run ends
well; a failed attempt (a non-finite loss, a mistake found during training, Ctrl-C) leaves the previous run
exactly as it was (hashed); an OS lock keeps a second writer out, and a stale lock is taken over.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import chat_rows, reversal_pairs, write_jsonl, write_recipe
from tunekit.folders import LOCK
from tunekit.train import checkpoints


def small_recipe(tmp_path: Path, method: str = "sft", **training: object) -> Path:
    data = write_jsonl(tmp_path / "pairs.jsonl", chat_rows(reversal_pairs(24, seed=2)))
    settings = {"learning_rate": 3e-3, "max_steps": 2, "batch_size": 4, "logging_steps": 1, "seed": 0, **training}
    return write_recipe(
        tmp_path / f"{method}.yaml",
        method=method,
        model={"name_or_path": "tiny:llama"},
        adapter={"type": "none"},
        data={"train": str(data), "eval": str(data), **({"max_length": 48} if method == "sft" else {})},
        training=settings,
        output_dir=str(tmp_path / "run"),
        **(
            {"ppo": {"reward_function": "tests.test_rundir:wrong_count", "max_new_tokens": 4, "max_prompt_length": 32}}
            if method == "ppo"
            else {}
        ),
    )


def wrong_count(prompts: list, completions: list) -> list[float]:
    """A reward function with a bug the user can fix: one value short."""
    return [0.0] * (len(completions) - 1)


def nan_reward(prompts: list, completions: list) -> list[float]:
    """A reward function that divides by zero somewhere: NaN for every completion."""
    return [float("nan")] * len(completions)


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
    }


def previous_run(cli, tmp_path: Path) -> dict[str, str]:
    """A finished 2-step run in tmp_path/run; its digest."""
    done = cli("sft", str(small_recipe(tmp_path)))
    assert done.code == 0, done.err
    return digest(tmp_path / "run")


def test_overwrite_swaps_in_a_run_that_ended_well(cli, tmp_path: Path) -> None:
    before = previous_run(cli, tmp_path)
    again = cli("sft", str(small_recipe(tmp_path)), "training.max_steps=3", "--overwrite")
    assert again.code == 0, again.err
    run = tmp_path / "run"
    assert f"-> {run} (written to {run}.next, swapped in when the run ends well)" in again.out
    assert f"saved {run / 'final'}" in again.out
    assert json.loads((run / "summary.json").read_text())["steps"] == 3
    assert digest(run) != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.jsonl", "run", "sft.yaml"]  # no .next, .previous
    assert not (run / LOCK).exists()


def test_a_non_finite_loss_stops_keeps_the_previous_run_and_the_last_good_checkpoint(cli, tmp_path: Path) -> None:
    """The learning rate warms up from 0: step 1 is finite (and saved), step 2's update overflows."""
    before = previous_run(cli, tmp_path)
    recipe = small_recipe(tmp_path)
    diverging = (
        "training.learning_rate=1e38",
        "training.warmup_steps=2",
        "training.save_steps=1",
        "training.max_steps=4",
    )
    failed = cli("sft", str(recipe), *diverging, "training.max_steps=4", "--overwrite")
    assert failed.code == 1
    assert "Traceback" not in failed.err and "unexpected error" not in failed.err
    assert "error: training stopped at step 2:" in failed.err and "last finite loss" in failed.err
    assert "no final/ was written and the last good checkpoint, checkpoint-1, is kept" in failed.err
    assert digest(tmp_path / "run") == before  # the finished run, byte for byte
    attempt = tmp_path / "run.next"
    assert f"{tmp_path / 'run'} is unchanged" in failed.err and f"--resume output_dir={attempt}" in failed.err
    assert checkpoints.latest(attempt / "checkpoints").path == attempt / "checkpoints" / "checkpoint-1"
    assert not (attempt / "final").exists() and not (attempt / "summary.json").exists()
    assert not (attempt / LOCK).exists() and not (tmp_path / "run" / LOCK).exists()

    blocked = cli("sft", str(recipe), "--overwrite")  # the attempt's checkpoint is not thrown away silently
    assert blocked.code == 2 and "holds an earlier attempt to replace" in blocked.err
    assert digest(tmp_path / "run") == before


def test_a_non_finite_loss_in_a_new_folder_writes_no_final(cli, tmp_path: Path) -> None:
    recipe = small_recipe(tmp_path, learning_rate=1e38, warmup_steps=2, save_steps=1, max_steps=4)
    failed = cli("sft", str(recipe))
    assert failed.code == 1 and "training stopped at step 2" in failed.err
    run = tmp_path / "run"
    assert not (run / "final").exists() and not (run / "summary.json").exists()
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["checkpoint-1"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 2  # nothing logged after the stop


def test_a_mistake_found_during_training_keeps_the_previous_run(cli, tmp_path: Path) -> None:
    """PPO calls the reward function only once it samples: its bug surfaces in the train stage, exit 2."""
    before = previous_run(cli, tmp_path)
    recipe = small_recipe(tmp_path, "ppo", batch_size=2)
    failed = cli("ppo", str(recipe), "--overwrite")
    assert failed.code == 2
    lines = failed.err.strip().splitlines()
    assert len(lines) == 1 and "wrong_count returned" in lines[0] and "values for" in lines[0], failed.err
    assert digest(tmp_path / "run") == before
    assert not (tmp_path / "run.next").exists()


def test_ppo_stops_at_a_non_finite_loss_too(cli, tmp_path: Path) -> None:
    recipe = small_recipe(tmp_path, "ppo", batch_size=2, max_steps=3)
    failed = cli("ppo", str(recipe), "ppo.reward_function=tests.test_rundir:nan_reward")
    assert failed.code == 1 and "Traceback" not in failed.err
    assert "error: training stopped at step 1: the loss is nan (no finite loss)" in failed.err, failed.err
    assert "check the reward source" in failed.err
    assert not (tmp_path / "run" / "final").exists() and not (tmp_path / "run" / "summary.json").exists()


def test_ctrl_c_during_an_overwrite_keeps_the_previous_run(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = previous_run(cli, tmp_path)
    seal = checkpoints.finalize

    def finalize_then_interrupt(staged: Path, *args: object, **kwargs: object) -> Path:
        sealed = seal(staged, *args, **kwargs)
        if checkpoints.step_of(staged) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C, after checkpoint-2
        return sealed

    monkeypatch.setattr(checkpoints, "finalize", finalize_then_interrupt)
    stopped = cli("sft", str(small_recipe(tmp_path)), "training.max_steps=8", "training.save_steps=2", "--overwrite")
    assert stopped.code == 130
    assert "stopped by SIGINT: saved checkpoint-3" in stopped.err  # the step it was in finishes, then saves
    assert f"--resume output_dir={tmp_path / 'run.next'}" in stopped.err
    assert digest(tmp_path / "run") == before


HOLDER = """
import fcntl, json, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, json.dumps({"pid": os.getpid(), "command": "tunekit sft elsewhere.yaml"}).encode())
print("locked", flush=True)
time.sleep(120)
"""


def test_a_live_lock_refuses_a_second_writer_and_a_stale_one_is_taken_over(cli, tmp_path: Path) -> None:
    folder = tmp_path / "tiny"
    assert cli("tiny-model", str(folder)).code == 0
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder / LOCK)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
    try:
        refused = cli("tiny-model", str(folder), "--overwrite", "--seed", "1")
        assert refused.code == 2
        assert f"pid {holder.pid} `tunekit sft elsewhere.yaml`" in refused.err, refused.err
    finally:
        holder.kill()
        holder.wait()
    # The holder is gone and its lock file stays behind, naming it: the OS lock went with the process.
    assert str(holder.pid) in (folder / LOCK).read_text()
    replaced = cli("tiny-model", str(folder), "--overwrite", "--seed", "1")
    assert replaced.code == 0, replaced.err
    assert not (folder / LOCK).exists() and (folder / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_merge_and_recipes_copy_replace_only_their_own_kind(cli, tmp_path: Path) -> None:
    recipe = tmp_path / "mine.yaml"
    assert cli("recipes", "copy", "tiny/sft-lora", str(recipe)).code == 0
    assert cli("recipes", "copy", "quickstart", str(recipe), "--overwrite").code == 0  # a recipe: replaced
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert cli("recipes", "copy", "quickstart", str(notes), "--overwrite").code == 2
    assert cli("recipes", "copy", "quickstart", str(notes), "--overwrite-any").code == 0
    assert notes.read_text().startswith("# tunekit sft recipes/quickstart.yaml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.yaml", "notes.txt"]


def test_overwrite_any_replaces_a_folder_tunekit_did_not_write(cli, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "results.csv").write_text("a,b\n")
    assert cli("tiny-model", str(folder), "--overwrite").code == 2
    assert cli("tiny-model", str(folder), "--overwrite-any").code == 0
    assert not (folder / "results.csv").exists() and (folder / "config.json").exists()

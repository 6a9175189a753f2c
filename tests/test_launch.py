"""Scaling out through `accelerate launch`: the command tunekit builds, the packaged configs, and a real
2-process run (gloo on this CPU) that ends with identical weights on both ranks and matches a
1-process run with the same global batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import chat_rows, reversal_pairs, write_jsonl, write_recipe
from tunekit.errors import UserError
from tunekit.train import launch


def small_recipe(tmp_path: Path, name: str = "recipe.yaml", **training: object) -> Path:
    data = write_jsonl(tmp_path / "pairs.jsonl", chat_rows(reversal_pairs(32, seed=3)))
    settings = {"learning_rate": 3e-3, "max_steps": 8, "batch_size": 4, "logging_steps": 4, "seed": 0, **training}
    return write_recipe(
        tmp_path / name,
        method="sft",
        model={"name_or_path": "tiny:llama"},
        adapter={"type": "none"},
        data={"train": str(data), "eval": str(data), "max_length": 48},
        training=settings,
        output_dir=str(tmp_path / "run"),
    )


def test_help_shows_launch_and_resume_flags(cli) -> None:
    shown = cli("sft", "--help")
    assert shown.code == 0
    for flag in ("--num-processes", "--accelerate-config", "--resume", "--force", "--overwrite"):
        assert flag in shown.out
    listed = cli("accelerate-config", "--help")
    assert listed.code == 0 and "accelerate config" in listed.out


def test_accelerate_config_lists_and_prints_the_packaged_configs(cli) -> None:
    listed = cli("accelerate-config")
    assert listed.code == 0
    assert launch.config_names() == ["ddp", "deepspeed-zero2", "deepspeed-zero3", "fsdp", "multi-node"]
    for name in launch.config_names():
        assert name in listed.out
    printed = cli("accelerate-config", "multi-node")
    assert printed.code == 0 and "machine_rank: 0" in printed.out and "main_process_ip" in printed.out


def test_build_command_runs_tunekit_as_a_module_under_accelerate() -> None:
    config = launch.resolve_config("fsdp")
    command = launch.build_command(["sft", "r.yaml", "training.max_steps=5", "--resume"], config, 8, python="py")
    assert command == [
        "py",
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "--num_processes",
        "8",
        "-m",
        "tunekit",
        "sft",
        "r.yaml",
        "training.max_steps=5",
        "--resume",
    ]
    kept = launch.build_command(["sft", "r.yaml"], config, None, python="py")
    assert "--num_processes" not in kept  # the config's own count stands


def test_relaunch_hands_the_command_to_the_injected_launcher(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(name, raising=False)
    own = tmp_path / "mine.yaml"
    own.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_processes: 3\n")
    seen: list[list[str]] = []

    def fake(command: list[str], env: dict[str, str]) -> int:
        seen.append(command)
        assert env[launch.EXIT_FILE_ENV] and env[launch.SHUTDOWN_TIMEOUT_ENV] == "600"
        return 7

    assert launch.relaunch(("sft", "r.yaml", "--overwrite"), 2, None, launcher=fake) == 7
    assert seen[0][seen[0].index("--config_file") + 1] == str(launch.CONFIG_DIR / "ddp.yaml")
    assert seen[0][seen[0].index("--num_processes") + 1] == "2"
    assert seen[0][-5:] == ["-m", "tunekit", "sft", "r.yaml", "--overwrite"]
    assert launch.relaunch(("sft", "r.yaml"), None, str(own), launcher=fake) == 7
    assert seen[1][seen[1].index("--config_file") + 1] == str(own.resolve())
    assert "--num_processes" not in seen[1]  # the file says 3


def test_launch_flags_are_refused_inside_a_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="already started by a launcher"):
        launch.relaunch(("sft", "r.yaml"), 2, None, launcher=lambda command, env: 0)


def test_unknown_config_name_exits_2_listing_the_names(cli, tmp_path: Path) -> None:
    result = cli("sft", str(small_recipe(tmp_path)), "--accelerate-config", "zero9")
    assert result.code == 2
    assert "zero9" in result.err
    for name in launch.config_names():
        assert name in result.err
    assert not (tmp_path / "run").exists()


def test_fsdp_and_deepspeed_are_refused_without_a_gpu() -> None:
    # accelerate enables FSDP only for GPU-like devices: on a CPU the fsdp config would run plain DDP.
    for name in ("fsdp", "deepspeed-zero2", "deepspeed-zero3"):
        kind = launch.read_config(launch.resolve_config(name))["distributed_type"]
        with pytest.raises(UserError, match="needs GPUs"):
            launch.check_device(launch.resolve_config(name), kind, cuda=False)
        launch.check_device(launch.resolve_config(name), kind, cuda=True)
    launch.check_device(launch.resolve_config("ddp"), "MULTI_GPU", cuda=False)


@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3", "multi-node"])
def test_packaged_configs_pass_accelerate_launch_validation(name: str) -> None:
    """The checks `accelerate launch` runs on a config before starting anything, and the environment it
    would hand the processes (DeepSpeed itself is not installed here: its launcher is not run)."""
    from accelerate.commands.config.config_args import load_config_from_file

    # _validate_launch_command is private, but it is exactly what `accelerate launch` runs on a config.
    from accelerate.commands.launch import (
        _validate_launch_command,
        launch_command_parser,
    )
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    path = launch.resolve_config(name)
    loaded = load_config_from_file(str(path))
    assert loaded.mixed_precision == "no"  # precision comes from the recipe
    argv = ["--config_file", str(path), "--num_processes", "4", "-m", "tunekit", "sft", "r.yaml"]
    parsed = launch_command_parser().parse_args(argv)
    args, defaults, _ = _validate_launch_command(parsed)
    if name.startswith("deepspeed"):
        args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
        _, env = prepare_deepspeed_cmd_env(args)
        assert env["ACCELERATE_USE_DEEPSPEED"] == "true"
        assert env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == name[-1]
    else:
        env = prepare_multi_gpu_env(args)
        assert (env.get("ACCELERATE_USE_FSDP") == "true") == (name == "fsdp")
        assert args.num_machines == (2 if name == "multi-node" else 1)


def test_two_processes_match_one_process_with_the_same_global_batch(cli, tmp_path: Path) -> None:
    """`--num-processes 2` relaunches under accelerate (gloo here); both ranks end with the same weights,
    and those match a 1-process run whose batch is the 2-process global batch."""
    from safetensors.torch import load_file

    earlier = tmp_path / "run"  # an earlier run, replaced: the relaunching command holds the lock for its ranks
    earlier.mkdir()
    (earlier / "summary.json").write_text('{"steps": 1}')
    two = cli("sft", str(small_recipe(tmp_path)), "--num-processes", "2", "--overwrite")
    assert two.code == 0, two.err
    assert not (tmp_path / "run.next").exists() and not (earlier / ".tunekit.lock").exists()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["distributed_type"] == "MULTI_CPU"
    assert summary["global_batch_size"] == 2 * 4 * 1
    assert len(summary["replica_checksums"]) == 2 and summary["replicas_identical"] is True
    assert summary["steps"] == 8

    single = small_recipe(tmp_path, "single.yaml", batch_size=8)
    one = cli("sft", str(single), f"output_dir={tmp_path / 'one'}")
    assert one.code == 0, one.err
    alone = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert alone["world_size"] == 1 and alone["global_batch_size"] == 8
    assert abs(summary["eval_loss_after"] - alone["eval_loss_after"]) < 1e-4
    assert summary["eval_loss_after"] < summary["eval_loss_before"] - 0.1  # it trained
    a = load_file(tmp_path / "run" / "final" / "model.safetensors")
    b = load_file(tmp_path / "one" / "final" / "model.safetensors")
    difference = max(float((a[k] - b[k]).abs().max()) for k in a)
    mean = sum(float((a[k] - b[k]).abs().sum()) for k in a) / sum(a[k].numel() for k in a)
    print(f"2 processes vs 1: max |weight difference| {difference:.1e}, mean {mean:.1e}")  # docs/multi-gpu.md
    # Float summation order differs (two 4-row halves vs one 8-row batch), and Adam divides by the root of
    # tiny second moments, so a few weights differ by up to ~1e-4 after 8 steps that move weights by ~1e-2;
    # copies trained apart, or gradients not averaged over the global batch, differ by ~1e-3 and more.
    assert difference < 1e-3 and mean < 1e-6


def test_ppo_refuses_several_processes_and_resume(cli, tmp_path: Path) -> None:
    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "ppo.yaml")
    out = f"output_dir={tmp_path / 'run'}"
    several = cli("ppo", recipe, out, "--num-processes", "2")
    assert several.code == 2 and "tunekit ppo runs in one process" in several.err
    resumed = cli("ppo", recipe, out, "--resume")
    assert resumed.code == 2 and "cannot --resume" in resumed.err
    assert not (tmp_path / "run").exists()


def test_launch_env_exit_file_and_exit_code_choice(tmp_path: Path) -> None:
    exit_file = tmp_path / "exit.txt"
    env = launch.launch_env({"PATH": "/bin"}, exit_file)
    assert env == {"PATH": "/bin", launch.EXIT_FILE_ENV: str(exit_file), "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "600"}
    own = launch.launch_env({"TORCH_ELASTIC_SHUTDOWN_TIMEOUT": "90"}, exit_file)
    assert own["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "90"  # the user's own setting stands
    rank1 = {launch.EXIT_FILE_ENV: str(exit_file), "WORLD_SIZE": "2", "LOCAL_RANK": "1", "RANK": "1"}
    launch.record_exit(2, rank1)
    assert launch.read_exit_file(exit_file) is None  # only rank 0 records
    launch.record_exit(2, {**rank1, "LOCAL_RANK": "0", "RANK": "0"})
    assert launch.read_exit_file(exit_file) == 2
    assert launch.chosen_exit_code(1, 2) == 2  # torch elastic's 1 -> rank 0's user mistake
    assert launch.chosen_exit_code(1, 0) == 1  # rank 0 ended well, another rank failed
    assert launch.chosen_exit_code(143, None) == 143 and launch.chosen_exit_code(0, None) == 0


@pytest.mark.slow  # three Python processes start torch: ~20 s on a busy 2-core machine
def test_a_mistake_found_in_the_launched_processes_exits_2_with_one_error_line(tmp_path: Path) -> None:
    """adapter.target_modules is checked against the loaded model, i.e. after the relaunch, in both
    ranks: the relaunching command exits 2 (not torch elastic's 1), and only rank 0 prints `error:`."""
    import os
    import subprocess
    import sys

    recipe = small_recipe(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "LOCAL_RANK", "RANK")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tunekit",
            "sft",
            str(recipe),
            "adapter.type=lora",
            "adapter.target_modules=[no_such_proj]",
            "--num-processes",
            "2",
        ],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2, done.stderr
    assert len(errors) == 1 and "adapter.target_modules: no_such_proj not found" in errors[0], done.stderr
    assert not (tmp_path / "run").exists()


def test_trackers_only_on_rank_0(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tunekit.config import load_recipe
    from tunekit.train.trackers import RunLog, TensorBoard

    recipe = load_recipe(small_recipe(tmp_path), ["training.report_to=tensorboard"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, expected in (("1", 0), ("0", 1)):
        monkeypatch.setenv("RANK", rank)
        out = tmp_path / f"rank{rank}"
        out.mkdir()
        log = RunLog.open(recipe, out)
        assert len([t for t in log.trackers if isinstance(t, TensorBoard)]) == expected
        log.metrics({"step": 1, "loss": 2.0})
        log.finish()
        assert (out / "tensorboard").exists() == bool(expected)
        assert (out / "metrics.jsonl").exists() == bool(expected)


def test_training_without_the_ddp_wrapper_fails_at_its_start() -> None:
    """Whatever the library versions, several processes never train unsynchronised copies quietly."""
    from types import SimpleNamespace

    import torch
    from torch.nn.parallel import DistributedDataParallel

    from tunekit.train.callbacks import RequireDDP

    model = torch.nn.Linear(2, 2)
    unwrapped = RequireDDP(SimpleNamespace(model_wrapped=model))
    with pytest.raises(RuntimeError, match="left the model without DDP"):
        unwrapped.on_train_begin(SimpleNamespace(world_size=2), None, None)
    # A DDP module anywhere in the wrapper (torch.compile holds it as a submodule) passes.
    holder = torch.nn.Module()
    holder.inner = DistributedDataParallel.__new__(DistributedDataParallel)
    torch.nn.Module.__init__(holder.inner)
    RequireDDP(SimpleNamespace(model_wrapped=holder)).on_train_begin(SimpleNamespace(world_size=2), None, None)


def test_different_replicas_fail_the_run_after_summary(cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tunekit.train import fit

    scale = fit._scale_figures
    monkeypatch.setattr(
        fit,
        "_scale_figures",
        lambda trainer, setup: {**scale(trainer, setup), "replica_checksums": [1.0, 2.0], "replicas_identical": False},
    )
    result = cli("sft", str(small_recipe(tmp_path, max_steps=2)))
    assert result.code == 1
    assert "ended with different weights" in result.err
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["replicas_identical"] is False


def test_run_launcher_forwards_a_signal_and_exits_128_plus_it() -> None:
    import os
    import signal
    import sys
    import threading

    # A stand-in launcher that dies of the forwarded SIGTERM without recording anything.
    command = [sys.executable, "-c", "import sys, time; print('up', flush=True); time.sleep(30)"]
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    try:
        assert launch.run_launcher(command, dict(os.environ)) == 128 + signal.SIGTERM
    finally:
        timer.cancel()
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back

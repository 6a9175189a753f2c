"""Several processes, GPUs or machines through `accelerate launch`: tunekit never spawns ranks itself.

    $ tunekit sft recipes/tiny/sft-full.yaml --num-processes 2          # DDP (gloo on a CPU)
    $ tunekit sft recipe.yaml --accelerate-config fsdp --num-processes 8
    $ accelerate launch --config_file my.yaml -m tunekit sft recipe.yaml  # the same, started by hand

`--num-processes` / `--accelerate-config` make a training command run itself again as

    python -m accelerate.commands.launch --config_file C [--num_processes N] -m tunekit ARGS

where ARGS is the command line without those two flags, so a launched process never launches again.
`build_command` is pure and `relaunch` takes the launcher as an argument, so tests check the
command without starting anything. Inside a launch (torchrun and accelerate set WORLD_SIZE /
LOCAL_RANK / RANK in every process) only rank 0 writes the run folder and prints.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import FrameType

from tunekit.errors import UserError

CONFIG_DIR = Path(__file__).with_name("accelerate_configs")
DEFAULT_CONFIG = "ddp"  # what --num-processes N alone uses
LAUNCH_ENV = ("LOCAL_RANK", "WORLD_SIZE")  # set by torchrun and accelerate launch in each process
Launcher = Callable[[list[str]], int]


class Launched(Exception):
    """The run took place in launched processes; the command that launched them exits with `code`."""

    def __init__(self, code: int) -> None:
        super().__init__(f"launched processes exited with code {code}")
        self.code = code


def config_names() -> list[str]:
    """The accelerate configs shipped inside the package (`--accelerate-config NAME`)."""
    return sorted(path.stem for path in CONFIG_DIR.glob("*.yaml"))


def resolve_config(value: str) -> Path:
    """A packaged config name, or a path to the user's own accelerate config file."""
    path = Path(value).expanduser()
    if path.is_file():
        return path.resolve()
    if value in config_names():
        return CONFIG_DIR / f"{value}.yaml"
    raise UserError(
        f"--accelerate-config {value}: no such file, and not one of tunekit's configs "
        f"({', '.join(config_names())})"
    )


def config_describes(path: Path) -> str:
    """The first comment line of a config: what it is for."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def inside_launch(env: Mapping[str, str] = os.environ) -> bool:
    return any(name in env for name in LAUNCH_ENV)


def world_size(env: Mapping[str, str] = os.environ) -> int:
    return int(env.get("WORLD_SIZE", "1"))


def is_main_process(env: Mapping[str, str] = os.environ) -> bool:
    """Global rank 0 (RANK), or not launched at all."""
    return int(env.get("RANK", "0")) == 0


def wait_for_everyone() -> None:
    """A barrier across the launched processes; nothing when there is one process."""
    if world_size() > 1:
        import torch
        from accelerate import PartialState

        # cpu= as TrainingArguments(use_cpu=...) will ask later: the state is one shared singleton.
        PartialState(cpu=not torch.cuda.is_available()).wait_for_everyone()


def read_config(config: Path) -> dict:
    import yaml

    loaded = yaml.safe_load(config.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise UserError(f"--accelerate-config {config}: not an accelerate config (a YAML mapping)")
    return loaded


def check_device(config: Path, distributed_type: str, cuda: bool) -> None:
    """FSDP and DeepSpeed need GPUs. accelerate turns FSDP on only for GPU-like devices: on a CPU it would
    quietly run plain DDP over gloo, so say so instead of pretending to shard."""
    if not cuda and distributed_type in ("FSDP", "DEEPSPEED"):
        raise UserError(
            f"--accelerate-config {config.name}: {distributed_type} needs GPUs (on a CPU accelerate would run plain "
            "DDP instead); use --accelerate-config ddp or --num-processes N alone here"
        )


def build_command(
    args: Sequence[str],
    config: Path,
    num_processes: int | None,
    python: str = sys.executable,
) -> list[str]:
    """The `accelerate launch` command that runs `tunekit ARGS` in every process.

    `num_processes` counts processes on all machines together, as accelerate does; None keeps the
    config's own count.
    """
    command = [python, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    if num_processes is not None:
        command += ["--num_processes", str(num_processes)]
    return command + ["-m", "tunekit", *args]


def launch_requested(num_processes: int | None, accelerate_config: str | None) -> bool:
    return accelerate_config is not None or (num_processes is not None and num_processes > 1)


def relaunch(
    args: Sequence[str],
    num_processes: int | None,
    accelerate_config: str | None,
    launcher: Launcher | None = None,
) -> None:
    """Run `tunekit ARGS` under accelerate launch and raise `Launched` with its exit code."""
    if inside_launch():
        raise UserError(
            "--num-processes / --accelerate-config start processes, and this one was already started "
            f"by a launcher (WORLD_SIZE={world_size()}): give those settings to the launcher instead"
        )
    import torch

    config = resolve_config(accelerate_config or DEFAULT_CONFIG)
    settings = read_config(config)
    check_device(config, str(settings.get("distributed_type", "NO")), torch.cuda.is_available())
    if num_processes is None and not (isinstance(settings.get("num_processes"), int) and settings["num_processes"] > 0):
        num_processes = max(torch.cuda.device_count(), 1)  # every GPU on this machine
    command = build_command(args, config, num_processes)
    print("launching: " + " ".join(command[1:]), flush=True)  # from `-m accelerate...`: the python is ours
    raise Launched((launcher or run_launcher)(command))


def run_launcher(command: list[str]) -> int:
    """Start the launcher and wait; SIGINT / SIGTERM sent to this process are passed on to it.

    The launcher (torch elastic) turns them into SIGTERM for every rank, which save a checkpoint and
    stop (see tunekit.checkpoints.StopOnSignal).
    """
    # Its own session: a Ctrl-C in the terminal then reaches the launcher once (forwarded), not twice.
    process = subprocess.Popen(command, start_new_session=True)

    def forward(signum: int, _frame: FrameType | None) -> None:
        process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

"""Several processes, GPUs or machines through `accelerate launch`: tunekit never spawns ranks itself.

    $ tunekit sft recipes/tiny/sft-full.yaml --num-processes 2          # DDP (gloo on a CPU)
    $ tunekit sft recipe.yaml --accelerate-config fsdp --num-processes 8
    $ accelerate launch --config_file my.yaml -m tunekit sft recipe.yaml  # the same, started by hand

`--num-processes` / `--accelerate-config` make a training command run itself again as

    python -m accelerate.commands.launch --config_file C [--num_processes N] -m tunekit ARGS

where ARGS is the command line without those two flags, so a launched process never launches again.
The relaunching command holds the run folder's lock (tunekit.folders) until the launch ends, and tells
the processes it starts its pid, so their rank 0 writes the folder under that lock instead of waiting.
`build_command` and `launch_env` are pure and `relaunch` takes the launcher as an argument, so tests
check the command without starting anything. Inside a launch (torchrun and accelerate set WORLD_SIZE /
LOCAL_RANK / RANK in every process) only rank 0 writes the run folder and prints.

Exit codes: torch elastic turns any failed rank into exit 1 of `accelerate launch`. So the relaunching
command names a file in EXIT_FILE_ENV; rank 0's error boundary (tunekit.cli.main) writes its exit code
there (2 for a user mistake, 130/143 after a signal), and the relaunching command exits with that.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType

from tunekit.errors import UserError

CONFIG_DIR = Path(__file__).with_name("accelerate_configs")
DEFAULT_CONFIG = "ddp"  # what --num-processes N alone uses
LAUNCH_ENV = ("LOCAL_RANK", "WORLD_SIZE")  # set by torchrun and accelerate launch in each process
EXIT_FILE_ENV = "TUNEKIT_EXIT_FILE"  # where rank 0 of a relaunch records its exit code
# torch elastic SIGKILLs the ranks this long after passing a signal on (default 30 s); a checkpoint of a
# large model on a slow disk takes longer, so tunekit's relaunch waits up to 10 minutes.
SHUTDOWN_TIMEOUT_ENV = "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"
SHUTDOWN_TIMEOUT_S = 600
Launcher = Callable[[list[str], dict[str, str]], int]  # (command, environment) -> exit code


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
        f"--accelerate-config {value}: no such file, and not one of tunekit's configs ({', '.join(config_names())})"
    )


def config_describes(path: Path) -> str:
    """The first comment line of a config: what it is for."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def inside_launch(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env  # read now: a test or a launcher may set it later
    return any(name in env for name in LAUNCH_ENV)


def world_size(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env  # read now: a test or a launcher may set it later
    return int(env.get("WORLD_SIZE", "1"))


def is_main_process(env: Mapping[str, str] | None = None) -> bool:
    """Global rank 0 (RANK), or not launched at all."""
    env = os.environ if env is None else env  # read now: a test or a launcher may set it later
    return int(env.get("RANK", "0")) == 0


def on_main(echo: Callable[..., None]) -> Callable[..., None]:
    """`echo` in the main process; in the other ranks of a launch a function that prints nothing, since
    every rank meets the same lines and the same mistakes and one copy of each is enough."""
    return echo if is_main_process() else _silent


def _silent(*_args: object, **_kwargs: object) -> None:
    pass


def wait_for_everyone() -> None:
    """A barrier across the launched processes; nothing when there is one process."""
    if world_size() > 1:
        import torch
        from accelerate import PartialState

        # cpu= as TrainingArguments(use_cpu=...) will ask later: the state is one shared singleton.
        PartialState(cpu=not torch.cuda.is_available()).wait_for_everyone()


@contextlib.contextmanager
def main_process_first() -> Iterator[None]:
    """Rank 0 runs the block first (builds the data cache), then the others (which load it); one process: no-op."""
    if world_size() <= 1:
        yield
        return
    import torch
    from accelerate import PartialState

    with PartialState(cpu=not torch.cuda.is_available()).main_process_first():
        yield


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
) -> int:
    """Run `tunekit ARGS` under accelerate launch and wait; the exit code of the launch (rank 0's own
    when it recorded one)."""
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
    handle, name = tempfile.mkstemp(prefix="tunekit-exit-", suffix=".txt")
    os.close(handle)
    exit_file = Path(name)
    try:
        code = (launcher or run_launcher)(command, launch_env(os.environ, exit_file, lock_holder=os.getpid()))
        return chosen_exit_code(code, read_exit_file(exit_file))
    finally:
        exit_file.unlink(missing_ok=True)


def launch_env(base: Mapping[str, str], exit_file: Path, lock_holder: int | None = None) -> dict[str, str]:
    """The environment `accelerate launch` runs in: `base`, the exit file, a shutdown timeout long
    enough for a checkpoint save (unless the user set their own), and the pid of this process, which
    holds the run folder's lock for the processes it starts (tunekit.folders)."""
    from tunekit.folders import LOCK_ENV

    env = dict(base)
    env[EXIT_FILE_ENV] = str(exit_file)
    if lock_holder is not None:
        env[LOCK_ENV] = str(lock_holder)
    env.setdefault(SHUTDOWN_TIMEOUT_ENV, str(SHUTDOWN_TIMEOUT_S))
    return env


def chosen_exit_code(launcher_code: int, recorded: int | None) -> int:
    """Rank 0's own exit code when the launch failed and rank 0 recorded one, else the launcher's.

    A launch that succeeded stays 0; one where rank 0 ended well but another rank failed keeps the
    launcher's failure.
    """
    if launcher_code != 0 and recorded:
        return recorded
    return launcher_code


def read_exit_file(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return int(text) if text.lstrip("-").isdigit() else None  # empty: rank 0 never got to its boundary


def record_exit(code: object, env: Mapping[str, str] | None = None) -> None:
    """In rank 0 of a tunekit relaunch, write the exit code where the relaunching command reads it."""
    env = os.environ if env is None else env  # read now: a test or a launcher may set it later
    path = env.get(EXIT_FILE_ENV)
    if not path or not inside_launch(env) or not is_main_process(env):
        return
    number = code if isinstance(code, int) else (0 if code is None else 1)  # as sys.exit reads it
    try:
        Path(path).write_text(str(number), encoding="utf-8")
    except OSError:
        pass  # the launcher's own exit code stands


def run_launcher(command: list[str], env: dict[str, str]) -> int:
    """Start the launcher and wait; SIGINT / SIGTERM sent to this process are passed on to it.

    The launcher (torch elastic) passes them on to every rank, which save a checkpoint and stop (see
    tunekit.train.checkpoints.StopOnSignal). After a forwarded signal a failed launch exits 128 + the signal
    (130, 143), unless rank 0 recorded a code of its own.
    """
    # Its own session: a Ctrl-C in the terminal then reaches the launcher once (forwarded), not twice.
    process = subprocess.Popen(command, env=env, start_new_session=True)
    forwarded: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        forwarded.append(signum)
        process.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = process.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if forwarded and code != 0:
        return 128 + forwarded[-1]
    return 128 - code if code < 0 else code  # killed by a signal itself: the shell's convention

"""Checkpoints that survive crashes: written under a temporary name, renamed when complete, resumable.

    output_dir/checkpoints/
      .partial/checkpoint-12/    transformers writes here (TrainingArguments.output_dir)
      checkpoint-8/              complete: renamed from .partial/ after tunekit-checkpoint.json
      checkpoint-12/

transformers' Trainer writes a checkpoint straight into its final folder, file by file, and picks the
newest folder by name when resuming, so a run killed mid-write leaves a folder that looks like the
latest and fails to load. Here the Trainer writes into `.partial/`; `CheckpointWriter.on_save`
waits for every process, fsyncs the files, records their sizes and the recipe hash in
`tunekit-checkpoint.json`, and renames the folder into `checkpoints/` (one atomic rename), then
keeps the newest `training.save_total_limit`. `latest()` takes the newest folder whose manifest,
sizes, trainer state and file headers check out, and says why it skipped any newer one.

    >>> found = latest(Path("runs/never-run/checkpoints"))
    >>> found.path, found.skipped
    (None, [])
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from transformers import TrainerCallback

from tunekit.config import Recipe
from tunekit.errors import UserError
from tunekit.folders import CHECKPOINT_MANIFEST
from tunekit.models.loading import file_problem
from tunekit.train.rundir import write_atomically

MANIFEST = CHECKPOINT_MANIFEST
STAGING = ".partial"
NAME = re.compile(r"^checkpoint-(\d+)$")
# Recipe keys that cannot change what the next optimizer step computes: where the run folder is, how
# often it logs, evaluates and saves. Everything else (model, adapter, data, learning rate, schedule
# length, batch size, seed, ...) shapes the trajectory and goes into the hash.
UNHASHED = frozenset(
    {
        "output_dir",
        "training.logging_steps",
        "training.eval_steps",
        "training.save_steps",
        "training.save_total_limit",
        "training.report_to",
        "training.run_name",
        "training.project",
        "training.sample_every",
        "training.sample_prompts",
        "training.sample_count",
        "training.sample_max_new_tokens",
    }
)


# ---- the recipe hash ---------------------------------------------------------------------------


def recipe_fields(recipe: Recipe) -> dict[str, Any]:
    """The recipe as flat `section.key -> value`, without the keys in UNHASHED."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else key, sub)
        elif prefix not in UNHASHED:
            flat[prefix] = value

    walk("", recipe.model_dump(mode="json"))
    return flat


def recipe_hash(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def recipe_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """`key: old -> new` for each differing key, in key order."""
    keys = sorted(set(old) | set(new))
    missing = "(absent)"
    pairs = [(key, old.get(key, missing), new.get(key, missing)) for key in keys]
    return [f"{key}: {before} -> {after}" for key, before, after in pairs if before != after]


# ---- finding the checkpoint to resume from -----------------------------------------------------


@dataclass
class Found:
    """The newest complete checkpoint (or None) and the newer ones skipped, with the reason."""

    path: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    tokens_seen: int = 0  # input tokens trained up to the checkpoint (transformers counts on after a resume)
    before: dict[str, float] = field(default_factory=dict)  # the run's figures before training (FirstEvaluation)

    @property
    def step(self) -> int:
        return int(self.manifest.get("step", 0))


def step_of(path: Path) -> int | None:
    match = NAME.match(path.name)
    return int(match.group(1)) if match else None


def checkpoint_dirs(root: Path) -> list[Path]:
    """`checkpoint-N` folders in `root`, oldest step first (never the staging folder)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and step_of(p) is not None]
    return sorted(found, key=lambda p: step_of(p) or 0)


def latest(root: Path) -> Found:
    """The newest checkpoint in `root` that passes `problem()`; newer broken ones are listed as skipped."""
    found = Found()
    for path in reversed(checkpoint_dirs(root)):
        reason = problem(path)
        if reason is None:
            found.path = path
            found.manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
            state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
            found.tokens_seen = int(state.get("num_input_tokens_seen") or 0)
            kept = (state.get("stateful_callbacks") or {}).get("FirstEvaluation") or {}
            found.before = dict((kept.get("attributes") or {}).get("found") or {})
            return found
        found.skipped.append((path.name, reason))
    return found


def problem(path: Path) -> str | None:
    """Why the checkpoint at `path` cannot be loaded, or None when it can."""
    try:
        manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"no {MANIFEST} (it was never finished, or not written by tunekit)"
    except (OSError, ValueError) as err:
        return f"{MANIFEST} is unreadable ({err})"
    if manifest.get("step") != step_of(path):
        return f"{MANIFEST} is for step {manifest.get('step')}"
    for name, size in sorted(manifest.get("files", {}).items()):
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} has {file.stat().st_size} bytes, {size} were written"
        reason = file_problem(file)
        if reason:
            return f"{name} {reason}"
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        return f"trainer_state.json is unreadable ({err})"
    if state.get("global_step") != manifest["step"]:
        return f"trainer_state.json is at step {state.get('global_step')}"
    return None


def find_resume(recipe: Recipe, out: Path, force: bool) -> Found:
    """The checkpoint `--resume` starts from; refuses one made by another recipe unless `force`."""
    found = latest(out / "checkpoints")
    if found.path is None:
        finished = [name for name in ("final", "summary.json") if (out / name).exists()]
        if finished:
            raise UserError(
                f"--resume: {out} holds a finished run ({', '.join(finished)}) and no checkpoint to resume; "
                "pass --overwrite to train it again from the start"
            )
        return found
    fields = recipe_fields(recipe)
    if found.manifest.get("recipe_hash") != recipe_hash(fields) and not force:
        changes = recipe_diff(found.manifest.get("recipe", {}), fields)
        shown = "; ".join(changes[:5]) + (f"; and {len(changes) - 5} more" if len(changes) > 5 else "")
        raise UserError(
            f"{found.path} was made by a different recipe ({shown or 'recipe hash differs'}); "
            "resume with the recipe it was made with, or pass --force to resume anyway"
        )
    max_steps = recipe.training.max_steps
    if 0 < max_steps <= found.step:
        # transformers would train one step past max_steps from here (it checks the count after a step).
        raise UserError(
            f"--resume: {found.path} is at step {found.step}, the end of training.max_steps={max_steps}: this run "
            f"already trained every step (its weights are in {found.path}); to train further raise "
            "training.max_steps and pass --force"
        )
    return found


def describe(found: Found, max_steps: int) -> str:
    """One line: what `trainer.train(resume_from_checkpoint=...)` restores from this checkpoint."""
    assert found.path is not None
    names = sorted(found.manifest.get("files", {}))
    top = [n for n in names if "/" not in n and n != "training_args.bin"]
    shards = sorted({n.split("/")[0] for n in names if "/" in n})  # FSDP / DeepSpeed shard folders
    weights = [n for n in top if n.endswith((".safetensors", ".bin"))] or shards
    parts = [
        ("adapter" if any(n.startswith("adapter_model") for n in names) else "model") + f" ({', '.join(weights)})",
        "optimizer" if any("optim" in n for n in names) else "",
        "scheduler" if "scheduler.pt" in names else "",
        f"RNG ({sum(n.startswith('rng_state') for n in names)} process(es))",
        f"data position (step {found.step}, trainer_state.json)",
    ]
    total = f" of {max_steps}" if max_steps > 0 else ""
    return f"resuming from {found.path} (step {found.step}{total}): restored " + ", ".join(p for p in parts if p)


def trim_metrics(out: Path, step: int) -> None:
    """Drop metrics.jsonl records after `step`: the resumed run writes them again."""
    metrics = out / "metrics.jsonl"
    if not metrics.exists():
        return
    lines = metrics.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if _step_of_record(line) <= step]
    write_atomically(metrics, "".join(line + "\n" for line in kept))


def _step_of_record(line: str) -> float:
    """A metrics.jsonl record's step; a line cut short by a kill (no valid JSON) counts as past every step."""
    try:
        return json.loads(line).get("step", 0)
    except ValueError:
        return float("inf")


# ---- writing ---------------------------------------------------------------------------------


def finalize(staged: Path, root: Path, fields: dict[str, Any], world_size: int, keep: int) -> Path:
    """Seal a checkpoint written by the Trainer into `staged`, move it into `root`, rotate old ones.

    Main process only, after every process has written its part.
    """
    step = step_of(staged)
    files = {str(p.relative_to(staged)): p.stat().st_size for p in sorted(staged.rglob("*")) if p.is_file()}
    for name in files:  # on disk before the manifest that vouches for them (a crash of the machine)
        _fsync(staged / name)
    manifest = {
        "format": 1,
        "step": step,
        "recipe_hash": recipe_hash(fields),
        "recipe": fields,
        "world_size": world_size,
        "files": files,
    }
    (staged / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    _fsync(staged / MANIFEST)
    target = root / staged.name
    if target.exists():  # a broken leftover at this step from an interrupted attempt
        shutil.rmtree(target)
    os.replace(staged, target)
    _fsync(root)
    rotate(root, keep, newest=step or 0)
    return target


def rotate(root: Path, keep: int, newest: int) -> None:
    """Keep the `keep` newest checkpoints up to step `newest`; later ones belong to an abandoned attempt."""
    older = [p for p in checkpoint_dirs(root) if (step_of(p) or 0) <= newest]
    for path in older[: max(len(older) - keep, 0)]:
        shutil.rmtree(path, ignore_errors=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def clear_staging(out: Path) -> None:
    """Remove what an interrupted write left in `.partial/` (main process, before training)."""
    shutil.rmtree(out / "checkpoints" / STAGING, ignore_errors=True)


# ---- callbacks -------------------------------------------------------------------------------


class CheckpointWriter(TrainerCallback):
    """After the Trainer writes `.partial/checkpoint-N`: seal it and rename it into `checkpoints/`."""

    def __init__(self, recipe: Recipe, out: Path) -> None:
        self.root = out / "checkpoints"
        self.fields = recipe_fields(recipe)
        self.keep = recipe.training.save_total_limit
        self.saved: Path | None = None

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from tunekit.train.launch import wait_for_everyone

        wait_for_everyone()  # every rank has written its RNG state / shards
        staged = self.root / STAGING / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero:
            self.saved = finalize(staged, self.root, self.fields, args.world_size, self.keep)
        else:
            self.saved = self.root / staged.name
        wait_for_everyone()  # no rank runs ahead into a folder that is being renamed

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero:
            shutil.rmtree(self.root / STAGING, ignore_errors=True)  # trl's model card lands there too


class Stopped(Exception):
    """Training stopped on SIGINT / SIGTERM after saving a checkpoint; exit with 128 + the signal."""

    def __init__(self, signum: int, checkpoint: Path | None) -> None:
        self.signal, self.checkpoint = signal.Signals(signum).name, checkpoint
        super().__init__(self.describe())
        self.code = 128 + signum

    def describe(self, in_place: bool = True) -> str:
        """In place, how to resume; a run written beside the one it replaces is named by tunekit.folders."""
        if self.checkpoint is None:
            return f"stopped by {self.signal}: no checkpoint was saved"
        if not in_place:
            return f"stopped by {self.signal}: saved {self.checkpoint.name}"
        return f"stopped by {self.signal}: saved {self.checkpoint}; resume with --resume"


class StopOnSignal(TrainerCallback):
    """SIGINT / SIGTERM during training: finish the step, save a checkpoint, stop.

    With several processes the flag is combined across ranks every step (one tiny all-reduce), so all
    of them stop at the same step even when only one got the signal.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signum = signum

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.signum = None
        self.previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        signum = self._agreed(args)
        if signum:
            self.signum = signum
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}

    def _agreed(self, args: Any) -> int:
        if args.world_size <= 1:
            return self.signum or 0
        import torch
        import torch.distributed as dist

        flag = torch.tensor([self.signum or 0], device=args.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())


class ProcessSeed(TrainerCallback):
    """Each process its own seed (seed + rank) for dropout and sampling once training starts.

    Weights are initialised before this (identical on every rank), and the data order comes from
    accelerate's seedable sampler, whose generator is seeded separately; a resumed run then loads
    each rank's saved RNG state over this.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if args.world_size > 1:
            from transformers import set_seed

            set_seed(self.seed + args.process_index)

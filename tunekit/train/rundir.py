"""The run folder every training command writes (the README's "run folder" table is the contract).

    output_dir/
      recipe.yaml     the validated recipe as it ran, every default spelled out
      metrics.jsonl   one JSON object per logging step, with "step"
      summary.json    final figures
      final/          model or adapter + tokenizer + chat template
      checkpoints/

The rules for the folder (what it may be, the lock, --overwrite as a swap) are tunekit.folders'.
Pure Python: no torch.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunekit.config import Recipe, dump_recipe
from tunekit.errors import UserError
from tunekit.folders import RUN, Claim, claim, os_errors, planned_target, refuse_unsafe


@dataclass(frozen=True)
class RunOptions:
    """How the command line asked a training run to start: the one carrier of its run flags."""

    overwrite: bool = False  # replace a run in output_dir (written beside it, swapped in when it ends well)
    resume: bool = False  # continue from the newest complete checkpoint in output_dir/checkpoints
    force: bool = False  # resume from a checkpoint made by a different recipe
    num_processes: int | None = None  # run under `accelerate launch` with this many processes
    accelerate_config: str | None = None  # packaged config name or path (tunekit.train.launch)
    overwrite_any: bool = False  # --overwrite even a folder that holds files tunekit did not write

    @property
    def replaces(self) -> bool:
        """The run is written beside output_dir and swapped in (tunekit.folders.Claim)."""
        return self.overwrite or self.overwrite_any


def protected_paths(recipe: Recipe) -> list[tuple[str, Path]]:
    """What a run reads from disk, which its output_dir must neither be nor hold: the model (and an
    adapter's base), the data files, a DPO reference and a reward model."""
    from tunekit.config.schema import DPORecipe, GRPORecipe, PPORecipe
    from tunekit.data.sources import local_source
    from tunekit.models.refs import resolve

    models = {"model.name_or_path": recipe.model.name_or_path}
    if isinstance(recipe, DPORecipe) and recipe.dpo.reference:
        models["dpo.reference"] = recipe.dpo.reference
    if isinstance(recipe, (PPORecipe, GRPORecipe)):
        rewards = recipe.ppo if isinstance(recipe, PPORecipe) else recipe.grpo
        if rewards.reward_model:
            models[f"{recipe.method}.reward_model"] = rewards.reward_model
    found: list[tuple[str, Path]] = []
    for key, name in models.items():
        if not Path(name).expanduser().exists():
            continue  # a Hub id or tiny:ARCH: nothing of the user's on disk
        found.append((f"the folder of {key}", Path(name).expanduser()))
        try:
            ref = resolve(name)
        except UserError:
            continue  # loading it explains; the folder itself is protected
        if ref.adapter is not None and ref.base.kind != "hub":
            found.append((f"the base model of the adapter in {key}", Path(ref.base.path)))
    for key, source in (("data.train", recipe.data.train), ("data.eval", recipe.data.eval)):
        path = local_source(source) if source else None
        if path is not None:
            found.append((key, path))
    return found


def claim_run_dir(recipe: Recipe, options: RunOptions) -> Claim:
    """Check output_dir by every rule of tunekit.folders and lock it; nothing else is written. Rank 0."""
    return claim(
        recipe.output_dir,
        "output_dir",
        RUN,
        overwrite=options.overwrite,
        overwrite_any=options.overwrite_any,
        resume=options.resume,
        protected=protected_paths(recipe),
    )


def check_output_dir(recipe: Recipe) -> None:
    """The rules on output_dir that no flag lifts (`tunekit validate`); writes nothing."""
    refuse_unsafe(recipe.output_dir, "output_dir", protected_paths(recipe))


def run_target(recipe: Recipe, options: RunOptions) -> Path:
    """Where the run is written: output_dir, or beside it with --overwrite (the same in every process)."""
    return planned_target(recipe.output_dir, options.replaces)


def prepare_run_dir(out: Path, recipe: Recipe) -> Path:
    """Create the folder the run writes (Claim.prepare made it) with checkpoints/ and recipe.yaml. Rank 0;
    the other ranks wait (tunekit.train.launch.wait_for_everyone)."""
    with os_errors(out, "cannot write the run folder"):
        out.mkdir(parents=True, exist_ok=True)
        (out / "checkpoints").mkdir(exist_ok=True)
        (out / "recipe.yaml").write_text(dump_recipe(recipe), encoding="utf-8")
    return out


def where(out: Path, dest: Path) -> str:
    """The run folder for the plan line; with --overwrite also where it is written until it ends well."""
    if out == dest:
        return str(dest)
    return f"{dest} (written to {out}, swapped in when the run ends well)"


def append_metrics(out: Path, record: dict[str, Any]) -> None:
    with (out / "metrics.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(finite(record)) + "\n")


def write_atomically(path: Path, text: str) -> None:
    """Write `path` under a temporary name, then rename it: a kill leaves the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def finite(record: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN/inf: write them as null rather than produce a file other tools reject."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}

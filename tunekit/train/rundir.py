"""The run folder every training command writes (the README's "run folder" table is the contract).

    output_dir/
      recipe.yaml     the validated recipe as it ran, every default spelled out
      metrics.jsonl   one JSON object per logging step, with "step"
      summary.json    final figures
      final/          model or adapter + tokenizer + chat template
      checkpoints/

Pure Python: no torch.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunekit.config import Recipe, dump_recipe
from tunekit.errors import UserError


@dataclass(frozen=True)
class RunOptions:
    """How the command line asked a training run to start: the one carrier of its run flags."""

    overwrite: bool = False  # replace a non-empty output_dir
    resume: bool = False  # continue from the newest complete checkpoint in output_dir/checkpoints
    force: bool = False  # resume from a checkpoint made by a different recipe
    num_processes: int | None = None  # run under `accelerate launch` with this many processes
    accelerate_config: str | None = None  # packaged config name or path (tunekit.train.launch)


def check_run_dir(recipe: Recipe, overwrite: bool, resume: bool = False) -> Path:
    """Refuse an existing, non-empty `output_dir` unless `overwrite` or `resume`; call it before slow work."""
    out = Path(recipe.output_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"output_dir {out} exists and is a file")
    if overwrite and resume:
        raise UserError("--overwrite replaces output_dir and --resume continues it: pass one of them")
    if out.exists() and any(out.iterdir()) and not (overwrite or resume):
        raise UserError(
            f"output_dir {out} already exists and is not empty; pass --resume to continue it, --overwrite "
            "to replace it, or choose another with output_dir=runs/NAME"
        )
    return out


def prepare_run_dir(recipe: Recipe, overwrite: bool, resume: bool = False) -> Path:
    """Create `output_dir` (emptied first with `overwrite`, kept with `resume`) and write recipe.yaml.

    Main process only; the others wait (tunekit.train.launch.wait_for_everyone).
    """
    out = check_run_dir(recipe, overwrite, resume)
    if out.exists() and not resume:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(exist_ok=True)
    (out / "recipe.yaml").write_text(dump_recipe(recipe), encoding="utf-8")
    return out


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

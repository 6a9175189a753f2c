"""summary.json: one builder for every method, PPO included, and the lines a run ends with.

    >>> from tunekit.config import load_recipe
    >>> from tunekit.data import Data
    >>> trained = Trained(steps=3, runtime=1.0, train_loss=2.5, total_parameters=10, trainable_parameters=4)
    >>> summary = build_summary(load_recipe("recipes/quickstart.yaml"), Data(None, None, "messages", "messages", ""),
    ...                         trained)
    >>> summary["method"], summary["steps"], summary["train_loss"]
    ('sft', 3, 2.5)

Every summary has the keys the README's run-folder table promises (`method`, `adapter`,
`total_parameters`, `trainable_parameters`, `steps`, `runtime_seconds`, `train_loss`),
`<figure>_before` / `<figure>_after` for each held-out figure the method measured, the method's own
figures, and `environment` (tunekit.doctor.environment).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunekit.config import Recipe
from tunekit.data import Data
from tunekit.train.rundir import finite, write_atomically

SUMMARY_KEYS = (
    "method",
    "adapter",
    "total_parameters",
    "trainable_parameters",
    "steps",
    "runtime_seconds",
    "train_loss",
)


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    """summary.json, with what the run ran on (tunekit.doctor.environment) under `environment`."""
    from tunekit.doctor import environment

    missing = [key for key in SUMMARY_KEYS if key not in summary]
    if missing:
        raise AssertionError(f"summary.json lacks {missing}")  # a bug of ours, not the user's
    summary = {**summary, "environment": environment()}
    write_atomically(out / "summary.json", json.dumps(finite(summary), indent=2) + "\n")


@dataclass
class Trained:
    """What the train stage hands the report stage."""

    steps: int
    runtime: float  # seconds of training, the first evaluation excluded
    train_loss: float  # mean over the steps this run trained (after a resume: since it)
    total_parameters: int
    trainable_parameters: int
    before: dict[str, float] = field(default_factory=dict)  # held-out figures before training (summary names)
    after: dict[str, float] = field(default_factory=dict)
    eval_examples: int = 0
    tokens: int = 0  # input tokens trained on (0: the trainer does not count them)
    figures: dict[str, Any] = field(default_factory=dict)  # the method's own summary keys
    final: Path | None = None
    closing: str = ""  # what the closing line says in place of the train loss (PPO: reward and KL)
    samples: list[tuple[dict, dict]] = field(default_factory=list)  # (before, after) answers (train.samples)


def build_summary(recipe: Recipe, data: Data, trained: Trained) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "method": recipe.method,
        "adapter": recipe.adapter.type,
        "model": recipe.model.name_or_path,
        "data_format": data.format,
        "total_parameters": trained.total_parameters,
        "trainable_parameters": trained.trainable_parameters,
        "steps": trained.steps,
        "runtime_seconds": round(trained.runtime, 3),
        "train_loss": trained.train_loss,
    }
    if trained.tokens:  # trainers whose batches carry no `input_ids` (ORPO, CPO) are not counted
        summary.update(train_tokens=trained.tokens, train_tokens_per_second=round(trained.tokens / trained.runtime, 2))
    if trained.after:
        summary["eval_examples"] = trained.eval_examples
        for name, value in trained.after.items():
            summary[f"{name}_before"] = trained.before.get(name)
            summary[f"{name}_after"] = value
    # The rows each source gave to training (after the eval hold-out and any cut); None: a stream.
    summary["data_sources"] = [{"source": s.name, "rows": s.rows} for s in data.sources]
    summary.update(trained.figures)
    return summary


def print_result(summary: dict[str, Any], trained: Trained, echo: Callable[[str], None]) -> None:
    from tunekit.train.callbacks import figures_line

    speed = f", {summary['train_tokens_per_second']:,.0f} tokens/s" if "train_tokens_per_second" in summary else ""
    figures = trained.closing or f"train loss {trained.train_loss:.4f}"
    echo(f"done in {trained.runtime:.1f}s: {trained.steps} steps, {figures}{speed}")
    if trained.after:
        echo("after training: " + figures_line(trained.after))
    if trained.final is not None:
        echo(f"saved {trained.final}")
    if trained.samples:  # last, so a run ends by showing what the model learned
        from tunekit.train.samples import block

        echo(block(trained.samples))

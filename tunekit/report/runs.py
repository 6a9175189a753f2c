"""Run folders as tunekit writes them, read back: summary, recipe, metrics, samples; and the one-line table.

    >>> folder = RunFolder(Path("runs/a"), {"method": "sft", "adapter": "lora", "steps": 300,
    ...     "runtime_seconds": 21.5, "eval_loss_before": 6.93, "eval_loss_after": 4.21}, {}, [], [])
    >>> folder.before_after()
    {'eval_loss': (6.93, 4.21)}
    >>> runs_table([folder]).splitlines()[1]
    'a    sft     lora       300  eval_loss 6.9300 -> 4.2100  21.5s'

Pure Python (no torch): `tunekit runs` and `tunekit report` read what the run folder contract promises
(recipe.yaml, metrics.jsonl, summary.json, samples.jsonl) and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunekit.errors import UserError

SKIPPED = ("final", "checkpoints", "tensorboard", "wandb", "adapter_init")  # folders inside a run, not runs


@dataclass
class RunFolder:
    path: Path
    summary: dict[str, Any] | None  # None: the run has not finished (or failed)
    recipe: dict[str, Any]  # recipe.yaml as written, every default spelled out
    metrics: list[dict[str, Any]]  # metrics.jsonl records, each with `step`
    samples: list[dict[str, Any]]  # samples.jsonl rows

    @property
    def name(self) -> str:
        return self.path.name

    def before_after(self) -> dict[str, tuple[float | None, float]]:
        """Held-out figure -> (before, after), from summary.json's `<figure>_before` / `<figure>_after`."""
        summary = self.summary or {}
        return {
            key.removesuffix("_after"): (summary.get(key.removesuffix("_after") + "_before"), value)
            for key, value in summary.items()
            if key.endswith("_after") and isinstance(value, (int, float))
        }

    def series(self) -> dict[str, list[tuple[int, float]]]:
        """Every numeric figure of metrics.jsonl as (step, value) points, in the order logged."""
        found: dict[str, list[tuple[int, float]]] = {}
        for record in self.metrics:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    found.setdefault(key, []).append((int(record["step"]), float(value)))
        return found


def is_run(path: Path) -> bool:
    return (path / "recipe.yaml").is_file() or (path / "summary.json").is_file()


def read_run(path: Path) -> RunFolder:
    """A run folder; a UserError names a folder that is not one, or a file that cannot be read."""
    import yaml

    if not path.is_dir():
        raise UserError(f"{path}: not a folder")
    if not is_run(path):
        raise UserError(f"{path}: not a run folder (no recipe.yaml or summary.json)")
    summary = _json(path / "summary.json") if (path / "summary.json").is_file() else None
    recipe_file = path / "recipe.yaml"
    recipe = yaml.safe_load(recipe_file.read_text(encoding="utf-8")) if recipe_file.is_file() else {}
    return RunFolder(path, summary, recipe or {}, _jsonl(path / "metrics.jsonl"), _jsonl(path / "samples.jsonl"))


def find_runs(folder: Path, depth: int = 3) -> list[RunFolder]:
    """The run folders in `folder` (itself, when it is one), up to `depth` levels down, sorted by path."""
    if not folder.is_dir():
        raise UserError(f"{folder}: not a folder")
    if is_run(folder):
        return [read_run(folder)]
    found: list[RunFolder] = []
    if depth > 0:
        for child in sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in SKIPPED):
            found += find_runs(child, depth - 1) if not is_run(child) else [read_run(child)]
    return found


def runs_table(runs: list[RunFolder]) -> str:
    """One line per run: name, method, adapter, steps, held-out figures before -> after, training time."""
    header = ["run", "method", "adapter", "steps", "eval figures", "time"]
    rows = [header]
    for run in runs:
        s = run.summary or {}
        figures = "  ".join(
            f"{name} {_number(before)} -> {_number(after)}" for name, (before, after) in run.before_after().items()
        )
        recipe_method = run.recipe.get("method", "?")
        recipe_adapter = (run.recipe.get("adapter") or {}).get("type", "?")
        time = f"{s['runtime_seconds']:.1f}s" if "runtime_seconds" in s else "unfinished"
        rows.append(
            [
                run.name,
                str(s.get("method", recipe_method)),
                str(s.get("adapter", recipe_adapter)),
                str(s.get("steps", _last_step(run))),
                figures or "-",
                time,
            ]
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    right = {3}  # steps
    return "\n".join(
        "  ".join(cell.rjust(widths[i]) if i in right else cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in rows
    )


def _last_step(run: RunFolder) -> str:
    steps = [int(r["step"]) for r in run.metrics if "step" in r]
    return str(max(steps)) if steps else "0"


def _number(value: float | None) -> str:
    return "?" if value is None else f"{value:.4f}"


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise UserError(f"{path}, line {number}: not valid JSON") from None
    return rows

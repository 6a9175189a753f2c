"""`tunekit preprocess RECIPE [key.sub=value ...]`: check and tokenise a recipe's data ahead of training.

    $ tunekit preprocess recipes/quickstart.yaml        # e.g. on a CPU node, before the GPU job
    $ tunekit sft recipes/quickstart.yaml               # then reaches its first step without tokenising

Runs the preflight stage of a training run (tunekit.train.pipeline) without touching the run folder:
every source read into Arrow, every row checked, and for methods that tokenise in tunekit (sft, classify,
pretrain, encoder-decoder sft) the tokens built, all into the data cache (tunekit.data.cache). It prints
what it built and where; run it again and it says everything came from the cache.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from tunekit.cli.train import OVERRIDES, RECIPE

# Methods whose tokens trl's trainer makes itself (from the checked rows, cached by `datasets` beside them).
TRL_TOKENISES = ("dpo", "reward", "orpo", "kto", "simpo", "grpo", "ppo")


def register(app: typer.Typer) -> None:
    @app.command()
    def preprocess(recipe: Path = RECIPE, overrides: list[str] | None = OVERRIDES) -> None:
        """Check and tokenise a recipe's data into the cache, so training starts at once (run folder untouched)."""
        from tunekit.config import load_recipe
        from tunekit.data.cache import data_root
        from tunekit.train import pipeline
        from tunekit.train.rundir import RunOptions

        loaded = load_recipe(recipe, overrides)
        earlier = len(_builds(data_root(loaded.data.cache)))
        started = time.perf_counter()
        plan = pipeline.preflight(loaded, RunOptions(), run_folder=False)
        seconds = time.perf_counter() - started
        data, root = plan.data, data_root(loaded.data.cache)
        rows = "streamed" if data.streaming else f"{data.train_rows:,}"
        typer.echo(f"data: {data.names}: {rows} train rows, {data.eval_rows:,} eval rows ({data.format})")
        built = _builds(root)[earlier:]
        if built:
            typer.echo(f"cache: built {len(built)} step(s) in {seconds:.1f}s into {root}")
            for entry in built:
                typer.echo(f"  {entry['step']}: {entry['rows']:,} rows in {entry['seconds']:.1f}s")
        else:
            typer.echo(f"cache: everything came from {root} ({seconds:.1f}s)")
        if loaded.method in TRL_TOKENISES:
            typer.echo(f"note: `tunekit {loaded.method}` tokenises in trl's trainer; the checked rows are cached")
        if data.streaming:
            typer.echo("note: a stream is read, checked and tokenised as it trains; nothing to build ahead")


def _builds(root: Path) -> list[dict]:
    log = root / "builds.jsonl"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]

"""Training commands: `tunekit sft|dpo|reward|orpo|kto|simpo|ppo|grpo RECIPE [key.sub=value ...]`.

    $ tunekit sft recipes/tiny/sft-lora.yaml training.max_steps=20 output_dir=runs/try --overwrite
    $ tunekit dpo recipes/tiny/dpo.yaml

Each command loads and validates the recipe, checks it is meant for this command, and runs
`tunekit.methods.<name>.run`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import typer

from tunekit.errors import UserError

RECIPE = typer.Argument(..., help="Recipe YAML file (see `tunekit recipes list`).", show_default=False)
OVERRIDES = typer.Argument(None, help="Overrides such as training.max_steps=50 adapter.type=lora.", show_default=False)
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an existing, non-empty output_dir.")

METHODS = {
    "sft": "Supervised fine-tuning of a decoder-only model: full, LoRA or QLoRA.",
    "dpo": "Direct Preference Optimisation on prompt/chosen/rejected pairs.",
    "reward": "Train a reward model (one score per sequence) on preference pairs.",
    "orpo": "ORPO: SFT and preference alignment in one step, no reference model (experimental in trl).",
    "kto": "KTO on unpaired desirable/undesirable completions (or pairs, unpaired on the fly).",
    "simpo": "SimPO: length-normalised, reference-free preference optimisation (trl's CPO, experimental).",
    "ppo": "PPO (RLHF): sample, score with a reward model or function, optimise with a KL penalty.",
    "grpo": "GRPO (trl): critic-free RL, rewards compared within groups of completions per prompt.",
}


def _command(method: str) -> Callable[..., None]:
    def train(recipe: Path = RECIPE, overrides: list[str] | None = OVERRIDES, overwrite: bool = OVERWRITE) -> None:
        from tunekit.config import load_recipe

        loaded = load_recipe(recipe, overrides)
        if loaded.method != method:
            raise UserError(f"{recipe} is a recipe for `tunekit {loaded.method}`, not `tunekit {method}`")
        from tunekit.run import RunOptions

        module = importlib.import_module(f"tunekit.methods.{method}")
        module.run(loaded, RunOptions(overwrite=overwrite), report=typer.echo)

    return train


def register(app: typer.Typer) -> None:
    for method, summary in METHODS.items():
        app.command(name=method, help=summary)(_command(method))

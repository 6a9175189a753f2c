"""Training commands: `tunekit sft RECIPE [key.sub=value ...]`.

    $ tunekit sft recipes/tiny/sft-lora.yaml training.max_steps=20 output_dir=runs/try --overwrite
"""

from __future__ import annotations

from pathlib import Path

import typer

from tunekit.errors import UserError

RECIPE = typer.Argument(..., help="Recipe YAML file (see `tunekit recipes list`).", show_default=False)
OVERRIDES = typer.Argument(None, help="Overrides such as training.max_steps=50 adapter.type=lora.", show_default=False)
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an existing, non-empty output_dir.")


def register(app: typer.Typer) -> None:
    @app.command()
    def sft(recipe: Path = RECIPE, overrides: list[str] | None = OVERRIDES, overwrite: bool = OVERWRITE) -> None:
        """Supervised fine-tuning of a decoder-only model: full, LoRA or QLoRA."""
        from tunekit.config import load_recipe

        loaded = load_recipe(recipe, overrides)
        _check_method(loaded.method, "sft", recipe)
        from tunekit.methods import sft as method

        method.run(loaded, overwrite=overwrite, report=typer.echo)


def _check_method(method: str, command: str, path: Path) -> None:
    if method != command:
        raise UserError(f"{path} is a recipe for `tunekit {method}`, not `tunekit {command}`")

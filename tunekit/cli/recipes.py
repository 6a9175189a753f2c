"""`tunekit recipes list|show NAME|copy NAME DEST`: the recipes shipped with tunekit.

$ tunekit recipes copy tiny/sft-lora my-recipe.yaml
"""

from __future__ import annotations

from pathlib import Path

import typer

from tunekit.config.recipes import find_recipe, list_recipes

NAME = typer.Argument(..., help="Recipe name as `tunekit recipes list` shows it.", show_default=False)

recipes_app = typer.Typer(help="List, show and copy the recipes shipped with tunekit.", no_args_is_help=True)


@recipes_app.command("list")
def list_() -> None:
    """List shipped recipes with their descriptions."""
    recipes = list_recipes()
    width = max(len(r.name) for r in recipes)
    for recipe in recipes:
        typer.echo(f"{recipe.name:<{width}}  {recipe.description}")


@recipes_app.command()
def show(name: str = NAME) -> None:
    """Print a recipe."""
    typer.echo(find_recipe(name).path.read_text(encoding="utf-8"), nl=False)


@recipes_app.command()
def copy(
    name: str = NAME,
    dest: Path = typer.Argument(..., help="File or folder to copy to.", show_default=False),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing recipe file."),
    overwrite_any: bool = typer.Option(
        False, "--overwrite-any", help="--overwrite even a file that is not a recipe (a YAML mapping with method)."
    ),
) -> None:
    """Copy a recipe to edit it."""
    from tunekit.folders import write_file

    recipe = find_recipe(name)
    target = dest / recipe.path.name if dest.is_dir() else dest
    text = recipe.path.read_text(encoding="utf-8")
    write_file(target, text, "DEST", ("a recipe", _is_recipe), overwrite, overwrite_any)
    typer.echo(f"copied {recipe.name} to {target}")


def _is_recipe(path: Path) -> bool:
    """A YAML mapping with a `method`: what `recipes copy --overwrite` may replace."""
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(loaded, dict) and "method" in loaded


def register(app: typer.Typer) -> None:
    app.add_typer(recipes_app, name="recipes")

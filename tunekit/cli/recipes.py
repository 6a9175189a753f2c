"""`tunekit recipes list|show NAME|copy NAME DEST`: the recipes shipped with tunekit.

$ tunekit recipes copy tiny/sft-lora my-recipe.yaml
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer

from tunekit.config.recipes import find_recipe, list_recipes
from tunekit.errors import UserError

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
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing file."),
) -> None:
    """Copy a recipe to edit it."""
    recipe = find_recipe(name)
    target = dest / recipe.path.name if dest.is_dir() else dest
    if target.exists() and not overwrite:
        raise UserError(f"{target} already exists; pass --overwrite to replace it")
    if not target.parent.exists():
        raise UserError(f"folder {target.parent} does not exist")
    shutil.copyfile(recipe.path, target)
    typer.echo(f"copied {recipe.name} to {target}")


def register(app: typer.Typer) -> None:
    app.add_typer(recipes_app, name="recipes")

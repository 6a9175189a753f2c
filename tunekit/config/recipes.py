"""Recipes shipped with tunekit, discovered from the files (no registry to keep in sync).

    >>> "quickstart" in [r.name for r in list_recipes()]
    True

In a wheel they live in `tunekit/_recipes/`; in a source checkout, in `recipes/` at the top.
Each file opens with `# tunekit <command> recipes/NAME.yaml` and a one-line description.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from tunekit.errors import UserError


@dataclass(frozen=True)
class RecipeFile:
    name: str  # path below the recipes folder, without .yaml: "quickstart", "tiny/sft-lora"
    path: Path
    description: str


def recipes_root() -> Path:
    packaged = Path(__file__).parents[1] / "_recipes"  # tunekit/_recipes in a wheel
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "recipes"


def list_recipes() -> list[RecipeFile]:
    root = recipes_root()
    return [
        RecipeFile(path.relative_to(root).with_suffix("").as_posix(), path, _description(path))
        for path in sorted(root.rglob("*.yaml"))
    ]


def find_recipe(name: str) -> RecipeFile:
    name = name.removesuffix(".yaml").removeprefix("recipes/")
    recipes = list_recipes()
    for recipe in recipes:
        if recipe.name == name:
            return recipe
    close = difflib.get_close_matches(name, [r.name for r in recipes], n=3, cutoff=0.4)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see `tunekit recipes list`"
    raise UserError(f"no recipe named {name!r}{hint}")


def _description(path: Path) -> str:
    comments = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        comments.append(line.lstrip("# ").strip())
    return comments[1] if len(comments) > 1 else ""

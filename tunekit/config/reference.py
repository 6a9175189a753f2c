"""The recipe reference in README.md, generated from the schema so the two cannot drift.

$ python -m tunekit.config.reference   # prints the Markdown block README.md embeds
"""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from tunekit.config.schema import RECIPES, SECTIONS, RecipeBase
from tunekit.config.sections import Source

BEGIN, END = "<!-- recipe-reference:begin -->", "<!-- recipe-reference:end -->"


def _type(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " \\| ".join(str(v) for v in typing.get_args(annotation))
    if typing.get_origin(annotation) is list:
        return f"list of ({_type(typing.get_args(annotation)[0])})"
    args = typing.get_args(annotation)
    if args:
        return " or ".join(_type(a) for a in args if a is not type(None)) + (" or null" if type(None) in args else "")
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.default is PydanticUndefined and field.default_factory is None:
        return "**required**"
    if field.default is None:
        return "`null`"
    return f"`{str(field.default).lower()}`" if isinstance(field.default, bool) else f"`{field.default}`"


def _rows(prefix: str, model: type[BaseModel], skip: tuple[str, ...] = ()) -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        if name in skip or (prefix == "" and name in SECTIONS):
            continue
        rows.append(f"| `{prefix}{name}` | {_type(field.annotation)} | {_default(field)} | {field.description} |")
    return rows


def _data_rows() -> list[str]:
    """`data`'s keys: the shared ones, then each method's own, with the methods that take it."""
    shared = SECTIONS["data"]
    rows = _rows("data.", shared) + _rows("data.train[].", Source)
    seen: dict[tuple[str, str], list[str]] = {}
    for method, recipe in RECIPES.items():
        data = recipe.model_fields["data"].annotation
        for name, field in data.model_fields.items():  # type: ignore[union-attr]
            if name not in shared.model_fields:
                seen.setdefault((name, str(field.description)), []).append(method)
    for (name, description), methods in seen.items():
        field = next(
            recipe.model_fields["data"].annotation.model_fields[name]  # type: ignore[union-attr]
            for method, recipe in RECIPES.items()
            if method in methods
        )
        rows.append(
            f"| `data.{name}` ({', '.join(methods)}) | {_type(field.annotation)} | {_default(field)} | {description} |"
        )
    return rows


def reference() -> str:
    lines = [BEGIN, "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    lines += _rows("", RecipeBase)
    for section, model in SECTIONS.items():
        lines += _data_rows() if section == "data" else _rows(f"{section}.", model)
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference())

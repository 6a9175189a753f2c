"""Read a recipe: YAML -> overrides -> one validation -> `Recipe`, with errors a user can act on.

    >>> recipe = load_recipe("recipes/quickstart.yaml", ["training.max_steps=50"])  # doctest: +SKIP

Every error names the key path (and the YAML line when the key is in the file), and suggests the
closest valid key or lists the allowed values. Overrides go through exactly the same validation as
the file.
"""

from __future__ import annotations

import difflib
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tunekit.config.schema import METHOD_SECTIONS, METHODS, NOT_FOR, RECIPES, Recipe, RecipeBase, parse_recipe
from tunekit.errors import RecipeError, read_utf8


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    raw, lines = read_yaml(path)
    for override in overrides or []:
        key = apply_override(raw, override)
        lines[key] = "override"
    return validate(raw, source=str(path), lines=lines)


Lines = dict[tuple[str, ...], "int | str"]  # key path -> 1-based line in the file, or "override"


def read_yaml(path: Path) -> tuple[dict[str, Any], Lines]:
    """The mapping in `path` and the line (1-based) of every key path in it."""
    if not path.exists():
        raise RecipeError(f"recipe not found: {path}")
    if path.is_dir():
        raise RecipeError(f"recipe is a folder, not a YAML file: {path}")
    text = read_utf8(path, RecipeError)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise RecipeError(f"{path}{where}: malformed YAML: {problem}") from None
    if data is None:
        raise RecipeError(f"{path}: the recipe is empty")
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    return data, _key_lines(node, path)


def _key_lines(node: yaml.Node | None, path: Path, prefix: tuple[str, ...] = ()) -> Lines:
    """The line of every key path; a key given twice in one mapping (YAML keeps the last silently) is an error."""
    lines: Lines = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*prefix, str(key_node.value))
            line = key_node.start_mark.line + 1
            if key in lines:
                raise RecipeError(
                    f"{path}, line {line}: {'.'.join(key)} is set twice (lines {lines[key]} and {line}); keep one"
                )
            lines[key] = line
            lines.update(_key_lines(value_node, path, key))
    return lines


def apply_override(raw: dict[str, Any], override: str) -> tuple[str, ...]:
    """Apply `key.sub=value` to the raw mapping; the value is parsed as YAML (`50`, `true`, `[q, v]`).

    Returns the key path it set.
    """
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"override {override!r}: expected KEY.SUB=VALUE, e.g. training.max_steps=50")
    parts = key.strip().split(".")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    _check_override_path(parts, override, raw.get("method"))
    target = raw
    for part in parts[:-1]:
        child = target.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"override {override!r}: {part} is not a section")
        target = child
    target[parts[-1]] = value
    return tuple(parts)


def _check_override_path(parts: list[str], override: str, method: object) -> None:
    model: type[BaseModel] | None = _recipe_class(method)
    for depth, part in enumerate(parts):
        if model is None:
            path = ".".join(parts[:depth])
            raise RecipeError(f"override {override!r}: {path} is a value, not a section")
        if part not in model.model_fields:
            loc = tuple(parts[: depth + 1])
            instead = NOT_FOR.get(loc[-2:], {}).get(str(method)) if len(loc) >= 2 else None
            if instead:
                raise RecipeError(
                    f"override {override!r}: {'.'.join(loc)}: not a setting of `tunekit {method}` ({instead})"
                )
            hint = _did_you_mean(part, list(model.model_fields))
            raise RecipeError(f"override {override!r}: unknown key {'.'.join(loc)}{hint}")
        model = _section_model(model.model_fields[part].annotation)


def _recipe_class(method: object) -> type[BaseModel]:
    """The recipe model of `method`; the shared sections when the method is not (yet) a valid one."""
    return RECIPES.get(method, RecipeBase) if isinstance(method, str) else RecipeBase


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The section model behind `Section` or `Section | None`; None for plain values."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def validate(raw: dict[str, Any], source: str = "recipe", lines: Lines | None = None) -> Recipe:
    try:
        return parse_recipe(raw)
    except ValidationError as err:
        method = raw.get("method")
        problems = [_describe(e, lines or {}, method) for e in err.errors()]
        if len(problems) == 1:
            raise RecipeError(f"{source}: {problems[0]}") from None
        listed = "\n".join(f"  - {p}" for p in problems)
        raise RecipeError(f"{source}: {len(problems)} problems\n{listed}") from None


def _describe(error: dict[str, Any], lines: Lines, method: object) -> str:
    kind = error["type"]
    if kind == "union_tag_not_found":
        return f"missing required key method (one of: {', '.join(METHODS)})"
    if kind == "union_tag_invalid":
        return f"method: {method!r} is not one of: {', '.join(METHODS)}{_did_you_mean(str(method), list(METHODS))}"
    loc = tuple(str(part) for part in error["loc"])[1:]  # the first part is the union's tag, the method
    path = ".".join(loc) or "recipe"
    line = _nearest_line(loc, lines)
    at = "" if line is None else (" (from an override)" if line == "override" else f" (line {line})")
    if kind == "extra_forbidden":
        return _unknown_key(loc, at, method)
    if kind == "missing":
        return f"missing required key {path}{_needed_section(loc, method)}"
    if kind == "literal_error":
        allowed = _allowed_values(loc, method)
        given = error.get("input")
        hint = _did_you_mean(str(given), allowed) if allowed else ""
        return f"{path}{at}: {given!r} is not one of: {', '.join(allowed)}{hint}"
    if kind == "value_error":
        message = error["msg"].removeprefix("Value error, ")
        return f"{path}{at}: {message}" if loc else message
    return f"{path}{at}: {error['msg'].lower()}, got {error.get('input')!r}"


def _unknown_key(loc: tuple[str, ...], at: str, method: object) -> str:
    path = ".".join(loc)
    if len(loc) == 1 and loc[0] in METHOD_SECTIONS:
        return f"{path}{at}: this section is for `method: {loc[0]}`, but the recipe's method is {method}"
    instead = NOT_FOR.get(loc[-2:], {}).get(str(method)) if len(loc) >= 2 else None
    if instead:
        return f"{path}{at}: not a setting of `tunekit {method}` ({instead})"
    return f"unknown key {path}{at}{_did_you_mean(loc[-1], _siblings(loc[:-1], method))}"


def _needed_section(loc: tuple[str, ...], method: object) -> str:
    if len(loc) == 1 and loc[0] in METHOD_SECTIONS and loc[0] == method:
        return f": `tunekit {method}` needs a {method} section (set exactly one of reward_model and reward_function)"
    return ""


def _nearest_line(loc: tuple[str, ...], lines: Lines) -> int | str | None:
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _model_at(loc: tuple[str, ...], method: object) -> type[BaseModel] | None:
    model: type[BaseModel] | None = _recipe_class(method)
    for part in loc:
        if model is None or part not in model.model_fields:
            return None
        model = _section_model(model.model_fields[part].annotation)
    return model


def _siblings(loc: tuple[str, ...], method: object) -> list[str]:
    model = _model_at(loc, method)
    return list(model.model_fields) if model else []


def _allowed_values(loc: tuple[str, ...], method: object) -> list[str]:
    loc = tuple(part for part in loc if not part.isdigit())  # list items: dpo.loss_type.0 -> dpo.loss_type
    parent = _model_at(loc[:-1], method)
    if parent is None or loc[-1] not in parent.model_fields:
        return []
    return _literals(parent.model_fields[loc[-1]].annotation)


def _literals(annotation: Any) -> list[str]:
    if typing.get_origin(annotation) is typing.Literal:
        return [str(v) for v in typing.get_args(annotation)]
    return [value for arg in typing.get_args(annotation) for value in _literals(arg)]


def _did_you_mean(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def dump_recipe(recipe: Recipe) -> str:
    """The validated recipe as YAML, every default spelled out, in schema order."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
